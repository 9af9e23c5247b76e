"""Priors on the sky image as log-densities; gradients come from ``jax.grad``.

Each prior is a small NamedTuple (a pytree: its arrays are leaves, passed as arguments
to compiled code) with ``log_prob(image) -> scalar``.  The same objects serve MAP-RL's
prior filter (through :func:`grad_log_prior`) and the NumPyro model (as ``factor`` sites).

- :class:`GammaPrior`: ``(k − 1) Σ log(λ + eps) − Σ λ / θ`` (cosipy's gamma prior; flat for
  ``k = 1, θ = ∞``); MAP-RL folds it into the EM update in closed form.
- :class:`TSVPrior`: total squared variation on the HEALPix neighbour graph,
  ``−c Σ_j Σ_{n∈N(j)} Σ_e (λ_je − λ_ne)²`` with the 8 neighbours of
  ``healpy.get_all_neighbours`` (a missing neighbour counts as the pixel itself).
- :class:`EntropyPrior`: ``c Σ λ (1 − log(λ / m))`` with reference map ``m``.
- :class:`LogNormalPrior`: ``log λ ~ N(loc, scale²)`` per pixel (without its normalisation).

How they combine into the one log-posterior of both engines (MAP-EM and the NumPyro
model) is :mod:`probdeconv.forward.posterior`.

Examples
--------
>>> import jax.numpy as jnp
>>> tsv = TSVPrior.build(nside=1, coefficient=1.0)
>>> float(tsv.log_prob(jnp.arange(12.0)[:, None]))
-1176.0
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ParameterError

__all__ = ["GammaPrior", "TSVPrior", "EntropyPrior", "LogNormalPrior", "neighbour_table",
           "total_log_prior", "grad_log_prior"]

EPS = float(np.finfo(np.float64).eps)


@functools.lru_cache(maxsize=16)
def _neighbours(nside: int, nest: bool) -> np.ndarray:
    import healpy as hp

    npix = 12 * nside * nside
    nb = hp.get_all_neighbours(nside, np.arange(npix), nest=nest).T  # [pix, 8]
    return np.where(nb < 0, np.arange(npix)[:, None], nb).astype(np.int32)


def neighbour_table(nside: int, nest: bool = False) -> np.ndarray:
    """``[npix, 8]`` HEALPix neighbours, a missing one (−1) replaced by the pixel itself.

    Built once per ``(nside, nest)`` and cached.
    """
    if nside < 1 or nside & (nside - 1):
        raise ParameterError(f"nside: got {nside}; expected a power of 2 (1, 2, 4, ...).")
    return _neighbours(int(nside), bool(nest)).copy()


class GammaPrior(NamedTuple):
    """Independent gamma prior on each pixel: shape ``k``, scale ``theta`` (∞ allowed)."""

    k: float = 1.0
    theta: float = float("inf")

    def log_prob(self, image: jax.Array) -> jax.Array:
        return (self.k - 1.0) * jnp.sum(jnp.log(image + EPS)) - jnp.sum(image / self.theta)


class TSVPrior(NamedTuple):
    """Total squared variation between HEALPix neighbours, strength ``coefficient``."""

    coefficient: float
    neighbours: jax.Array  # [pix, 8] int

    @classmethod
    def build(cls, nside: int, coefficient: float, nest: bool = False) -> TSVPrior:
        return cls(float(coefficient), jnp.asarray(neighbour_table(nside, nest)))

    def log_prob(self, image: jax.Array) -> jax.Array:
        diff = image[:, None, :] - image[self.neighbours]  # [pix, 8, Ei]
        return -self.coefficient * jnp.sum(diff * diff)


class EntropyPrior(NamedTuple):
    """Maximum-entropy prior ``c Σ λ (1 − log(λ/m))`` relative to a reference map ``m``."""

    coefficient: float
    reference: jax.Array  # [pix, Ei] or scalar

    def log_prob(self, image: jax.Array) -> jax.Array:
        x = jnp.maximum(image, EPS)
        return self.coefficient * jnp.sum(x * (1.0 - jnp.log(x / self.reference)))


class LogNormalPrior(NamedTuple):
    """Independent log-normal prior per pixel, ``log λ ~ N(loc, scale²)``.

    ``log_prob`` is the density of ``λ`` *without* its normalising constant:
    ``Σ_j [−log λ_j − (log λ_j − loc_j)² / (2 scale_j²)]`` over the free pixels (``mask``;
    default all).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> float(LogNormalPrior(jnp.zeros((1, 1)), jnp.ones((1, 1))).log_prob(jnp.ones((1, 1))))
    -0.0
    """

    loc: jax.Array  # [lb, Ei]
    scale: jax.Array  # [lb, Ei]

    def log_prob(self, image: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        if mask is None:
            mask = jnp.ones(image.shape, dtype=bool)
        x = jnp.where(mask, image, 1.0)  # safe value where masked (no 0 · ∞ in gradients)
        z = (jnp.log(x) - self.loc) / self.scale
        return jnp.sum(jnp.where(mask, -jnp.log(x) - 0.5 * z * z, 0.0))


def total_log_prior(priors: Sequence, image: jax.Array) -> jax.Array:
    """Sum of ``log_prob`` over priors (0 for none)."""
    return sum((p.log_prob(image) for p in priors), jnp.zeros((), image.dtype))


def grad_log_prior(priors: Sequence, image: jax.Array) -> jax.Array:
    """``Σ_p ∇ log P_p(image)`` by automatic differentiation."""
    if not priors:
        return jnp.zeros_like(image)
    return jax.grad(lambda x: total_log_prior(priors, x))(image)
