"""A log-normal field prior on the sphere whose angular power spectrum is learnt.

The image of energy bin ``e`` is ``λ_e = exp(offset_e + f_e)`` with ``f_e`` a Gaussian
field on the sphere, isotropic, with angular power spectrum

    C_ℓ = σ² · 4π (ℓ+1)^(−s) / Σ_{ℓ'=1}^{ℓmax} (2ℓ'+1)(ℓ'+1)^(−s),      1 ≤ ℓ ≤ ℓmax,

so that ``σ`` (the *amplitude*) is the pixel standard deviation of ``f`` (in ln flux) and
``s`` (the *slope*) alone sets its smoothness (large ``s``: power on large scales).  The
monopole is left to ``offset``.  Everything is written in standardised (whitened)
coordinates, each ``N(0, 1)`` a priori:

- ``ξ [n_alm, Ei]``: ``f_e = Y (√C ⊙ ξ_e)`` with ``Y [npix, n_alm]`` the real spherical
  harmonics at the pixel centres (:func:`real_harmonics`, dense: NSIDE ≤ 16);
- ``ζ_o [Ei]``: ``offset = offset_loc + offset_scale ζ_o`` (ln flux, ``cm-2 s-1 sr-1``);
- ``ζ_a``: ``ln σ = amplitude_loc + amplitude_scale ζ_a`` (log-normal amplitude);
- ``ζ_s``: ``s = slope_loc + slope_scale ζ_s`` (normal slope).

The energy bins have independent fields ``ξ_e`` and offsets, and share ``σ`` and ``s``.
The flat vector of these coordinates (``[ξ.ravel(), ζ_o, ζ_a, ζ_s]``, length
:meth:`FieldPrior.size`) is what the samplers of :mod:`probdeconv.inference.field_model`
move; its prior is ``N(0, I)``.  ``Y`` is a pytree leaf of :class:`FieldPrior`, an
argument of compiled code (never a closed-over constant).

Examples
--------
>>> import numpy as np, jax.numpy as jnp
>>> prior = build_field(nside=1, n_energy=1, offset_loc=0.0)
>>> prior.harmonics.shape, prior.size          # ℓ = 1, 2: 3 + 5 harmonics; + 3 hypers
((12, 8), 11)
>>> img = field_image(jnp.zeros(prior.size), prior)
>>> img.shape, float(img[0, 0])                # ξ = 0, ζ_o = 0: exp(offset_loc)
((12, 1), 1.0)
"""

from __future__ import annotations

import dataclasses
import functools
import math

import healpy as hp
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import sph_harm_y

from ..errors import ParameterError

__all__ = ["FieldPrior", "build_field", "real_harmonics", "field_spectrum", "field_parts",
           "field_hyper", "field_log_flux", "field_image", "MAX_FIELD_NSIDE"]

MAX_FIELD_NSIDE = 16
"""Largest NSIDE of the dense harmonic matrix (3072 pixels x 2303 harmonics at ℓmax 47)."""


@functools.lru_cache(maxsize=8)
def _harmonics(nside: int, lmax: int, nest: bool) -> np.ndarray:
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside * nside), nest=nest)
    cols = []
    for ell in range(1, lmax + 1):
        for m in range(-ell, ell + 1):
            y = sph_harm_y(ell, abs(m), theta, phi)  # complex Y_ℓ^|m|(θ, φ)
            if m == 0:
                cols.append(y.real)
            elif m > 0:
                cols.append(math.sqrt(2.0) * (-1) ** m * y.real)
            else:
                cols.append(math.sqrt(2.0) * (-1) ** m * y.imag)
    return np.stack(cols, axis=1)


