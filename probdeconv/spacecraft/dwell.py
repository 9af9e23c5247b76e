"""A fixed source seen from the spacecraft: its path in the spacecraft frame and its dwell map.

These are the computations behind :meth:`SpacecraftFile.get_target_in_sc_frame` and
:meth:`SpacecraftFile.get_dwell_map`, on arrays: attitude matrices ``(N, 3, 3)`` whose
columns are the spacecraft x, y, z axes in galactic coordinates.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import astropy.units as u
import healpy as hp
import numpy as np
from astropy.coordinates import SkyCoord
from histpy import HealpixAxis, Histogram
from scoords import SpacecraftFrame

from probdeconv.errors import DataError, ParameterError
from probdeconv.io.drm import ResponseFile
from probdeconv.io.histpy_h5 import SPACECRAFT_FRAME

from . import geometry as geo

__all__ = ["SourceViews", "galactic_direction", "source_path", "path_angles", "local_axis",
           "dwell_map"]

logger = logging.getLogger(__name__)


def galactic_direction(target_coord: Any, what: str = "target_coord") -> np.ndarray:
    """Galactic unit vector ``(1, 3)`` of one fixed sky position.

    Examples
    --------
    >>> from astropy.coordinates import SkyCoord
    >>> galactic_direction(SkyCoord(l=0, b=90, unit="deg", frame="galactic")).round(12).tolist()
    [[0.0, 0.0, 1.0]]
    """
    if not isinstance(target_coord, SkyCoord):
        raise DataError(f"{what}: expected an astropy SkyCoord of the source, got "
                        f"{type(target_coord).__name__}")
    if target_coord.size != 1:
        raise DataError(f"{what}: {target_coord.size} positions; give one fixed source")
    g = target_coord.transform_to("galactic")
    return geo.lonlat_to_vec(np.atleast_1d(g.l.deg)[:1], np.atleast_1d(g.b.deg)[:1])


def source_path(matrices: np.ndarray, target_coord: SkyCoord) -> SkyCoord:
    """Direction of a fixed source in the spacecraft frame at every attitude.

    Returns a ``SkyCoord`` in scoords' ``SpacecraftFrame`` (``.lon`` / ``.lat``), one
    position per attitude, as cosipy's ``get_target_in_sc_frame``.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.coordinates import SkyCoord
    >>> path = source_path(np.eye(3)[None], SkyCoord(l=30, b=0, unit="deg", frame="galactic"))
    >>> round(float(path.lon.deg[0]), 9), round(float(path.lat.deg[0]), 9)
    (30.0, 0.0)
    """
    theta, phi = geo.local_angles(np.asarray(matrices), galactic_direction(target_coord))
    lon = np.mod(np.rad2deg(phi[:, 0]), 360.0)
    lat = 90.0 - np.rad2deg(theta[:, 0])
    return SkyCoord(lon, lat, unit="deg", frame=SpacecraftFrame())


def path_angles(path: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Colatitude and longitude (rad) of a spacecraft-frame path with ``n`` positions."""
    if not isinstance(path, SkyCoord):
        raise DataError(f"src_path: expected a SkyCoord in the spacecraft frame (from "
                        f"get_target_in_sc_frame), got {type(path).__name__}")
    if path.shape != (n,):
        raise DataError(f"src_path: {path.size} positions for {n} time stamps; give one per "
                        "time stamp (get_target_in_sc_frame returns such a path)")
    sph = path.spherical
    return np.deg2rad(90.0 - sph.lat.deg), np.deg2rad(sph.lon.deg)


def local_axis(response: Any, nside: int | None, scheme: str | None) -> HealpixAxis:
    """The spacecraft-frame HEALPix axis of a dwell map.

    ``response`` is a full detector response (open, or a path to its file: its
    ``NuLambda`` axis) or a HEALPix axis; otherwise ``nside`` and ``scheme`` define it.
    """
    if isinstance(response, str | os.PathLike):
        with ResponseFile.open(response) as rsp:
            return rsp.axes["NuLambda"].copy()
    if response is not None:
        if isinstance(response, HealpixAxis):
            return response.copy()
        try:
            return response.axes["NuLambda"].copy()
        except (AttributeError, KeyError, TypeError) as err:
            raise DataError(f"response: expected a FullDetectorResponse or the path of its "
                            f"file (with a 'NuLambda' axis), or a HealpixAxis; got "
                            f"{type(response).__name__}") from err
    if nside is None:
        raise DataError("get_dwell_map: give nside (and scheme) or a response (the path of "
                        "a full detector response file) for the map's pixels")
    return HealpixAxis(nside=int(nside), scheme=scheme or "ring", label="NuLambda",
                       coordsys=SPACECRAFT_FRAME)


