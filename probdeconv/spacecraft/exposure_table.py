"""Spacecraft-attitude (ScAtt) binning of an orientation: :class:`SpacecraftAttitudeExposureTable`.

Each orientation interval is represented by the midpoint of its end attitudes (the
arithmetic mean of the x- and z-axis longitudes and latitudes, as cosipy).  Intervals
whose z- and x-axis midpoints fall in the same pair of HEALPix pixels (at the table's
NSIDE) form one ScAtt bin; bins are numbered in order of first appearance.  A bin holds
its pointings, their durations (``delta_time``: differences of astropy Time stamps, as
cosipy, or live times), its exposure (their sum),
the exposure-weighted mean z- and x-axis (``*_averaged``), and per pointing the Earth
zenith, altitude and live time at the interval start when the orientation has them.

The columns live in flat arrays (all pointings, sorted by bin) with bin offsets
(:class:`~probdeconv.spacecraft.table_columns.ExposureTableColumns`, ``table.arrays``), so
an orientation of millions of one-second records is binned in seconds.  ``table.df`` is
the pandas DataFrame of cosipy's columns (what cosipy's table is); ``table[name]`` gives
arrays for per-bin values and lists of arrays for per-pointing values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import astropy.units as u
import healpy as hp
import numpy as np
import pandas as pd
import sparse
from histpy import HealpixAxis, Histogram

from probdeconv.errors import DataError, ParameterError
from probdeconv.io.exposure_fits import read_exposure_table, write_exposure_table

from . import geometry as geo
from .orientation import SpacecraftFile
from .table_columns import PER_BIN, PER_POINTING, ExposureTableColumns

__all__ = ["SpacecraftAttitudeExposureTable", "ExposureTableColumns", "table_scheme"]

logger = logging.getLogger(__name__)


def table_scheme(scheme: Any) -> str:
    """The table's spelling of a HEALPix scheme: ``'ring'`` or ``'nested'``.

    Any case, and ``'nest'``, are accepted; ``None`` falls back to ``'ring'`` with a
    warning, as cosipy.

    Examples
    --------
    >>> table_scheme("NEST"), table_scheme("Ring")
    ('nested', 'ring')
    """
    if scheme is None:
        logger.warning("HEALPix scheme None: the exposure table uses 'ring' (as cosipy)")
        return "ring"
    s = str(scheme).strip().lower()
    if s == "ring":
        return "ring"
    if s in ("nest", "nested"):
        return "nested"
    raise ParameterError(f"HEALPix scheme {scheme!r} is not 'ring' or 'nested' (any case)")


class SpacecraftAttitudeExposureTable:
    """Exposure time per spacecraft attitude (ScAtt) bin, cosipy's exposure table.

    Parameters
    ----------
    df : pandas.DataFrame, ExposureTableColumns or Mapping
        Columns as returned by :meth:`analyze_orientation` (cosipy's DataFrame layout).
    nside : int
        HEALPix NSIDE of the ScAtt binning.
    scheme : {'ring', 'nested'}
        ``None`` means ``'ring'`` (with a warning), as cosipy.

    Attributes
    ----------
    df : pandas.DataFrame
        cosipy's columns, one row per ScAtt bin (built on first use from ``arrays``; a
        snapshot: changing it does not change the table).
    arrays : ExposureTableColumns
        The same columns as flat arrays (what probdeconv computes with).
    nside : int
    scheme : str

    Examples
    --------
    >>> ori = SpacecraftFile.parse_from_file("20280301_first_10sec.ori")   # doctest: +SKIP
    >>> table = SpacecraftAttitudeExposureTable.from_orientation(ori, nside=1)  # doctest: +SKIP
    >>> table.save_as_fits("exposure_table.fits")                          # doctest: +SKIP
    """

    binning_method = "ScAtt"
    binning_index_name = "scatt_binning_index"

    def __init__(self, df: pd.DataFrame | Mapping, nside: int, scheme: str | None = "ring"
                 ) -> None:
        if df is None:
            raise DataError("exposure table: no columns (None). analyze_orientation returns "
                            "None when only one of start and stop is given; give both, or "
                            "use from_orientation")
        self.arrays = df if isinstance(df, ExposureTableColumns) else \
            ExposureTableColumns.from_lists(df)
        self._df: pd.DataFrame | None = None
        self.scheme = table_scheme(scheme)
        if not hp.isnsideok(int(nside), nest=self.scheme == "nested"):
            raise ParameterError(f"exposure table nside={nside} is not a valid HEALPix NSIDE "
                                 f"for scheme {self.scheme!r}")
        self.nside = int(nside)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_orientation(cls, orientation: SpacecraftFile, nside: int, scheme: str = "ring",
                         start: Any = None, stop: Any = None, min_exposure: float | None = None,
                         min_num_pointings: int | None = None, *,
                         use_livetime: bool = False) -> SpacecraftAttitudeExposureTable:
        """Bin an orientation into ScAtt bins (see :meth:`analyze_orientation`)."""
        scheme = table_scheme(scheme)
        cols = cls.orientation_columns(orientation, nside, scheme, start, stop, min_exposure,
                                       min_num_pointings, use_livetime=use_livetime)
        return cls(cols, nside, scheme)

    @classmethod
    def analyze_orientation(cls, orientation: SpacecraftFile, nside: int, scheme: str = "ring",
                            start: Any = None, stop: Any = None,
                            min_exposure: float | None = None,
                            min_num_pointings: int | None = None, *,
                            use_livetime: bool = False) -> pd.DataFrame | None:
        """The exposure table of ``orientation`` as a pandas DataFrame (cosipy's columns).

        Parameters as :meth:`orientation_columns`.  As cosipy, only one of ``start`` and
        ``stop`` is an error that is logged, and the result is then ``None``
        (:meth:`from_orientation` completes a one-sided range instead).

        Examples
        --------
        >>> ori = SpacecraftFile(np.arange(3.0), [[0, 0]] * 3, [[0, 90]] * 3)
        >>> df = SpacecraftAttitudeExposureTable.analyze_orientation(ori, nside=1)
        >>> df["exposure"].round(6).tolist(), df.columns[:2].tolist()
        ([2.0], ['scatt_binning_index', 'healpix_index'])
        >>> SpacecraftAttitudeExposureTable.analyze_orientation(ori, 1, start=0.0) is None
        True
        """
        if (start is None) != (stop is None):
            logger.error("analyze_orientation: please specify the %s time too (cosipy "
                         "returns None here; from_orientation completes the range)",
                         "stop" if stop is None else "start")
            return None
        return cls.orientation_columns(orientation, nside, table_scheme(scheme), start, stop,
                                       min_exposure, min_num_pointings,
                                       use_livetime=use_livetime).to_dataframe()

    @classmethod
    def orientation_columns(cls, orientation: SpacecraftFile, nside: int,
                            scheme: str = "ring", start: Any = None, stop: Any = None,
                            min_exposure: float | None = None,
                            min_num_pointings: int | None = None, *,
                            use_livetime: bool = False) -> ExposureTableColumns:
        """The columns of the exposure table of ``orientation`` as flat arrays.

        Parameters
        ----------
        orientation : SpacecraftFile
        nside : int
            HEALPix NSIDE of the attitude binning.
        scheme : {'ring', 'nested'}
        start, stop : astropy.time.Time or float, optional
            Analyse only this part (default: all; one alone is completed by the
            orientation's first / last stamp).
        min_exposure : float, optional
            Drop bins with less exposure (s).
        min_num_pointings : int, optional
            Drop bins with fewer pointings.
        use_livetime : bool
            Weight pointings by the live time of their interval instead of its duration
            (``delta_time`` and ``exposure`` then hold live times).

        Raises
        ------
        DataError
            ``start``/``stop`` outside the orientation, or no bin left after the cuts.
        """
        if not isinstance(orientation, SpacecraftFile):
            raise DataError(f"orientation: expected a SpacecraftFile, got "
                            f"{type(orientation).__name__}; read it with "
                            "SpacecraftFile.parse_from_file(path)")
        scheme = table_scheme(scheme)
        nest = scheme == "nested"
        if not hp.isnsideok(int(nside), nest=nest):
            raise ParameterError(f"nside={nside} is not a valid HEALPix NSIDE for {scheme!r}")
        if start is not None or stop is not None:
            orientation = orientation.source_interval(start, stop)
        logger.info("ScAtt binning at NSIDE %d (%.2f deg) of %d orientation intervals", nside,
                    np.degrees(hp.nside2resol(int(nside))), len(orientation) - 1)
        xl, xb, zl, zb = geo.matrix_axes_lonlat(orientation.attitude_matrices())
        xl, xb = geo.midpoint_lonlat(xl, xb)
        zl, zb = geo.midpoint_lonlat(zl, zb)
        dt = orientation.interval_weights(True) if use_livetime else \
            orientation.time_differences()
        npix = hp.nside2npix(int(nside))
        iz = hp.ang2pix(int(nside), zl, zb, nest=nest, lonlat=True)
        ix = hp.ang2pix(int(nside), xl, xb, nest=nest, lonlat=True)
        key = iz.astype(np.int64) * npix + ix
        perm, offsets, pair = _group_by_first_appearance(key)
        counts = np.diff(offsets)
        n_bins = counts.size
        starts = offsets[:-1]
        zp = np.column_stack([zl, zb])[perm]
        xp = np.column_stack([xl, xb])[perm]
        dts = dt[perm]
        per_bin = dict(
            scatt_binning_index=np.arange(n_bins, dtype=np.int64),
            healpix_index_z_pointing=pair // npix,
            healpix_index_x_pointing=pair % npix,
            zpointing_averaged=_averaged(zp, dts, starts),
            xpointing_averaged=_averaged(xp, dts, starts),
            exposure=np.add.reduceat(dts, starts),
            num_pointings=counts.astype(np.int64),
            bkg_group=np.zeros(n_bins, dtype=np.int64))
        flat: dict[str, np.ndarray | None] = dict(
            zpointing=zp, xpointing=xp, delta_time=dts,
            livetime=orientation.interval_weights(True)[perm], earth_zenith=None, altitude=None)
        if orientation.has_earth_data:
            cols = orientation.lonlat()
            flat["earth_zenith"] = np.column_stack([cols["earth_l"], cols["earth_b"]])[:-1][perm]
            flat["altitude"] = cols["altitude"][:-1][perm]
        table = ExposureTableColumns(per_bin, flat, offsets)
        keep = np.ones(table.nbins, dtype=bool)
        if min_exposure is not None:
            keep &= per_bin["exposure"] >= float(min_exposure)
        if min_num_pointings is not None:
            keep &= per_bin["num_pointings"] >= int(min_num_pointings)
        if not keep.any():
            raise DataError(
                f"no ScAtt bin left: min_exposure={min_exposure} s and min_num_pointings="
                f"{min_num_pointings} remove all {table.nbins} bins (largest exposure "
                f"{per_bin['exposure'].max():.6g} s, most pointings "
                f"{per_bin['num_pointings'].max()}); lower the cuts or use a coarser nside")
        if not keep.all():
            logger.info("dropping %d of %d ScAtt bins below the exposure / pointing cuts",
                        int((~keep).sum()), keep.size)
            table = table.select(keep)
        return table

    # ------------------------------------------------------------------- files
    @classmethod
    def from_fits(cls, filename: str | os.PathLike) -> SpacecraftAttitudeExposureTable:
        """Read a table written by :meth:`save_as_fits` or by cosipy (0.3 or 0.4)."""
        c, nside, scheme = read_exposure_table(filename)
        return cls(c, nside, scheme)

    def save_as_fits(self, filename: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the table in cosipy's FITS layout (atomically)."""
        d = self.arrays
        c = {k: d[k] for k in PER_BIN}
        for k in PER_POINTING:
            c[k] = d[k] if d.flat(k) is not None else None
        write_exposure_table(filename, c, self.nside, self.scheme, overwrite=overwrite)

    # ------------------------------------------------------------------- views
    @property
    def df(self) -> pd.DataFrame:
        """cosipy's table: a pandas DataFrame, one row per ScAtt bin (built once)."""
        if self._df is None:
            self._df = self.arrays.to_dataframe()
        return self._df

    def iterrows(self):
        """Rows of :attr:`df` as ``(index, Series)``, as cosipy's DataFrame table."""
        return self.df.iterrows()

    @property
    def iloc(self):
        """Positional row access to :attr:`df`, as cosipy's DataFrame table."""
        return self.df.iloc

    def __len__(self) -> int:
        return self.arrays.nbins

    def __getitem__(self, name: str) -> Any:
        return self.arrays[name]

    @property
    def columns(self) -> list[str]:
        return self.arrays.keys()

    def calc_pointing_trajectory_map(self) -> Histogram:
        """Exposure per (z-pointing pixel, x-pointing pixel): a sparse Histogram in s.

        Axes are HEALPix axes labelled ``'z'`` and ``'x'`` (galactic, the table's NSIDE and
        scheme), as cosipy's ``map_pointing_zx`` files.
        """
        npix = hp.nside2npix(self.nside)
        axes = [HealpixAxis(nside=self.nside, scheme=self.scheme, label=lab,
                            coordsys="galactic") for lab in ("z", "x")]
        cols = self.arrays
        coords = np.vstack([cols["healpix_index_z_pointing"],
                            cols["healpix_index_x_pointing"]]).astype(np.int64)
        # bins sharing a (z, x) pixel pair are summed (COO sums duplicate coordinates)
        contents = sparse.COO(coords, np.asarray(cols["exposure"], dtype=np.float64),
                              shape=(npix, npix))
        return Histogram(axes, contents=contents, unit=u.s, copy_contents=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpacecraftAttitudeExposureTable):
            return NotImplemented
        if (self.nside, self.scheme, len(self)) != (other.nside, other.scheme, len(other)):
            return False
        a, b = self.arrays, other.arrays
        if not np.array_equal(a.offsets, b.offsets):
            return False
        if any(not np.array_equal(a[k], b[k]) for k in PER_BIN):
            return False
        for k in ("zpointing", "xpointing", "delta_time"):
            if not np.array_equal(a.flat(k), b.flat(k)):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"SpacecraftAttitudeExposureTable({len(self)} ScAtt bins, nside={self.nside}, "
                f"scheme={self.scheme!r}, exposure {self.arrays['exposure'].sum():.6g} s)")


def _group_by_first_appearance(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by equal key, groups in order of first appearance, rows in order.

    Returns
    -------
    perm : ndarray of int
        Row order (group after group).
    offsets : ndarray of int
        Start of each group in ``perm`` (length ``n_groups + 1``).
    keys : ndarray
        The key of each group.
    """
    by_key = np.argsort(key, kind="stable")  # rows of one key contiguous, in time order
    sk = key[by_key]
    start = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    size = np.diff(np.append(start, key.size))
    order = np.argsort(by_key[start], kind="stable")  # groups by their first row
    offsets = np.concatenate([[0], np.cumsum(size[order])])
    # position in by_key of the rows of group order[0], order[1], ...
    src = np.repeat(start[order] - offsets[:-1], size[order]) + np.arange(key.size)
    return by_key[src], offsets, sk[start[order]]


def _averaged(pointings: np.ndarray, weights: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Weighted mean direction ([l, b] deg) of the pointings of each bin.

    Summed per bin in cosipy's order (one reduction per bin, a loop over bins only), so
    that the result agrees with cosipy's tables bit for bit.
    """
    vec = hp.ang2vec(pointings[:, 0], pointings[:, 1], lonlat=True)
    stops = np.append(starts[1:], len(weights))
    summed = np.empty((len(starts), 3))
    for i, (s, e) in enumerate(zip(starts, stops)):
        w = weights[s:e]
        if not np.any(w > 0):  # no weight at all: plain mean of the pointings
            w = np.ones_like(w)
        v = np.sum(vec[s:e].T * w, axis=1)
        summed[i] = v / np.linalg.norm(v)
    lon, lat = hp.vec2ang(summed, lonlat=True)
    return np.column_stack([lon, lat])