def real_harmonics(nside: int, lmax: int, nest: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(Y [npix, n_alm], ell [n_alm])``: real spherical harmonics ``1 ≤ ℓ ≤ lmax`` at the
    HEALPix pixel centres (orthonormal on the sphere; ``n_alm = (lmax+1)² − 1``).

    They satisfy the addition theorem ``Σ_m Y_ℓm(p) Y_ℓm(q) = (2ℓ+1)/(4π) P_ℓ(cos γ_pq)``
    (tested), so ``Y diag(C_ℓ) Yᵀ`` is the covariance of an isotropic field.

    Raises
    ------
    ParameterError
        NSIDE not a power of 2 or above :data:`MAX_FIELD_NSIDE`, or ``lmax < 1``.
    """
    nside, lmax = int(nside), int(lmax)
    if nside < 1 or nside & (nside - 1) or nside > MAX_FIELD_NSIDE:
        raise ParameterError(f"field prior: nside {nside}; expected a power of 2 up to "
                             f"{MAX_FIELD_NSIDE} (the harmonic matrix is dense); use a "
                             "coarser image or the TSV prior.")
    if lmax < 1:
        raise ParameterError(f"field prior: lmax {lmax}; expected an integer >= 1 (default "
                             "3 NSIDE - 1).")
    ell = np.concatenate([np.full(2 * l + 1, l) for l in range(1, lmax + 1)]).astype(float)
    return _harmonics(nside, lmax, bool(nest)).copy(), ell


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FieldPrior:
    """The field prior's arrays and hyper-prior numbers (a pytree; see the module docstring).

    Build it with :func:`build_field`.
    """

    harmonics: jax.Array  # [npix, n_alm] real Y_ℓm at pixel centres
    ell: jax.Array  # [n_alm] degree of each harmonic
    offset_loc: jax.Array  # [Ei] prior mean of the ln-flux offset
    offset_scale: jax.Array  # scalar, its standard deviation
    amplitude_loc: jax.Array  # scalar, ln of the median amplitude σ
    amplitude_scale: jax.Array  # scalar, standard deviation of ln σ
    slope_loc: jax.Array  # scalar, prior mean of the slope
    slope_scale: jax.Array  # scalar, its standard deviation
    n_energy: int = dataclasses.field(default=1, metadata=dict(static=True))

    @property
    def n_alm(self) -> int:
        return int(self.harmonics.shape[1])

    @property
    def n_pix(self) -> int:
        return int(self.harmonics.shape[0])

    @property
    def size(self) -> int:
        """Length of the standardised vector: ``n_alm · Ei + Ei + 2``."""
        return self.n_alm * self.n_energy + self.n_energy + 2


def build_field(nside: int, n_energy: int, *, lmax: int | None = None, nest: bool = False,
                offset_loc=0.0, offset_scale: float = 3.0, amplitude: float = 1.0,
                amplitude_scale: float = 1.0, slope: float = 3.0, slope_scale: float = 1.5,
                dtype=np.float64) -> FieldPrior:
    """A :class:`FieldPrior` on a HEALPix grid.

    Parameters
    ----------
    nside, nest
        The image's grid (NSIDE ≤ :data:`MAX_FIELD_NSIDE`).
    n_energy
        Energy bins (one independent field each; amplitude and slope shared).
    lmax
        Largest degree (default ``3 nside − 1``).
    offset_loc, offset_scale
        Prior mean (scalar or ``[Ei]``) and standard deviation of the ln-flux offset
        (flux in ``cm-2 s-1 sr-1``).
    amplitude, amplitude_scale
        Median of the amplitude ``σ`` (pixel standard deviation of the ln-flux field) and
        standard deviation of ``ln σ``.
    slope, slope_scale
        Prior mean and standard deviation of the slope ``s`` of ``C_ℓ ∝ (ℓ+1)^(−s)``.

    Raises
    ------
    ParameterError
        A scale or the amplitude not finite and > 0, a non-finite location.
    """
    lmax = 3 * int(nside) - 1 if lmax is None else int(lmax)
    y, ell = real_harmonics(nside, lmax, nest)
    n_energy = int(n_energy)
    loc = np.broadcast_to(np.asarray(offset_loc, dtype=np.float64), (n_energy,))
    for name, value in (("offset_scale", offset_scale), ("amplitude", amplitude),
                        ("amplitude_scale", amplitude_scale), ("slope_scale", slope_scale)):
        if not (math.isfinite(float(value)) and float(value) > 0):
            raise ParameterError(f"field prior: {name} = {value!r}; expected a finite number "
                                 "> 0.")
    if not (np.all(np.isfinite(loc)) and math.isfinite(float(slope))):
        raise ParameterError("field prior: offset and slope locations must be finite.")

    def arr(v):
        return jnp.asarray(v, dtype=dtype)

    return FieldPrior(arr(y), arr(ell), arr(loc), arr(offset_scale), arr(math.log(amplitude)),
                      arr(amplitude_scale), arr(slope), arr(slope_scale), n_energy)


def field_spectrum(ell: jax.Array, amplitude: jax.Array, slope: jax.Array) -> jax.Array:
    """``C_ℓ`` per harmonic (see the module docstring): pixel variance ``amplitude²``.

    ``ell`` lists each harmonic's degree (every ``m``), so ``Σ C_ℓ(a) / 4π = amplitude²``.
    """
    shape = (ell + 1.0) ** (-slope)
    return amplitude**2 * 4.0 * jnp.pi * shape / jnp.sum(shape)


def field_parts(x: jax.Array, prior: FieldPrior):
    """``(ξ [n_alm, Ei], ζ_o [Ei], ζ_a, ζ_s)`` of the flat standardised vector."""
    n = prior.n_alm * prior.n_energy
    xi = x[:n].reshape(prior.n_alm, prior.n_energy)
    return xi, x[n:n + prior.n_energy], x[n + prior.n_energy], x[n + prior.n_energy + 1]


def field_hyper(x: jax.Array, prior: FieldPrior):
    """``(offset [Ei], amplitude, slope)`` at the standardised vector ``x``."""
    _, zo, za, zs = field_parts(x, prior)
    return (prior.offset_loc + prior.offset_scale * zo,
            jnp.exp(prior.amplitude_loc + prior.amplitude_scale * za),
            prior.slope_loc + prior.slope_scale * zs)


def field_log_flux(x: jax.Array, prior: FieldPrior) -> jax.Array:
    """``ln λ [npix, Ei] = offset + Y (√C ⊙ ξ)`` at the standardised vector ``x``."""
    xi = field_parts(x, prior)[0]
    offset, amplitude, slope = field_hyper(x, prior)
    root = jnp.sqrt(field_spectrum(prior.ell, amplitude, slope))  # [n_alm]
    # [npix, n_alm] x [n_alm, Ei] -> [npix, Ei]
    return offset[None, :] + prior.harmonics @ (root[:, None] * xi)


def field_image(x: jax.Array, prior: FieldPrior) -> jax.Array:
    """The image ``λ [npix, Ei]`` (flux ``cm-2 s-1 sr-1``) at the standardised vector ``x``."""
    return jnp.exp(field_log_flux(x, prior))