def dwell_map(axis: HealpixAxis, theta: np.ndarray, phi: np.ndarray,
              weights: np.ndarray) -> Histogram:
    """Weights (s) spread over the four pixels nearest to each direction (bilinear).

    Parameters
    ----------
    axis : HealpixAxis
        Pixels of the map.
    theta, phi : ndarray, shape (M,)
        Colatitude and longitude (rad) of each interval's source direction.
    weights : ndarray, shape (M,)
        Duration (or live time) of each interval, s.

    Examples
    --------
    >>> import numpy as np
    >>> from histpy import HealpixAxis
    >>> m = dwell_map(HealpixAxis(nside=1), np.array([0.0]), np.array([0.0]), np.array([2.0]))
    >>> float(m[:].sum().value)
    2.0
    """
    pix, wt = hp.get_interp_weights(axis.nside, theta, phi, nest=axis.is_nested)
    dwell = np.bincount(pix.ravel(), (wt * weights[None, :]).ravel(), minlength=axis.npix)
    return Histogram([axis], contents=dwell, unit=u.s)


class SourceViews:
    """The source-centred methods of :class:`~probdeconv.spacecraft.SpacecraftFile`.

    A mix-in: the class using it provides ``attitude_matrices()`` (``(N, 3, 3)``),
    ``interval_weights(use_livetime)`` (``N - 1`` values, s), ``earth_visible(d)`` and
    ``len()`` (``N`` stamps).  :meth:`get_target_in_sc_frame` keeps the last path in
    :attr:`src_path_skycoord` (and the name in :attr:`target_name`), as cosipy does.
    """

    target_name: str | None = None
    src_path_skycoord: SkyCoord | None = None

    def get_target_in_sc_frame(self, target_name: Any = None, target_coord: Any = None,
                               attitude: Any = None, quiet: bool = False,
                               save: bool = False) -> SkyCoord:
        """Direction of a fixed source in the spacecraft frame at every stamp.

        Both cosipy signatures work: ``get_target_in_sc_frame("Crab", coord)`` (cosipy
        <= 0.3) and ``get_target_in_sc_frame(coord)`` (cosipy 0.4).  The path is kept
        (:attr:`src_path_skycoord`) for :meth:`get_dwell_map`.

        Parameters
        ----------
        target_name : str or SkyCoord
            Name of the source, or the source itself.
        target_coord : SkyCoord, optional
            The source (when ``target_name`` is its name).
        attitude : scipy Rotation or scoords Attitude, optional
            One attitude per stamp (``as_matrix()``); default this orientation's.
        quiet : bool
            Accepted for cosipy's signature (probdeconv logs at debug level).
        save : bool
            Must be False: save the returned path yourself (``np.save``).

        Returns
        -------
        SkyCoord
            In scoords' ``SpacecraftFrame``, one position per stamp (``.lon``, ``.lat``).

        Raises
        ------
        DataError
            No source given, or an attitude with another number of stamps.
        ParameterError
            ``save=True``.
        """
        if isinstance(target_name, SkyCoord) and target_coord is None:
            target_name, target_coord = None, target_name
        if target_coord is None:
            raise DataError("get_target_in_sc_frame: give the source, e.g. "
                            "get_target_in_sc_frame(SkyCoord(l=184.56, b=-5.79, unit='deg', "
                            "frame='galactic')) or get_target_in_sc_frame('Crab', coord)")
        _refuse_save(save, "get_target_in_sc_frame", "np.save(name, [path.lon.deg, "
                     "path.lat.deg])")
        matrices = self.attitude_matrices()
        if attitude is not None:
            matrices = np.asarray(attitude.as_matrix(), dtype=np.float64).reshape(-1, 3, 3)
            if matrices.shape[0] != len(self):
                raise DataError(f"attitude: {matrices.shape[0]} rotations for {len(self)} "
                                "time stamps; give one per stamp or none")
        path = source_path(matrices, target_coord)
        self.target_name = target_name
        self.src_path_skycoord = path
        logger.debug("source path of %s in the spacecraft frame: %d stamps",
                     target_name or "the target", len(self))
        return path

    def get_dwell_map(self, target: Any = None, src_path: Any = None, save: bool = False,
                      pa_convention: Any = None, *, response: Any = None,
                      target_coord: Any = None, nside: int | None = None,
                      scheme: str | None = "ring", base: Any = None, earth_occ: bool = False,
                      use_livetime: bool = False) -> Histogram:
        """Dwell time of a fixed source over the spacecraft-frame sky (HEALPix map, s).

        Each interval's duration (or live time) is spread over the four pixels nearest to
        the source direction at the interval start (bilinear weights), as in cosipy.
        Both cosipy signatures work: ``get_dwell_map(response=path)`` after
        :meth:`get_target_in_sc_frame` (cosipy <= 0.3) and
        ``get_dwell_map(coord, nside=1, scheme='ring')`` (cosipy 0.4).

        Parameters
        ----------
        target : SkyCoord, or a response (path, FullDetectorResponse, HealpixAxis)
            Positional: the source (as ``target_coord``), or the response (as ``response``).
        src_path : SkyCoord, optional
            The source path in the spacecraft frame, one position per stamp; default the
            path of ``target_coord``, else the last :meth:`get_target_in_sc_frame`.
        save, pa_convention
            cosipy's options; only their defaults (False, None) are supported.
        response : str, Path, FullDetectorResponse or HealpixAxis, optional
            Its ``NuLambda`` axis gives the pixels (a path is opened and closed here).
        target_coord : SkyCoord, optional
            The source.
        nside, scheme : int, str
            Map resolution when no ``response`` (or ``base``) is given.
        base : HealpixAxis, optional
            cosipy 0.4's name for the pixelisation.
        earth_occ : bool
            Drop intervals that start with the source below the Earth limb (needs
            ``target_coord``).
        use_livetime : bool
            Weight by live time instead of duration.

        Raises
        ------
        DataError
            No source path, a path of another length, or no pixelisation.
        ParameterError
            ``save=True`` or a polarization convention.
        """
        if isinstance(target, SkyCoord) and target_coord is None:
            target_coord = target
        elif target is not None:
            if response is not None:
                raise DataError("get_dwell_map: the response is given twice (positionally "
                                "and as response=); give it once")
            response = target
        _refuse_save(save, "get_dwell_map", "dwell_map.write(filename)")
        if pa_convention is not None:
            raise ParameterError(f"get_dwell_map: pa_convention={pa_convention!r}; "
                                 "probdeconv's dwell map has no polarization axis. Leave "
                                 "pa_convention out.")
        axis = local_axis(response if response is not None else base, nside, scheme)
        w = self.interval_weights(use_livetime)
        if target_coord is not None and src_path is None:
            d = galactic_direction(target_coord)
            theta, phi = geo.local_angles(self.attitude_matrices()[:-1], d)
            theta, phi = theta[:, 0], phi[:, 0]
            if earth_occ:
                w = w * self.earth_visible(d)[:-1, 0]
        else:
            path = src_path if src_path is not None else self.src_path_skycoord
            if path is None:
                raise DataError("get_dwell_map: no source path; call "
                                "get_target_in_sc_frame(name, coord) first, or give "
                                "target_coord= or src_path=")
            if earth_occ:
                raise DataError("get_dwell_map: earth_occ=True needs target_coord= (the "
                                "source's sky position), not only its spacecraft-frame path")
            theta, phi = path_angles(path, len(self))
            theta, phi = theta[:-1], phi[:-1]
        return dwell_map(axis, theta, phi, w)


def _refuse_save(save: bool, method: str, how: str) -> None:
    """cosipy's ``save=True`` writes into the working directory; probdeconv leaves it to you."""
    if save:
        raise ParameterError(f"{method}: save=True is not supported (it would write into the "
                             f"working directory); save the result yourself: {how}.")
