"""A COSI-like Compton telescope response built from Compton kinematics.

For a photon of energy ``E`` from the spacecraft-frame direction ``ν`` (``NuLambda``)
that Compton-scatters by the angle ``φ``, the scattered photon leaves along a cone of
half-angle ``φ`` around ``ν``.  The response is the product of four factors:

``R[ν, Ei, Em, Phi, PsiChi] = A(θ_ν, Ei) · D(Em | Ei) · K(Phi | Ei) · G(PsiChi | ν, Phi)``

- ``A``: effective area (cm2), a log-parabola in energy times a zenith-angle factor that
  is linear in ``cos θ`` and reaches zero at ``horizon`` (beyond 90 deg: a wide field of
  view, as COSI's);
- ``D``: energy dispersion, a Gaussian photopeak (FWHM ∝ sqrt(E)) plus a flat tail of
  partly absorbed photons;
- ``K``: the Klein–Nishina distribution of the scatter angle, ``dσ/dΩ · 2π sin φ / σ``,
  integrated over each ``Phi`` bin (exactly; no sampling);
- ``G``: the cone in ``PsiChi``: a ring at angular distance ``φ`` (bin centre) from ``ν``
  with a Gaussian profile in the distance from the cone (width: the angular resolution
  measure and the bin width in quadrature), uniform in azimuth, cut to exactly zero
  beyond ``ring_cut`` widths, integrated over each ``PsiChi`` pixel on a finer HEALPix
  grid, and normalised to 1 over the sphere.

Nothing here is random.  The full response is written as a version-1 dense full
detector response by :func:`probdeconv.simulate.files.write_full_detector_response`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import astropy.units as u
import healpy as hp
import jax
import jax.numpy as jnp
import numpy as np
from histpy import Axes, Axis, HealpixAxis, Histogram
from scipy.special import ndtr, roots_legendre

from probdeconv.io.histpy_h5 import SPACECRAFT_FRAME

from .config import SimulationConfig

__all__ = [
    "ELECTRON_MASS",
    "CLASSICAL_ELECTRON_RADIUS",
    "klein_nishina",
    "klein_nishina_total",
    "phi_bin_fractions",
    "effective_area",
    "energy_dispersion",
    "response_axes",
    "ring_profiles",
    "build_response",
]

logger = logging.getLogger(__name__)

ELECTRON_MASS = 510.99895  # keV
CLASSICAL_ELECTRON_RADIUS = 2.8179403262e-13  # cm
_CHUNK = 64  # NuLambda pixels per block of the ring computation


def klein_nishina(phi: np.ndarray, energy: float) -> np.ndarray:
    """Klein–Nishina differential cross-section ``dσ/dΩ`` (cm2 sr-1).

    Parameters
    ----------
    phi : array_like
        Compton scatter angle (rad).
    energy : float
        Photon energy (keV).

    Examples
    --------
    >>> float(klein_nishina(0.0, 511.0) / CLASSICAL_ELECTRON_RADIUS**2)  # r_e² at φ = 0
    1.0
    """
    phi = np.asarray(phi, dtype=np.float64)
    ratio = 1.0 / (1.0 + energy / ELECTRON_MASS * (1.0 - np.cos(phi)))  # E'/E
    return 0.5 * CLASSICAL_ELECTRON_RADIUS**2 * ratio**2 * (ratio + 1.0 / ratio
                                                            - np.sin(phi) ** 2)


def klein_nishina_total(energy: float) -> float:
    """Total Klein–Nishina cross-section (cm2), closed form.

    Examples
    --------
    >>> round(klein_nishina_total(511.0) * 1e24, 4)  # barn
    0.2865
    """
    k = energy / ELECTRON_MASS
    log = np.log1p(2 * k)
    return float(2 * np.pi * CLASSICAL_ELECTRON_RADIUS**2 * (
        (1 + k) / k**2 * (2 * (1 + k) / (1 + 2 * k) - log / k) + log / (2 * k)
        - (1 + 3 * k) / (1 + 2 * k) ** 2))


def phi_bin_fractions(phi_edges_deg: np.ndarray, energy: float) -> np.ndarray:
    """Fraction of Compton scatters whose angle falls in each ``Phi`` bin.

    ``∫_bin dσ/dΩ · 2π sin φ dφ / σ_total`` by 24-point Gauss–Legendre quadrature per
    bin; the fractions sum to 1 when the bins cover [0, 180] deg.

    Examples
    --------
    >>> f = phi_bin_fractions(np.linspace(0, 180, 31), 511.0)
    >>> round(float(f.sum()), 10)
    1.0
    """
    edges = np.deg2rad(np.asarray(phi_edges_deg, dtype=np.float64))
    x, w = roots_legendre(24)
    lo, hi = edges[:-1, None], edges[1:, None]
    phi = 0.5 * (hi - lo) * x + 0.5 * (hi + lo)  # [Phi, node]
    dens = klein_nishina(phi, energy) * 2 * np.pi * np.sin(phi)
    return (0.5 * (hi - lo)[:, 0] * (dens @ w)) / klein_nishina_total(energy)


def effective_area(zenith_deg: np.ndarray, energy: np.ndarray,
                   cfg: SimulationConfig) -> np.ndarray:
    """Effective area (cm2) for zenith angles (deg, spacecraft frame) × energies (keV).

    Returns an array of shape ``(len(zenith_deg), len(energy))``: ``peak_effective_area``
    × ``exp(-ln²(E / peak_energy) / (2 w²))`` × ``clip((cos θ − cos θ_h) / (1 − cos θ_h),
    0, 1)`` with ``θ_h`` the ``horizon``.

    Examples
    --------
    >>> cfg = SimulationConfig()
    >>> a = effective_area([0.0, 90.0, 120.0], [511.0], cfg)
    >>> a[0, 0] == cfg.peak_effective_area, a[2, 0]
    (np.True_, np.float64(0.0))
    """
    zen = np.deg2rad(np.atleast_1d(np.asarray(zenith_deg, dtype=np.float64)))
    e = np.atleast_1d(np.asarray(energy, dtype=np.float64))
    cos_h = np.cos(np.deg2rad(cfg.horizon))
    angular = np.clip((np.cos(zen) - cos_h) / (1.0 - cos_h), 0.0, 1.0)
    spectral = np.exp(-np.log(e / cfg.peak_energy) ** 2 / (2 * cfg.area_energy_width**2))
    return cfg.peak_effective_area * np.outer(angular, spectral)


def energy_dispersion(ei_edges: np.ndarray, em_edges: np.ndarray,
                      cfg: SimulationConfig) -> np.ndarray:
    """Probability ``D[Ei, Em]`` that a photon of bin ``Ei`` is measured in bin ``Em``.

    The photon energy of an ``Ei`` bin is its geometric centre ``E``.  A fraction
    ``photopeak_fraction`` is measured with a Gaussian of FWHM ``energy_resolution ×
    sqrt(E / 511 keV)``; the rest is spread evenly over ``[tail_start · E, E]``.  Rows sum
    to less than 1 where the ``Em`` axis does not cover all of that.

    Examples
    --------
    >>> d = energy_dispersion(np.array([509.0, 513.0]), np.array([509.0, 513.0]),
    ...                       SimulationConfig())
    >>> 0.6 < float(d[0, 0]) < 0.8
    True
    """
    ei_edges = np.asarray(ei_edges, dtype=np.float64)
    em_edges = np.asarray(em_edges, dtype=np.float64)
    e = np.sqrt(ei_edges[:-1] * ei_edges[1:])[:, None]  # [Ei, 1]
    sigma = cfg.energy_resolution * np.sqrt(e / 511.0) / (2 * np.sqrt(2 * np.log(2)))
    cdf = ndtr((em_edges[None, :] - e) / sigma)  # [Ei, Em edges]
    peak = np.diff(cdf, axis=1)
    lo = cfg.tail_start * e
    clipped = np.clip(em_edges[None, :], lo, e)
    tail = np.diff(clipped, axis=1) / (e - lo)
    return cfg.photopeak_fraction * peak + (1.0 - cfg.photopeak_fraction) * tail


def response_axes(cfg: SimulationConfig) -> Axes:
    """Axes ``[NuLambda, Ei, Em, Phi, PsiChi]`` of the simulated response."""
    return Axes([
        HealpixAxis(nside=cfg.nside, scheme="ring", label="NuLambda", coordsys=SPACECRAFT_FRAME),
        Axis(np.asarray(cfg.energy_edges) * u.keV, label="Ei", scale="log"),
        Axis(np.asarray(cfg.em_edges) * u.keV, label="Em", scale="log"),
        Axis(np.linspace(0.0, cfg.phi_max, cfg.phi_bins + 1) * u.deg, label="Phi"),
        HealpixAxis(nside=cfg.data_nside, scheme="ring", label="PsiChi",
                    coordsys=SPACECRAFT_FRAME),
    ], copy_axes=False)


@functools.lru_cache(maxsize=8)
def _ring_block(cut: float, npix_d: int, ov: int) -> Callable[..., jax.Array]:
    """Jitted cone geometry of a block of source directions (see :func:`ring_profiles`)."""
    to_ring = jnp.asarray(hp.ring2nest(hp.npix2nside(npix_d), np.arange(npix_d)))

    @jax.jit
    def block(nu_vec: jax.Array, fine_vec: jax.Array, centres: jax.Array,
              widths: jax.Array) -> jax.Array:
        dist = jnp.arccos(jnp.clip(nu_vec @ fine_vec, -1.0, 1.0))  # [ν, 3] x [3, fine]

        def one_phi(phi_width: tuple[jax.Array, jax.Array]) -> jax.Array:
            phi, width = phi_width
            z = (dist - phi) / width
            w = jnp.where(jnp.abs(z) <= cut, jnp.exp(-0.5 * z * z), 0.0)  # [ν, fine]
            w = w / w.sum(axis=1, keepdims=True)
            # fine nested pixels -> parent PsiChi pixel (nested blocks) -> ring order
            return w.reshape(w.shape[0], npix_d, ov * ov).sum(axis=2)[:, to_ring]

        return jax.lax.map(one_phi, (centres, widths))  # -> [Phi, ν, PsiChi]

    return block


def ring_profiles(cfg: SimulationConfig, rows: np.ndarray | None = None) -> np.ndarray:
    """Cone geometry ``G[ν, Phi, PsiChi]``: each ``(ν, Phi)`` row sums to 1 over PsiChi.

    Parameters
    ----------
    cfg : SimulationConfig
        Binning, ``arm_sigma``, ``ring_cut`` and ``psichi_oversampling``.
    rows : array of int, optional
        ``NuLambda`` pixels (ring scheme) to compute; the others stay zero.  Default all.

    Examples
    --------
    >>> g = ring_profiles(SimulationConfig(nside=1, phi_bins=6))
    >>> g.shape, bool(np.allclose(g.sum(axis=2), 1.0))
    ((12, 6, 12), True)
    """
    nside_d, ov = cfg.data_nside, cfg.psichi_oversampling
    npix_d, npix_v = hp.nside2npix(nside_d), hp.nside2npix(cfg.nside)
    fine = nside_d * ov
    fine_vec = np.array(hp.pix2vec(fine, np.arange(hp.nside2npix(fine)), nest=True))
    nu_vec = np.array(hp.pix2vec(cfg.nside, np.arange(npix_v))).T  # [ν, 3]
    edges = np.deg2rad(np.linspace(0.0, cfg.phi_max, cfg.phi_bins + 1))
    centres = 0.5 * (edges[1:] + edges[:-1])
    widths = np.sqrt(np.deg2rad(cfg.arm_sigma) ** 2 + np.diff(edges) ** 2 / 12.0)
    rows = np.arange(npix_v) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.zeros((npix_v, cfg.phi_bins, npix_d))
    if rows.size == 0:
        return out
    block = _ring_block(float(cfg.ring_cut), npix_d, ov)
    size = min(_CHUNK, rows.size)
    padded = np.concatenate([rows, np.repeat(rows[-1:], (-rows.size) % size)])
    for start in range(0, padded.size, size):  # equal blocks: one compilation
        idx = padded[start:start + size]
        part = np.asarray(block(nu_vec[idx], fine_vec, centres, widths))  # [Phi, ν, PsiChi]
        out[idx] = part.transpose(1, 0, 2)
    return out


def build_response(cfg: SimulationConfig) -> Histogram:
    """Full detector response ``[NuLambda, Ei, Em, Phi, PsiChi]`` in cm2 (dense).

    Examples
    --------
    >>> rsp = build_response(SimulationConfig(nside=1, phi_bins=6))
    >>> rsp.axes.labels.tolist(), rsp.unit
    (['NuLambda', 'Ei', 'Em', 'Phi', 'PsiChi'], Unit("cm2"))
    """
    axes = response_axes(cfg)
    zenith, _ = hp.pix2ang(cfg.nside, np.arange(axes["NuLambda"].nbins))
    ei = axes["Ei"].centers.to_value(u.keV)
    area = effective_area(np.rad2deg(zenith), ei, cfg)  # [ν, Ei]
    seen = np.flatnonzero(area.max(axis=1) > 0)
    disp = energy_dispersion(cfg.energy_edges, cfg.em_edges, cfg)  # [Ei, Em]
    phi_edges = axes["Phi"].edges.to_value(u.deg)
    kn = np.array([phi_bin_fractions(phi_edges, e) for e in ei])  # [Ei, Phi]
    geometry = ring_profiles(cfg, seen)  # [ν, Phi, PsiChi]
    # [ν, Ei] x [Ei, Em] x [Ei, Phi] -> [ν, Ei, Em, Phi]
    scale = area[:, :, None, None] * disp[None, :, :, None] * kn[None, :, None, :]
    # [ν, Ei, Em, Phi] x [ν, Phi, PsiChi] -> [ν, Ei, Em, Phi, PsiChi]
    contents = scale[..., None] * geometry[:, None, None, :, :]
    logger.info("simulated response %s: %.1f%% of the bins are zero",
                tuple(contents.shape), 100.0 * (1.0 - np.count_nonzero(contents)
                                                / contents.size))
    return Histogram(axes, contents=contents, unit=u.cm**2, copy_contents=False)
