"""A minimal survey-mode orientation, its spacecraft-attitude bins, and their CCM.

The spacecraft flies a circular low-Earth orbit (period ``orbit_period``, inclination
``inclination``; the node precesses at ``precession_rate``).  Its z axis points to the
zenith, rocked by ``rocking_angle`` towards the orbit normal on even orbits and away
from it on odd ones; its x axis points along the velocity.  The orientation is sampled
``n_samples`` times, evenly over ``duration``, each sample standing for ``duration /
n_samples`` seconds, and converted from equatorial (ICRS) to galactic coordinates.

Samples are binned into spacecraft-attitude (ScAtt) bins by the galactic HEALPix pixel
of their z axis (``scatt_nside``) and x axis (``scatt_x_nside``).  The coordinate-
conversion matrix ``C[ScAtt, lb, NuLambda]`` (s) of a bin takes each model pixel
direction into the frame of the bin's averaged attitude and spreads the bin's dwell
time over the four ``NuLambda`` pixels of :func:`healpy.get_interp_weights`.

Earth occultation is not modelled (the effective area already vanishes beyond the
``horizon`` zenith angle of the instrument).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import astropy.units as u
import healpy as hp
import numpy as np
import sparse
from astropy.coordinates import ICRS, Galactic, SkyCoord
from histpy import Axes, Axis, HealpixAxis

from probdeconv.io.histpy_h5 import SPACECRAFT_FRAME
from probdeconv.shell.response import CoordsysConversionMatrix

from .config import DAY, SimulationConfig

__all__ = ["Attitudes", "ScAttBins", "survey_attitudes", "bin_attitudes",
           "coordsys_conversion_matrix"]

logger = logging.getLogger(__name__)


@functools.cache
def _icrs_to_galactic() -> np.ndarray:
    """3 × 3 rotation taking ICRS unit vectors to galactic ones."""
    basis = SkyCoord(x=[1.0, 0.0, 0.0], y=[0.0, 1.0, 0.0], z=[0.0, 0.0, 1.0], frame=ICRS,
                     representation_type="cartesian")
    gal = basis.transform_to(Galactic()).cartesian
    return np.array([gal.x.value, gal.y.value, gal.z.value])  # columns: images of e_i


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Attitudes:
    """Sampled orientation: times (s) and spacecraft z and x axes (galactic unit vectors)."""

    time: np.ndarray  # [N]
    z: np.ndarray  # [N, 3]
    x: np.ndarray  # [N, 3]
    dwell: float  # s per sample


@dataclasses.dataclass(frozen=True)
class ScAttBins:
    """Spacecraft-attitude bins: dwell time and averaged attitude of each bin.

    ``z`` and ``x`` are the averaged (re-orthonormalised) axes, galactic unit vectors;
    ``z_pixel`` and ``x_pixel`` the HEALPix pixels (galactic, ring) that define a bin.
    """

    dwell: np.ndarray  # [T] s
    z: np.ndarray  # [T, 3]
    x: np.ndarray  # [T, 3]
    z_pixel: np.ndarray  # [T]
    x_pixel: np.ndarray  # [T]
    n_samples: np.ndarray  # [T]

    @property
    def n_bins(self) -> int:
        """Number of ScAtt bins."""
        return int(self.dwell.size)

    def to_dict(self) -> dict[str, Any]:
        """YAML-safe table: dwell (s), pixels and averaged z / x pointings (l, b in deg)."""
        zl, zb = hp.vec2ang(self.z, lonlat=True)
        xl, xb = hp.vec2ang(self.x, lonlat=True)
        return {"dwell_s": self.dwell.tolist(), "z_pixel": self.z_pixel.tolist(),
                "x_pixel": self.x_pixel.tolist(), "n_samples": self.n_samples.tolist(),
                "z_l": zl.tolist(), "z_b": zb.tolist(), "x_l": xl.tolist(),
                "x_b": xb.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScAttBins:
        """Inverse of :meth:`to_dict`."""
        z = np.array(hp.ang2vec(np.asarray(d["z_l"]), np.asarray(d["z_b"]), lonlat=True))
        x = np.array(hp.ang2vec(np.asarray(d["x_l"]), np.asarray(d["x_b"]), lonlat=True))
        return cls(np.asarray(d["dwell_s"], dtype=np.float64), z.reshape(-1, 3),
                   x.reshape(-1, 3), np.asarray(d["z_pixel"], dtype=np.int64),
                   np.asarray(d["x_pixel"], dtype=np.int64),
                   np.asarray(d["n_samples"], dtype=np.int64))


def survey_attitudes(cfg: SimulationConfig) -> Attitudes:
    """Sample the rocking zenith-pointing survey of ``cfg``.

    Examples
    --------
    >>> att = survey_attitudes(SimulationConfig(n_samples=1000))
    >>> att.z.shape, bool(np.allclose(np.sum(att.z * att.x, axis=1), 0.0))
    ((1000, 3), True)
    """
    n = cfg.n_samples
    dwell = cfg.duration / n
    t = (np.arange(n) + 0.5) * dwell
    inc = np.deg2rad(cfg.inclination)
    node = np.deg2rad(cfg.precession_rate) * t / DAY  # right ascension of the node
    normal = np.stack([np.sin(inc) * np.sin(node), -np.sin(inc) * np.cos(node),
                       np.full(n, np.cos(inc))], axis=1)  # orbit normal (ICRS)
    e_node = np.stack([np.cos(node), np.sin(node), np.zeros(n)], axis=1)
    e_perp = np.cross(normal, e_node)
    phase = 2 * np.pi * t / cfg.orbit_period
    zenith = np.cos(phase)[:, None] * e_node + np.sin(phase)[:, None] * e_perp
    velocity = np.cross(normal, zenith)
    sign = np.where(np.floor(t / cfg.orbit_period) % 2 == 0, 1.0, -1.0)[:, None]
    rock = np.deg2rad(cfg.rocking_angle)
    z = np.cos(rock) * zenith + sign * np.sin(rock) * normal  # still orthogonal to velocity
    rot = _icrs_to_galactic()
    return Attitudes(time=t, z=_unit(z @ rot.T), x=_unit(velocity @ rot.T), dwell=dwell)


def bin_attitudes(att: Attitudes, nside_z: int, nside_x: int) -> ScAttBins:
    """Group samples by the HEALPix pixels of their z and x axes (cosipy's ScAtt binning).

    Examples
    --------
    >>> cfg = SimulationConfig(n_samples=2000)
    >>> bins = bin_attitudes(survey_attitudes(cfg), 2, 1)
    >>> bool(np.isclose(bins.dwell.sum(), cfg.duration))
    True
    """
    zpix = hp.vec2pix(nside_z, *att.z.T)
    xpix = hp.vec2pix(nside_x, *att.x.T)
    key = zpix.astype(np.int64) * hp.nside2npix(nside_x) + xpix
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    n_bins = uniq.size
    z = np.zeros((n_bins, 3))
    x = np.zeros((n_bins, 3))
    np.add.at(z, inverse, att.z)
    np.add.at(x, inverse, att.x)
    z = _unit(z)
    x = _unit(x - np.sum(x * z, axis=1, keepdims=True) * z)
    return ScAttBins(dwell=counts * att.dwell, z=z, x=x,
                     z_pixel=uniq // hp.nside2npix(nside_x),
                     x_pixel=uniq % hp.nside2npix(nside_x), n_samples=counts)


def coordsys_conversion_matrix(bins: ScAttBins, nside_model: int,
                               nside_local: int) -> CoordsysConversionMatrix:
    """Sparse CCM ``[ScAtt, lb, NuLambda]`` (s): 4 interpolation weights × dwell per row.

    Examples
    --------
    >>> cfg = SimulationConfig(n_samples=2000)
    >>> bins = bin_attitudes(survey_attitudes(cfg), 2, 1)
    >>> ccm = coordsys_conversion_matrix(bins, 2, 2)
    >>> per_bin = ccm.contents.sum(axis=(1, 2)).todense()      # sparse contents (COO)
    >>> ccm.axes.labels.tolist(), bool(np.allclose(per_bin, 48 * bins.dwell))
    (['ScAtt', 'lb', 'NuLambda'], True)
    """
    n_t, npix = bins.n_bins, hp.nside2npix(nside_model)
    gal = np.array(hp.pix2vec(nside_model, np.arange(npix)))  # [3, lb]
    y = np.cross(bins.z, bins.x)
    # [T, 3] x [3, lb] -> [T, lb]: components of each model direction in each bin's frame
    lx, ly, lz = bins.x @ gal, y @ gal, bins.z @ gal
    theta = np.arccos(np.clip(lz, -1.0, 1.0))
    phi = np.arctan2(ly, lx) % (2 * np.pi)
    pix, weights = hp.get_interp_weights(nside_local, theta.ravel(), phi.ravel())  # [4, T*lb]
    t_idx = np.repeat(np.arange(n_t), npix)
    l_idx = np.tile(np.arange(npix), n_t)
    coords = np.stack([np.broadcast_to(t_idx, pix.shape), np.broadcast_to(l_idx, pix.shape),
                       pix]).reshape(3, -1)
    values = (weights * bins.dwell[t_idx]).ravel()
    keep = values > 0
    axes = Axes([Axis(np.arange(n_t + 1), label="ScAtt"),
                 HealpixAxis(nside=nside_model, scheme="ring", label="lb", coordsys="galactic"),
                 HealpixAxis(nside=nside_local, scheme="ring", label="NuLambda",
                             coordsys=SPACECRAFT_FRAME)], copy_axes=False)
    # (bin, model pixel, interpolation weight) rows can share a local pixel: COO sums them
    contents = sparse.COO(coords[:, keep], values[keep], shape=axes.shape)
    return CoordsysConversionMatrix(axes, contents=contents, unit=u.s, copy_contents=False)
