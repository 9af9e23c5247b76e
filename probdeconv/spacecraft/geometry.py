"""Vectorised sky geometry of a spacecraft attitude: rotations, local directions, Earth limb.

Conventions (those of cosipy and MEGAlib):

* Directions are given as galactic longitude/latitude ``(l, b)`` in degrees; unit vectors
  are ``(cos b cos l, cos b sin l, sin b)``.
* An attitude is the rotation matrix ``M`` whose columns are the spacecraft x-, y- and
  z-axes in galactic coordinates, ``y = z × x``.  A galactic direction ``d`` is seen in the
  spacecraft frame as ``Mᵀ d``.  Axes read from a file are not exactly orthogonal, and a
  midpoint or average of two attitudes is not either; like cosipy (``scoords.Attitude``)
  the matrix is turned into the nearest-by-Markley unit quaternion and back
  (:func:`attitude_matrices`).
* A local direction ``(θ, φ)`` is colatitude and longitude in the spacecraft frame; dwell
  times are spread over the four nearest HEALPix pixels with
  :func:`healpy.get_interp_weights` (bilinear interpolation).
* The Earth hides a direction ``d`` from a spacecraft at altitude ``h`` whose zenith (the
  direction away from the Earth centre) is ``e`` when ``d·e ≤ -sqrt(1 - (R/(R+h))²)``,
  i.e. when ``d`` lies within ``asin(R/(R+h))`` of the nadir; ``R`` = 6378 km.
"""

from __future__ import annotations

import logging

import healpy as hp
import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "EARTH_RADIUS_KM",
    "lonlat_to_vec",
    "vec_to_lonlat",
    "attitude_matrices",
    "matrix_to_quat",
    "quat_to_matrix",
    "matrix_axes_lonlat",
    "local_angles",
    "earth_visible",
    "limb_cos",
    "midpoint_lonlat",
    "healpix_directions",
    "slerp_matrices",
]

logger = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6378.0
_CHUNK = 1 << 18


def lonlat_to_vec(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Unit vectors ``(..., 3)`` of longitude/latitude in degrees."""
    lon = np.deg2rad(np.asarray(lon, dtype=np.float64))
    lat = np.deg2rad(np.asarray(lat, dtype=np.float64))
    c = np.cos(lat)
    return np.stack([c * np.cos(lon), c * np.sin(lon), np.sin(lat)], axis=-1)


def vec_to_lonlat(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in [0, 360) and latitude, degrees, of vectors ``(..., 3)`` (any length)."""
    v = np.asarray(v, dtype=np.float64)
    lon = np.rad2deg(np.arctan2(v[..., 1], v[..., 0]))
    lon = np.where(lon < 0, lon + 360.0, lon)
    lat = np.rad2deg(np.arctan2(v[..., 2], np.sqrt(v[..., 0] ** 2 + v[..., 1] ** 2)))
    return lon, lat


def attitude_matrices(x_lon: np.ndarray, x_lat: np.ndarray, z_lon: np.ndarray,
                      z_lat: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(N, 3, 3)`` (columns: spacecraft x, y, z) from x- and z-axes.

    The matrix ``[x, z × x, z]`` of the given axes is turned into a unit quaternion with
    Markley's method (the largest of the four quaternion-component estimates; F. L.
    Markley, J. Guid. Control Dyn. 31, 440, 2008) and back into a matrix.  This is what
    cosipy's ``scoords.Attitude.from_axes`` did through ``scipy.spatial.transform.Rotation``
    up to scipy 1.14 (newer scipy first orthogonalises by SVD, which moves the attitude of
    averaged axes by ~1e-7 rad); written out here so that results do not depend on the
    scipy version and agree with cosipy's stored CCMs to 1e-15.

    Parameters
    ----------
    x_lon, x_lat, z_lon, z_lat : array_like, shape (N,)
        Galactic longitude/latitude (deg) of the spacecraft x- and z-axes.

    Returns
    -------
    ndarray, shape (N, 3, 3)
        Proper rotations.

    Examples
    --------
    >>> m = attitude_matrices([0.0], [0.0], [0.0], [90.0])
    >>> np.allclose(m[0], np.eye(3))
    True
    """
    x_lon, x_lat, z_lon, z_lat = (np.asarray(a, dtype=np.float64).ravel()
                                  for a in (x_lon, x_lat, z_lon, z_lat))
    out = np.empty((x_lon.size, 3, 3))
    for s in range(0, x_lon.size, _CHUNK):  # chunks keep the temporaries small
        e = min(s + _CHUNK, x_lon.size)
        x = lonlat_to_vec(x_lon[s:e], x_lat[s:e])
        z = lonlat_to_vec(z_lon[s:e], z_lat[s:e])
        out[s:e] = quat_to_matrix(matrix_to_quat(np.stack([x, np.cross(z, x), z], axis=-1)))
    return out


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(N, 4)`` (x, y, z, w) of nearly orthogonal matrices (Markley).

    Of the four estimates of the quaternion, the one with the largest diagonal term is
    taken (as scipy's ``Rotation.from_matrix`` up to 1.14), then normalised.
    """
    m = np.asarray(m, dtype=np.float64).reshape(-1, 3, 3)
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    trace = m00 + m11 + m22
    choice = np.argmax(np.stack([m00, m11, m22, trace], axis=-1), axis=1)
    q = np.empty((m.shape[0], 4))
    # choice 3 (trace largest)
    q[:, 0] = m[:, 2, 1] - m[:, 1, 2]
    q[:, 1] = m[:, 0, 2] - m[:, 2, 0]
    q[:, 2] = m[:, 1, 0] - m[:, 0, 1]
    q[:, 3] = 1 + trace
    for i in range(3):
        sel = choice == i
        if not sel.any():
            continue
        j, k = (i + 1) % 3, (i + 2) % 3
        ms = m[sel]
        qi = np.empty((ms.shape[0], 4))
        qi[:, i] = 1 - trace[sel] + 2 * ms[:, i, i]
        qi[:, j] = ms[:, j, i] + ms[:, i, j]
        qi[:, k] = ms[:, k, i] + ms[:, i, k]
        qi[:, 3] = ms[:, k, j] - ms[:, j, k]
        q[sel] = qi
    norm = np.sqrt(q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1] + q[:, 2] * q[:, 2]
                   + q[:, 3] * q[:, 3])
    return q / norm[:, None]


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(N, 3, 3)`` of unit quaternions ``(N, 4)`` (x, y, z, w)."""
    x, y, z, w = (q[:, i] for i in range(4))
    x2, y2, z2, w2 = x * x, y * y, z * z, w * w
    xy, zw, xz, yw, yz, xw = x * y, z * w, x * z, y * w, y * z, x * w
    m = np.empty((q.shape[0], 3, 3))
    m[:, 0, 0] = x2 - y2 - z2 + w2
    m[:, 1, 0] = 2 * (xy + zw)
    m[:, 2, 0] = 2 * (xz - yw)
    m[:, 0, 1] = 2 * (xy - zw)
    m[:, 1, 1] = -x2 + y2 - z2 + w2
    m[:, 2, 1] = 2 * (yz + xw)
    m[:, 0, 2] = 2 * (xz + yw)
    m[:, 1, 2] = 2 * (yz - xw)
    m[:, 2, 2] = -x2 - y2 + z2 + w2
    return m


def matrix_axes_lonlat(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_lon, x_lat, z_lon, z_lat)`` in degrees of the columns of attitude matrices."""
    xl, xb = vec_to_lonlat(m[..., :, 0])
    zl, zb = vec_to_lonlat(m[..., :, 2])
    return xl, xb, zl, zb


