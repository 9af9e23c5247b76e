"""Coordinate-conversion matrices from an orientation or an exposure table.

A CCM ``C[t, l, ν]`` (seconds) is the time during bin ``t`` that the galactic model pixel
``l`` is seen in the spacecraft-frame pixel ``ν``: for every orientation interval (or
ScAtt pointing) of bin ``t`` with weight ``w`` (duration or live time) and attitude
``M``, the direction ``Mᵀ d_l`` of the pixel centre ``d_l`` is spread over the four
nearest ``NuLambda`` pixels with bilinear HEALPix weights, times ``w`` (cosipy's
dwell-time map).  With ``earth_occ`` a pointing contributes nothing to the model pixels
below the Earth limb at its start.

Everything is vectorised over (pointing, model pixel) pairs in chunks, so no Python loop
runs per pixel; the cost is one rotation and one interpolation per pair.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import astropy.units as u
import healpy as hp
import numpy as np
import sparse
from astropy.time import Time
from histpy import Axes, Axis, HealpixAxis, Histogram

from probdeconv.errors import DataError, ParameterError

from . import dwell
from . import geometry as geo
from .exposure_table import SpacecraftAttitudeExposureTable, table_scheme
from .orientation import SpacecraftFile

__all__ = ["time_binning_ccm", "spacecraft_attitude_binning_ccm", "ccm_contents",
           "visible_time_per_bin"]

logger = logging.getLogger(__name__)

MAX_PAIRS = 1 << 21  # (pointing, model pixel) pairs per chunk: ~300 MB of temporaries


def _model_axis(nside_model: int, scheme: str) -> HealpixAxis:
    try:
        nside_model = int(nside_model)
    except (TypeError, ValueError) as err:
        raise ParameterError(f"nside_model={nside_model!r} is not an integer") from err
    if not hp.isnsideok(nside_model, nest=scheme == "nested"):
        raise ParameterError(f"nside_model={nside_model} is not a valid HEALPix NSIDE for the "
                             f"{scheme} scheme (use a power of 2)")
    return HealpixAxis(nside=nside_model, scheme=scheme, label="lb", coordsys="galactic")


class _BinAccumulator:
    """Sums ``(model pixel, local pixel)`` weights bin after bin (rows sorted by bin).

    A bin with many rows is summed into a dense ``P × Nl`` buffer; a bin with few rows by
    sorting its keys.  Each bin is emitted once, so the output is sorted and unique.
    """

    def __init__(self, n_model: int, n_local: int) -> None:
        self.n_model, self.n_local = n_model, n_local
        self.size = n_model * n_local
        self.dense: np.ndarray | None = None
        self.bin = -1
        self.parts_k: list[np.ndarray] = []
        self.parts_v: list[np.ndarray] = []
        self.out_k: list[np.ndarray] = []
        self.out_v: list[np.ndarray] = []
        self.use_dense = False

    def start(self, b: int, n_rows: int) -> None:
        self.flush()
        self.bin = b
        # dense when the bin's pairs are a sizeable fraction of its key space
        self.use_dense = n_rows * 4 * self.n_model >= self.size // 8
        if self.use_dense and self.dense is None:
            self.dense = np.zeros(self.size)

    def add(self, keys: np.ndarray, vals: np.ndarray) -> None:
        if self.use_dense:
            self.dense += np.bincount(keys, vals, minlength=self.size)
        else:
            self.parts_k.append(keys)
            self.parts_v.append(vals)

    def flush(self) -> None:
        if self.bin < 0:
            return
        if self.use_dense:
            nz = np.flatnonzero(self.dense)
            k, v = nz, self.dense[nz]
            self.dense[nz] = 0.0
        elif self.parts_k:
            keys = np.concatenate(self.parts_k)
            vals = np.concatenate(self.parts_v)
            order = np.argsort(keys, kind="stable")
            keys, vals = keys[order], vals[order]
            new_key = np.empty(keys.size, dtype=bool)
            new_key[0] = True
            np.not_equal(keys[1:], keys[:-1], out=new_key[1:])
            first = np.flatnonzero(new_key)
            k, v = keys[first], np.add.reduceat(vals, first)
            keep = v != 0
            k, v = k[keep], v[keep]
        else:
            k, v = np.zeros(0, np.int64), np.zeros(0)
        self.out_k.append(k.astype(np.int64) + self.bin * self.size)
        self.out_v.append(v)
        self.parts_k, self.parts_v = [], []
        self.bin = -1

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self.flush()
        if not self.out_k:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(self.out_k), np.concatenate(self.out_v)


def ccm_contents(row_bin: np.ndarray, matrices: np.ndarray,
                 weights: Callable[[int, int], np.ndarray], n_bins: int,
                 model_axis: HealpixAxis, local_axis: HealpixAxis,
                 max_pairs: int = MAX_PAIRS) -> sparse.COO:
    """Sparse ``[bin, lb, NuLambda]`` dwell times of attitudes (the CCM kernel).

    Parameters
    ----------
    row_bin : ndarray of int, shape (N,)
        Bin of each attitude, non-decreasing (rows sorted by bin).
    matrices : ndarray, shape (N, 3, 3)
        Attitude matrices (columns: spacecraft axes in galactic).
    weights : callable
        ``weights(start, stop)`` gives the weights (s) of rows ``start:stop``, shape
        ``(n,)`` or ``(n, P)`` (per model pixel, e.g. zero when occulted).
    n_bins : int
        Number of bins (first axis).
    model_axis, local_axis : HealpixAxis
        The galactic model axis ``lb`` and the spacecraft-frame axis ``NuLambda``.
    max_pairs : int
        (attitude, model pixel) pairs processed at once (memory bound).
    """
    row_bin = np.asarray(row_bin, dtype=np.int64)
    if np.any(np.diff(row_bin) < 0):
        raise DataError("ccm_contents: rows must be sorted by bin")
    dirs = geo.healpix_directions(model_axis.nside, model_axis.is_nested)
    n_model, n_local = dirs.shape[0], local_axis.npix
    rows = max(1, max_pairs // n_model)
    base = np.arange(n_model, dtype=np.int64) * n_local  # key of (model pixel, local 0)
    bin_start = np.searchsorted(row_bin, np.arange(n_bins + 1))
    acc = _BinAccumulator(n_model, n_local)
    for s in range(0, row_bin.size, rows):
        e = min(s + rows, row_bin.size)
        w = np.broadcast_to(np.asarray(weights(s, e), dtype=np.float64).reshape(e - s, -1),
                            (e - s, n_model))
        # [P, gal] x [gal, (n, sc)] -> [P, n, sc]: the model pixel centres in the spacecraft
        # frame, one BLAS product for the whole chunk
        m = np.ascontiguousarray(matrices[s:e].transpose(1, 0, 2)).reshape(3, -1)
        v = (dirs @ m).reshape(n_model, e - s, 3).transpose(1, 0, 2)  # [n, P, sc]
        vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
        theta = np.arctan2(np.sqrt(vx * vx + vy * vy), vz).ravel()
        phi = np.arctan2(vy, vx).ravel()
        del v, vx, vy, vz
        pix, wt = hp.get_interp_weights(local_axis.nside, theta, phi, nest=local_axis.is_nested)
        # [4, n * P] -> [n, 4, P] so that one row's pairs are contiguous
        keys = (pix.reshape(4, e - s, n_model) + base).transpose(1, 0, 2)
        vals = (wt.reshape(4, e - s, n_model) * w[None]).transpose(1, 0, 2)
        for b in np.unique(row_bin[s:e]):
            lo, hi = max(bin_start[b], s) - s, min(bin_start[b + 1], e) - s
            if bin_start[b] >= s:
                acc.start(int(b), int(bin_start[b + 1] - bin_start[b]))
            acc.add(keys[lo:hi].ravel(), vals[lo:hi].ravel())
    keys, vals = acc.result()
    shape = (int(n_bins), n_model, n_local)
    coords = np.array(np.unravel_index(keys, shape), dtype=np.int64).reshape(3, -1)
    # keys are sorted and unique (each bin emitted once, in order): no re-sorting
    return sparse.COO(coords, vals, shape=shape, has_duplicates=False, sorted=True)


def _edges_unix(time_intervals: Any) -> np.ndarray:
    if isinstance(time_intervals, Time):
        e = time_intervals.unix
    elif isinstance(time_intervals, u.Quantity):
        try:
            e = time_intervals.to_value(u.s)
        except u.UnitsError as err:
            raise DataError(f"time_intervals in {time_intervals.unit}: expected times (s or "
                            "astropy Time)") from err
    else:
        e = time_intervals
    e = np.asarray(e, dtype=np.float64).ravel()
    if e.size < 2 or np.any(np.diff(e) <= 0) or not np.all(np.isfinite(e)):
        raise DataError(f"time_intervals {e[:6].tolist()}: expected at least two strictly "
                        "increasing bin edges (Unix s), as binned_data.axes['Time'].edges")
    return e


def time_binning_ccm(full_detector_response: Any, orientation: SpacecraftFile,
                     time_intervals: Any, nside_model: int | None = None,
                     is_nest_model: bool = False, *, earth_occ: bool = False,
                     use_livetime: bool = False) -> Histogram:
    """CCM ``[Time, lb, NuLambda]`` for time bins (cosipy's ``time_binning_ccm``).

    Parameters
    ----------
    full_detector_response : FullDetectorResponse or HealpixAxis
        Gives the ``NuLambda`` axis (and the default model NSIDE).
    orientation : SpacecraftFile
    time_intervals : Quantity, Time or array_like
        Time bin edges (Unix seconds), e.g. ``event.axes['Time'].edges``.
    nside_model : int, optional
        NSIDE of the model map; default the response's.
    is_nest_model : bool
        Model map in the NESTED scheme.
    earth_occ : bool
        Leave out model pixels below the Earth limb (needs the .ori Earth columns).
    use_livetime : bool
        Weight intervals by live time instead of duration.

    Raises
    ------
    DataError
        Bin edges outside the orientation, or no Earth data with ``earth_occ``.
    """
    local = dwell.local_axis(full_detector_response, None, "ring")
    model = _model_axis(local.nside if nside_model is None else nside_model,
                        "nested" if is_nest_model else "ring")
    edges = _edges_unix(time_intervals)
    seg = orientation.cut(edges)
    t0 = seg.time_unix[:-1]
    row_bin = np.clip(np.searchsorted(edges, t0, side="right") - 1, 0, edges.size - 2)
    w_rows = seg.interval_weights(use_livetime)
    weights = _row_weights(w_rows, seg if earth_occ else None, model)
    contents = ccm_contents(row_bin, seg.attitude_matrices()[:-1], weights, edges.size - 1,
                            model, local)
    axes = Axes([Axis(edges, label="Time", unit=u.s), model, local], copy_axes=False)
    logger.info("time-binning CCM: %d bins, %d intervals, %d non-zero entries", edges.size - 1,
                row_bin.size, contents.nnz)
    return Histogram(axes, contents=contents, unit=u.s, copy_contents=False)


def _row_weights(w_rows: np.ndarray, ori: SpacecraftFile | None,
                 model: HealpixAxis) -> Callable[[int, int], np.ndarray]:
    """Per-row weights, times the Earth visibility of each model pixel when ``ori`` given."""
    if ori is None:
        return lambda s, e: w_rows[s:e]
    if not ori.has_earth_data:
        ori.earth_visible(np.zeros((0, 3)))  # raises the explanatory DataError
    cols = ori.lonlat()
    zen = geo.lonlat_to_vec(cols["earth_l"], cols["earth_b"])
    alt = cols["altitude"]
    dirs = geo.healpix_directions(model.nside, model.is_nested)
    return lambda s, e: w_rows[s:e, None] * geo.earth_visible(dirs, zen[s:e], alt[s:e])


def spacecraft_attitude_binning_ccm(full_detector_response: Any,
                                    exposure_table: SpacecraftAttitudeExposureTable,
                                    nside_model: int | None = None,
                                    use_averaged_pointing: bool = False, *,
                                    scheme_model: str | None = None,
                                    earth_occ: bool = False) -> Histogram:
    """CCM ``[ScAtt, lb, NuLambda]`` from an exposure table (cosipy's name and arguments).

    Parameters
    ----------
    full_detector_response : FullDetectorResponse or HealpixAxis
        Gives the ``NuLambda`` axis (and the default model NSIDE).
    exposure_table : SpacecraftAttitudeExposureTable
    nside_model : int, optional
        NSIDE of the model map; default the response's.
    use_averaged_pointing : bool
        One attitude per bin (the exposure-weighted mean axes) carrying the bin's whole
        exposure: fast, slightly blurred.  Otherwise every pointing of the table with its
        own ``delta_time``: exact, cost proportional to the number of pointings.
    scheme_model : {'ring', 'nested'}, optional
        Scheme of the model map; default the table's (as cosipy).
    earth_occ : bool
        Leave out, per pointing, the model pixels below the Earth limb (needs a table
        made from an orientation with Earth columns).
    """
    if not isinstance(exposure_table, SpacecraftAttitudeExposureTable):
        raise DataError(f"exposure_table: expected a SpacecraftAttitudeExposureTable, got "
                        f"{type(exposure_table).__name__}")
    local = dwell.local_axis(full_detector_response, None, "ring")
    scheme = table_scheme(scheme_model or exposure_table.scheme)
    model = _model_axis(local.nside if nside_model is None else nside_model, scheme)
    df = exposure_table.arrays
    n_bins = len(exposure_table)
    off = df.offsets
    pointing_bin = np.repeat(np.arange(n_bins, dtype=np.int64), np.diff(off))
    dt = df.flat("delta_time")
    if earth_occ and df.flat("earth_zenith") is None:
        raise DataError("earth_occ=True needs the Earth zenith and altitude of each pointing, "
                        "which this exposure table lacks; make the table from an .ori file "
                        "with Earth columns, or pass earth_occ=False")
    if earth_occ:
        zen = geo.lonlat_to_vec(df.flat("earth_zenith")[:, 0], df.flat("earth_zenith")[:, 1])
        alt = df.flat("altitude")
        dirs = geo.healpix_directions(model.nside, model.is_nested)

        def visible_time(s: int, e: int) -> np.ndarray:
            return dt[s:e, None] * geo.earth_visible(dirs, zen[s:e], alt[s:e])

    if use_averaged_pointing:
        za, xa = df["zpointing_averaged"], df["xpointing_averaged"]
        mats = geo.attitude_matrices(xa[:, 0], xa[:, 1], za[:, 0], za[:, 1])
        if earth_occ:
            per_bin = visible_time_per_bin(zen, geo.limb_cos(alt), dt, pointing_bin, n_bins,
                                           dirs)
        else:
            per_bin = df["exposure"]
        row_bin = np.arange(n_bins, dtype=np.int64)
        contents = ccm_contents(row_bin, mats, lambda s, e: per_bin[s:e], n_bins, model, local)
    else:
        zp, xp = df.flat("zpointing"), df.flat("xpointing")
        mats = geo.attitude_matrices(xp[:, 0], xp[:, 1], zp[:, 0], zp[:, 1])
        weights = visible_time if earth_occ else (lambda s, e: dt[s:e])
        contents = ccm_contents(pointing_bin, mats, weights, n_bins, model, local)
    axes = Axes([Axis(np.arange(n_bins + 1), label="ScAtt"), model, local], copy_axes=False)
    logger.info("ScAtt CCM: %d bins, %d pointings, averaged=%s, %d non-zero entries", n_bins,
                pointing_bin.size, use_averaged_pointing, contents.nnz)
    return Histogram(axes, contents=contents, unit=u.s, copy_contents=False)


def visible_time_per_bin(zenith: np.ndarray, limb_cos: np.ndarray, dt: np.ndarray,
                         row_bin: np.ndarray, n_bins: int, dirs: np.ndarray,
                         blocks: tuple[int, ...] = (128, 16, 4)) -> np.ndarray:
    """``W[b, p] = Σ_{i in bin b} dt_i [d_p · e_i > c_i]``: visible time of each direction.

    Exact, but not by brute force over all (pointing, direction) pairs.  The pointings of
    a bin are grouped in blocks of rows consecutive in time (``blocks[0]`` rows, split
    into ``blocks[1]`` rows, ..., then single rows).  With ``e₀, c₀`` the first row of a block
    and ``r = max_j (|e_j - e₀| + |c_j - c₀|)``, every row has ``d·e_j - c_j`` within ``r``
    of ``d·e₀ - c₀``: a block farther than ``r`` from the limb is wholly visible or
    hidden, and only the others are split.  The Earth zenith moves ~0.06°/s, so for
    one-second records about 1 % of the pairs reach the single rows.

    Parameters
    ----------
    zenith : ndarray, shape (N, 3)
        Galactic unit vectors of the local zenith per pointing.
    limb_cos : ndarray, shape (N,)
        ``c_i``: a direction is visible when its dot product with the zenith exceeds it.
    dt : ndarray, shape (N,)
        Weight (s) per pointing.
    row_bin : ndarray of int, shape (N,)
        Bin of each pointing, non-decreasing.
    n_bins : int
    dirs : ndarray, shape (P, 3)
        Galactic unit vectors of the directions (model pixel centres).
    blocks : tuple of int
        Block sizes, decreasing, each a multiple of the next.
    """
    n, n_dir = row_bin.size, dirs.shape[0]
    out = np.zeros(n_bins * n_dir)
    if n == 0:
        return out.reshape(n_bins, n_dir)
    # runs of rows that are consecutive in time (same bin, no jump of the zenith): blocks
    # never straddle two passes through a bin, so their radii stay small
    step = np.linalg.norm(np.diff(zenith, axis=0), axis=1)
    jump = 8 * np.median(step) + 1e-12 if step.size else 0.0
    brk = np.r_[True, (row_bin[1:] != row_bin[:-1]) | (step > jump)]
    run = np.cumsum(brk) - 1
    within = np.arange(n) - np.flatnonzero(brk)[run]
    sizes = (*blocks, 1)
    levels = []
    for size in sizes:
        key = run * (n // size + 2) + within // size
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        owner = np.repeat(np.arange(first.size), np.diff(np.append(first, n)))
        spread = (np.linalg.norm(zenith - zenith[first][owner], axis=1)
                  + np.abs(limb_cos - limb_cos[first][owner]))
        levels.append(dict(first=first, radius=np.maximum.reduceat(spread, first) + 1e-12,
                           weight=np.add.reduceat(dt, first), bin=row_bin[first],
                           zen=zenith[first], cos=limb_cos[first]))
    for parent, child, ratio in zip(levels[:-1], levels[1:],
                                    (a // b for a, b in zip(sizes[:-1], sizes[1:]))):
        # children of each parent block: a run starting at child_start, at most `ratio` long
        parent["child_start"] = np.searchsorted(child["first"], parent["first"])
        parent["n_child"] = np.diff(np.append(parent["child_start"], child["first"].size))
        parent["ratio"] = ratio

    top = levels[0]
    steps = max(1, MAX_PAIRS // n_dir)
    pending = []
    for s in range(0, top["first"].size, steps):
        e = min(s + steps, top["first"].size)
        # [blocks, 3] x [3, P] -> [blocks, P]: signed distance from the limb at block start
        margin = top["zen"][s:e] @ dirs.T
        margin -= top["cos"][s:e, None]
        r = top["radius"][s:e, None]
        sure = np.where(margin > r, top["weight"][s:e, None], 0.0)
        b = top["bin"][s:e]
        starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
        out.reshape(n_bins, n_dir)[b[starts]] += np.add.reduceat(sure, starts, axis=0)
        np.abs(margin, out=margin)
        blk, pix = np.nonzero(margin <= r)
        pending.append((blk + s, pix))
    for parent, child in zip(levels[:-1], levels[1:]):
        last = child is levels[-1]
        ratio = parent["ratio"]
        nxt = []
        for blk, pix in pending:
            for t in range(0, blk.size, max(1, MAX_PAIRS // ratio)):
                pb, pp = blk[t:t + MAX_PAIRS // ratio], pix[t:t + MAX_PAIRS // ratio]
                # [pairs, ratio]: the children of each ambiguous (block, direction) pair
                cb = parent["child_start"][pb, None] + np.arange(ratio)[None, :]
                valid = np.arange(ratio)[None, :] < parent["n_child"][pb, None]
                cb = np.where(valid, cb, parent["child_start"][pb, None])
                d = dirs[pp]
                m = np.einsum("ikj,ij->ik", child["zen"][cb], d) - child["cos"][cb]
                r = 0.0 if last else child["radius"][cb]
                hit = (m > r) & valid
                out += np.bincount((child["bin"][cb] * n_dir + pp[:, None])[hit],
                                   child["weight"][cb][hit], minlength=out.size)
                if not last:
                    amb = (np.abs(m) <= r) & valid
                    rows, cols = np.nonzero(amb)
                    nxt.append((cb[rows, cols], pp[rows]))
        pending = nxt
    return out.reshape(n_bins, n_dir)
