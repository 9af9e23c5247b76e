"""Spacecraft orientation history: :class:`SpacecraftFile` (cosipy's name).

An orientation is a sorted list of time stamps with, at each, the galactic directions of
the spacecraft x- and z-axes and optionally the altitude, the local zenith direction and
the live time of the interval to the next stamp.  Interval ``i`` runs from stamp ``i`` to
stamp ``i + 1`` and is represented by the attitude at its start, as in cosipy.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.time import Time
from scipy.spatial.transform import Rotation

from probdeconv.errors import DataError
from probdeconv.io.ori import read_ori, write_ori

from . import geometry as geo
from .dwell import SourceViews

__all__ = ["SpacecraftFile"]

logger = logging.getLogger(__name__)


def _unix(t: Any, what: str) -> np.ndarray:
    """Unix seconds (float64) of a Time, a Quantity of time, or numbers."""
    if isinstance(t, Time):
        return np.asarray(t.unix, dtype=np.float64)
    if isinstance(t, u.Quantity):
        try:
            return np.asarray(t.to_value(u.s), dtype=np.float64)
        except u.UnitsError as err:
            raise DataError(f"{what}: {t} is not a time; give astropy Time, seconds or "
                            "Unix seconds as numbers") from err
    try:
        return np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{what}: {t!r} is not a time; give astropy Time or Unix "
                        "seconds") from err


def _lonlat(p: Any, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) in degrees from a SkyCoord (converted to galactic) or an (N, 2) array."""
    if isinstance(p, SkyCoord):
        g = p.transform_to("galactic")
        lon, lat = np.atleast_1d(g.l.deg), np.atleast_1d(g.b.deg)
    else:
        a = np.asarray(getattr(p, "value", p), dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2:
            raise DataError(f"{what}: expected a SkyCoord or an array of shape (N, 2) of "
                            f"[l, b] in degrees, got shape {a.shape}")
        lon, lat = a[:, 0], a[:, 1]
    if lon.shape != (n,):
        raise DataError(f"{what}: {lon.size} directions for {n} time stamps; give one per "
                        "time stamp")
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        raise DataError(f"{what}: contains NaN or infinite angles")
    if np.any(np.abs(lat) > 90):
        raise DataError(f"{what}: latitude {lat[np.abs(lat) > 90][0]} deg is outside "
                        "[-90, 90]; pass [l, b] (longitude first)")
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


class SpacecraftFile(SourceViews):
    """Orientation history of the spacecraft (what cosipy reads from an ``.ori`` file).

    Parameters
    ----------
    time : astropy.time.Time or array_like
        Strictly increasing time stamps (Unix seconds when numbers), at least two.
    x_pointings, z_pointings : SkyCoord or array_like, shape (N, 2)
        Directions of the spacecraft x- and z-axes ([l, b] in degrees, galactic).
    altitude : Quantity or array_like, optional
        Height above the Earth surface at each stamp (km when numbers).
    earth_zenith : SkyCoord or array_like, shape (N, 2), optional
        Direction of the local zenith (away from the Earth centre) at each stamp.
    livetime : Quantity or array_like, optional
        Live time of each interval (N - 1 values, or N with the last ignored), in s;
        default the interval durations.

    Notes
    -----
    The source-centred methods (``get_target_in_sc_frame``, ``get_dwell_map``) come from
    :class:`probdeconv.spacecraft.dwell.SourceViews`.  cosipy's private columns
    ``_load_time``, ``_x_direction`` and ``_z_direction``, which cosipy's own tests read,
    are read-only views here.

    Examples
    --------
    >>> ori = SpacecraftFile.parse_from_file("20280301_first_10sec.ori")  # doctest: +SKIP
    >>> part = ori.source_interval(ori.get_time()[2], ori.get_time()[-1])  # doctest: +SKIP
    """

    def __init__(self, time: Any, x_pointings: Any, z_pointings: Any, *,
                 altitude: Any = None, earth_zenith: Any = None, livetime: Any = None) -> None:
        t = np.atleast_1d(_unix(time, "SpacecraftFile time")).astype(np.float64)
        if t.ndim != 1 or t.size < 2:
            raise DataError(f"SpacecraftFile: {t.size} time stamp(s); an orientation needs at "
                            "least two (each interval lies between two stamps)")
        bad = np.flatnonzero(~np.isfinite(t) | np.r_[False, np.diff(t) <= 0])
        if bad.size:
            i = int(bad[0])
            raise DataError(f"SpacecraftFile: time stamp {i} ({float(t[i])!r}) is not finite or "
                            "not after the previous one; times must increase strictly")
        n = t.size
        self._t = t
        self._xl, self._xb = _lonlat(x_pointings, n, "x_pointings")
        self._zl, self._zb = _lonlat(z_pointings, n, "z_pointings")
        self._alt = self._el = self._eb = None
        if (altitude is None) != (earth_zenith is None):
            raise DataError("SpacecraftFile: give both altitude and earth_zenith (they define "
                            "the Earth limb) or neither")
        if altitude is not None:
            alt = altitude.to_value(u.km) if isinstance(altitude, u.Quantity) else altitude
            self._alt = np.broadcast_to(np.asarray(alt, dtype=np.float64), (n,)).copy()
            self._el, self._eb = _lonlat(earth_zenith, n, "earth_zenith")
        self._live = None
        if livetime is not None:
            lt = livetime.to_value(u.s) if isinstance(livetime, u.Quantity) else livetime
            lt = np.asarray(lt, dtype=np.float64).ravel()
            if lt.size == n:
                lt = lt[:-1]
            if lt.size != n - 1 or np.any(~np.isfinite(lt)) or np.any(lt < 0):
                raise DataError(f"SpacecraftFile: livetime needs {n - 1} finite non-negative "
                                f"values (one per interval), got {lt.size}")
            self._live = lt.copy()
        self._matrices: np.ndarray | None = None

    # ------------------------------------------------------------------ files
    @classmethod
    def parse_from_file(cls, filename: str | os.PathLike) -> SpacecraftFile:
        """Read a MEGAlib ``.ori`` file (see :mod:`probdeconv.io.ori`).

        Raises
        ------
        FileFormatError
            Unknown header, malformed or unsorted record, missing ``EN``; the message
            names the line.
        """
        c = read_ori(filename)
        kw = {}
        if "altitude" in c:
            kw = dict(altitude=c["altitude"],
                      earth_zenith=np.column_stack([c["earth_l"], c["earth_b"]]),
                      livetime=c["livetime"][:-1])
        return cls(c["time"], np.column_stack([c["x_l"], c["x_b"]]),
                   np.column_stack([c["z_l"], c["z_b"]]), **kw)

    open = parse_from_file

    def write(self, filename: str | os.PathLike, overwrite: bool = False) -> None:
        """Write as a MEGAlib ``.ori`` file (atomically; the last livetime is 0)."""
        cols = dict(time=self._t, x_b=self._xb, x_l=self._xl, z_b=self._zb, z_l=self._zl)
        if self._alt is not None:
            live = self.livetime.to_value(u.s)
            cols.update(altitude=self._alt, earth_b=self._eb, earth_l=self._el,
                        livetime=np.append(live, 0.0))
        write_ori(filename, cols, overwrite=overwrite)

    # ------------------------------------------------------------- accessors
    def __len__(self) -> int:
        return int(self._t.size)

    @property
    def npoints(self) -> int:
        """Number of time stamps."""
        return len(self)

    @property
    def time_unix(self) -> np.ndarray:
        """Time stamps, Unix seconds (read-only view)."""
        return _read_only(self._t.view())

    @property
    def _load_time(self) -> np.ndarray:
        """Time stamps, Unix seconds (cosipy's column name; read-only)."""
        return self.time_unix

    @property
    def _x_direction(self) -> np.ndarray:
        """``(N, 2)`` [l, b] of the x axis in degrees (cosipy's column name; read-only)."""
        return _read_only(np.column_stack([self._xl, self._xb]))

    @property
    def _z_direction(self) -> np.ndarray:
        """``(N, 2)`` [l, b] of the z axis in degrees (cosipy's column name; read-only)."""
        return _read_only(np.column_stack([self._zl, self._zb]))

    def get_time(self) -> Time:
        """Time stamps as :class:`astropy.time.Time` (format ``unix``)."""
        return Time(self._t, format="unix")

    obstime = property(get_time)

    @property
    def tstart(self) -> Time:
        return Time(self._t[0], format="unix")

    @property
    def tstop(self) -> Time:
        return Time(self._t[-1], format="unix")

    def get_time_delta(self) -> u.Quantity:
        """Duration of each interval (N - 1 values, s)."""
        return u.Quantity(np.diff(self._t), u.s)

    @property
    def livetime(self) -> u.Quantity:
        """Live time of each interval (s); the durations when the file gives none."""
        return u.Quantity(np.diff(self._t) if self._live is None else self._live.copy(), u.s)

    @property
    def has_earth_data(self) -> bool:
        """True when altitude and zenith direction are known (needed for occultation)."""
        return self._alt is not None

    @property
    def x_pointings(self) -> SkyCoord:
        return SkyCoord(self._xl, self._xb, unit="deg", frame="galactic")

    @property
    def z_pointings(self) -> SkyCoord:
        return SkyCoord(self._zl, self._zb, unit="deg", frame="galactic")

    @property
    def y_pointings(self) -> SkyCoord:
        lon, lat = geo.vec_to_lonlat(self.attitude_matrices()[:, :, 1])
        return SkyCoord(lon, lat, unit="deg", frame="galactic")

    @property
    def earth_zenith(self) -> SkyCoord | None:
        if self._el is None:
            return None
        return SkyCoord(self._el, self._eb, unit="deg", frame="galactic")

    @property
    def altitude(self) -> u.Quantity | None:
        return None if self._alt is None else u.Quantity(self._alt, u.km)

    def lonlat(self) -> dict[str, np.ndarray]:
        """Raw per-stamp columns (degrees, km, s): x_l, x_b, z_l, z_b[, earth_*, altitude]."""
        out = dict(x_l=self._xl, x_b=self._xb, z_l=self._zl, z_b=self._zb)
        if self._alt is not None:
            out.update(earth_l=self._el, earth_b=self._eb, altitude=self._alt)
        return {k: v.copy() for k, v in out.items()}

    def attitude_matrices(self) -> np.ndarray:
        """Rotation matrices ``(N, 3, 3)``: columns are the x, y, z axes in galactic.

        A galactic direction ``d`` is seen in the spacecraft frame as ``M[i].T @ d``.
        """
        if self._matrices is None:
            self._matrices = geo.attitude_matrices(self._xl, self._xb, self._zl, self._zb)
            self._matrices.flags.writeable = False
        return self._matrices

    def get_attitude(self) -> Rotation:
        """The attitude at each stamp as a :class:`scipy.spatial.transform.Rotation`."""
        return Rotation.from_matrix(self.attitude_matrices())

    # --------------------------------------------------------------- slicing
    def source_interval(self, start: Any = None, stop: Any = None) -> SpacecraftFile:
        """The orientation between ``start`` and ``stop`` (cosipy's name).

        Stamps inside the interval are kept as they are; an end that falls between two
        stamps gets an interpolated stamp (attitude and zenith by spherical linear
        interpolation, altitude linearly, live time pro rata).

        Parameters
        ----------
        start, stop : astropy.time.Time or float, optional
            Interval ends (Unix seconds when numbers); default the first / last stamp.

        Raises
        ------
        DataError
            ``start >= stop`` or an end outside the orientation.
        """
        a = self._t[0] if start is None else float(_unix(start, "start"))
        b = self._t[-1] if stop is None else float(_unix(stop, "stop"))
        if not a < b:
            raise DataError(f"source_interval: start {float(a)!r} is not before stop "
                            f"{float(b)!r} (Unix s); "
                            "swap them or widen the interval")
        return self.cut(np.array([a, b]))

    select_interval = source_interval

    def cut(self, edges: Any) -> SpacecraftFile:
        """The orientation from ``edges[0]`` to ``edges[-1]`` with a stamp at every edge.

        Used for time binning: afterwards every interval lies inside one bin.

        Raises
        ------
        DataError
            Edges unsorted or outside ``[first stamp, last stamp]``.
        """
        e = np.atleast_1d(_unix(edges, "edges")).astype(np.float64)
        t = self._t
        if e.size < 2 or np.any(np.diff(e) <= 0):
            raise DataError(f"time edges {e[:6].tolist()}...: expected at least two strictly "
                            "increasing values")
        if e[0] < t[0] or e[-1] > t[-1]:
            raise DataError(
                f"time interval [{float(e[0])!r}, {float(e[-1])!r}] (Unix s) is not inside the "
                f"orientation [{float(t[0])!r}, {float(t[-1])!r}]; choose times the orientation "
                "covers, or use a longer "
                "orientation file")
        new_t = np.union1d(t[(t >= e[0]) & (t <= e[-1])], e)
        i = np.clip(np.searchsorted(t, new_t, side="right") - 1, 0, t.size - 2)
        frac = (new_t - t[i]) / (t[i + 1] - t[i])
        exact_lo, exact_hi = new_t == t[i], new_t == t[i + 1]
        src = np.where(exact_hi, i + 1, i)
        interp = ~(exact_lo | exact_hi)
        xl, xb, zl, zb = (a[src].copy() for a in (self._xl, self._xb, self._zl, self._zb))
        matrices = None
        if np.any(interp):
            j, f = i[interp], frac[interp]
            m = geo.slerp_matrices(self.attitude_matrices()[j], self.attitude_matrices()[j + 1], f)
            xl[interp], xb[interp], zl[interp], zb[interp] = geo.matrix_axes_lonlat(m)
        if self._matrices is not None:  # reuse the attitudes already computed
            matrices = self._matrices[src]
            if np.any(interp):
                matrices[interp] = m
        kw: dict[str, Any] = {}
        if self._alt is not None:
            alt, el, eb = self._alt[src].copy(), self._el[src].copy(), self._eb[src].copy()
            if np.any(interp):
                j, f = i[interp], frac[interp]
                alt[interp] = self._alt[j] + f * (self._alt[j + 1] - self._alt[j])
                v0 = geo.lonlat_to_vec(self._el[j], self._eb[j])
                v1 = geo.lonlat_to_vec(self._el[j + 1], self._eb[j + 1])
                el[interp], eb[interp] = geo.vec_to_lonlat(v0 + f[:, None] * (v1 - v0))
            kw = dict(altitude=alt, earth_zenith=np.column_stack([el, eb]))
        if self._live is not None:
            k = np.clip(np.searchsorted(t, 0.5 * (new_t[:-1] + new_t[1:]), side="right") - 1,
                        0, t.size - 2)
            kw["livetime"] = self._live[k] * (np.diff(new_t) / (t[k + 1] - t[k]))
        out = SpacecraftFile(new_t, np.column_stack([xl, xb]), np.column_stack([zl, zb]), **kw)
        if matrices is not None:
            matrices.flags.writeable = False
            out._matrices = matrices
        return out

    # -------------------------------------------------------------- geometry
    def interval_weights(self, use_livetime: bool = False) -> np.ndarray:
        """Weight (s) of each interval: its duration, or its live time."""
        return self.livetime.to_value(u.s) if use_livetime else np.diff(self._t)

    def time_differences(self) -> np.ndarray:
        """Interval durations (s) as cosipy's exposure table computes them.

        The difference of :class:`astropy.time.Time` stamps, converted from days to
        seconds: within ~1e-11 s of :meth:`get_time_delta`, and bit for bit the
        ``delta_time`` of cosipy's exposure tables.
        """
        out = np.empty(self._t.size - 1)
        step = 1 << 18  # elementwise, so chunks give the same bits with small temporaries
        for s in range(0, out.size, step):
            t = Time(self._t[s:s + step + 1], format="unix")
            out[s:s + step] = (t[1:] - t[:-1]).to_value(u.s)
        return out

    def earth_visible(self, directions: np.ndarray) -> np.ndarray:
        """``(N, P)`` bool: galactic unit vectors ``(P, 3)`` above the Earth limb per stamp.

        Raises
        ------
        DataError
            The orientation has no altitude / zenith columns.
        """
        if self._alt is None:
            raise DataError("Earth occultation needs the altitude and Earth-zenith columns, "
                            "which this orientation lacks (an .ori file with 'OG time x_b "
                            "x_l z_b z_l altitude earth_b earth_l livetime'); pass "
                            "earth_occ=False")
        return geo.earth_visible(directions, geo.lonlat_to_vec(self._el, self._eb), self._alt)

    def __repr__(self) -> str:
        extra = ", with Earth/livetime columns" if self._alt is not None else ""
        return (f"SpacecraftFile({self.npoints} stamps, {float(self._t[0])!r} to "
                f"{float(self._t[-1])!r} "
                f"Unix s{extra})")


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a