def midpoint_lonlat(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arithmetic midpoints of consecutive (lon, lat) pairs, as cosipy's exposure table.

    The longitude difference is taken the short way round (cosipy averages the raw
    values, which puts the midpoint of 359.9° and 0.1° at 180°); otherwise the result is
    cosipy's bit for bit.
    """
    l1, l2 = lon[:-1], lon[1:]
    l2 = np.where(l2 - l1 > 180.0, l2 - 360.0, np.where(l1 - l2 > 180.0, l2 + 360.0, l2))
    mid = 0.5 * (l1 + l2)
    mid = np.where(mid < 0, mid + 360.0, np.where(mid >= 360.0, mid - 360.0, mid))
    return mid, 0.5 * (lat[:-1] + lat[1:])


def local_angles(m: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colatitude and longitude (rad) in the spacecraft frame of galactic directions.

    Parameters
    ----------
    m : ndarray, shape (N, 3, 3)
        Attitude matrices.
    d : ndarray, shape (P, 3)
        Galactic unit vectors.

    Returns
    -------
    theta, phi : ndarray, shape (N, P)
    """
    # [N, gal, sc] x [P, gal] -> [N, P, sc]
    v = np.einsum("nik,pi->npk", m, d, optimize=False)
    theta = np.arctan2(np.sqrt(v[..., 0] ** 2 + v[..., 1] ** 2), v[..., 2])
    phi = np.arctan2(v[..., 1], v[..., 0])
    return theta, phi


def earth_visible(d: np.ndarray, zenith: np.ndarray, altitude_km: np.ndarray,
                  r_earth: float = EARTH_RADIUS_KM) -> np.ndarray:
    """Whether directions are above the Earth limb at each time.

    Parameters
    ----------
    d : ndarray, shape (P, 3)
        Galactic unit vectors of the directions.
    zenith : ndarray, shape (N, 3)
        Galactic unit vectors of the local zenith at the spacecraft.
    altitude_km : ndarray, shape (N,)
        Altitude above the Earth surface (km); negative values count as 0.

    Returns
    -------
    ndarray of bool, shape (N, P)
        True where the direction is not occulted.
    """
    # [N, 3] x [P, 3] -> [N, P]
    return zenith @ d.T > limb_cos(altitude_km, r_earth)[:, None]


def limb_cos(altitude_km: np.ndarray, r_earth: float = EARTH_RADIUS_KM) -> np.ndarray:
    """``-sqrt(1 - (R/(R+h))²)``: cosine of the zenith angle of the Earth limb."""
    alt = np.maximum(np.asarray(altitude_km, dtype=np.float64), 0.0)
    sin_limb = r_earth / (r_earth + alt)
    return -np.sqrt(np.maximum(1.0 - sin_limb**2, 0.0))


def healpix_directions(nside: int, nest: bool = False) -> np.ndarray:
    """Unit vectors ``(npix, 3)`` of the pixel centres (via lon/lat, as cosipy)."""
    lon, lat = hp.pix2ang(nside, np.arange(hp.nside2npix(nside)), nest=nest, lonlat=True)
    return lonlat_to_vec(lon, lat)


def slerp_matrices(m0: np.ndarray, m1: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation between rotation matrices, fraction ``f``."""
    q0 = Rotation.from_matrix(m0).as_quat()
    q1 = Rotation.from_matrix(m1).as_quat()
    dot = np.sum(q0 * q1, axis=-1)
    q1 = np.where(dot[:, None] < 0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    small = theta < 1e-9
    s = np.where(small, 1.0, np.sin(theta))
    w0 = np.where(small, 1 - f, np.sin((1 - f) * theta) / s)
    w1 = np.where(small, f, np.sin(f * theta) / s)
    return Rotation.from_quat(w0[:, None] * q0 + w1[:, None] * q1).as_matrix()
