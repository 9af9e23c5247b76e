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

__all__ = ["GammaPrior", "TSVPrior", "EntropyPrior", "neighbour_table", "total_log_prior",
           "grad_log_prior", "build_priors"]

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


def total_log_prior(priors: Sequence, image: jax.Array) -> jax.Array:
    """Sum of ``log_prob`` over priors (0 for none)."""
    return sum((p.log_prob(image) for p in priors), jnp.zeros((), image.dtype))


def grad_log_prior(priors: Sequence, image: jax.Array) -> jax.Array:
    """``Σ_p ∇ log P_p(image)`` by automatic differentiation."""
    if not priors:
        return jnp.zeros_like(image)
    return jax.grad(lambda x: total_log_prior(priors, x))(image)


def build_priors(prior_parameters: dict | None, *, nside: int, nest: bool = False,
                 model_unit_to_flux: float = 1.0) -> dict:
    """Priors other than gamma from a parameter tree ``{TSV: {coefficient}, entropy: {...}}``.

    Returns ``{name: prior}``; ``gamma`` is handled by the EM update itself.
    """
    out = {}
    for name, par in (prior_parameters or {}).items():
        if name == "gamma":
            continue
        par = dict(par or {})
        if "coefficient" not in par:
            raise ParameterError(f"deconvolution:parameter:prior:{name}:coefficient is "
                                 "missing; give a number, e.g. coefficient: 1.0e+6.")
        c = float(par["coefficient"])
        if name == "TSV":
            out[name] = TSVPrior.build(nside, c, nest)
        elif name == "entropy":
            ref = par.get("reference", 1.0)
            factor = model_unit_to_flux
            if isinstance(ref, dict):
                if ref.get("unit") is not None:
                    import astropy.units as u

                    factor = float(u.Unit(ref["unit"]).to("cm-2 s-1 sr-1"))
                ref = ref.get("value", 1.0)
            out[name] = EntropyPrior(c, jnp.asarray(float(ref) * factor))
        else:
            raise ParameterError(f"deconvolution:parameter:prior:{name}: unknown prior; valid "
                                 "choices: ['TSV', 'entropy', 'gamma'].")
    return out
