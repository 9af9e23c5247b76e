"""Matrix-free curvature: Fisher-vector and log-space precision-vector products.

The Laplace precision of :mod:`.fisher` is ``F + H_p`` in flux (``F = Jᵀ diag(w) J`` the
Fisher information of the forward model, ``H_p = −∇² log p`` the priors' Hessian), and

    H_u = D (F + H_p) D + diag(c),     D = diag(T'(u)),

in the log space of :mod:`.latent` (:func:`~.latent.log_space_precision`).  Here neither is
formed: a product ``F v`` is one forward projection ``J v`` (:func:`jax.linearize` of
:func:`probdeconv.forward.expected_counts`) and one back projection ``Jᵀ (w ⊙ J v)`` (its
transpose), summed over datasets; ``H_p v`` a Hessian-vector product of the log-prior.
A block of vectors goes through one compiled call (``vmap``: the response is read once per
block, which is what makes blocks cheaper per vector than single products on a CPU).

- :func:`fisher_products`: ``(F + H_p) V`` in flux, ``θ = (λ_free, b_free)``;
- :func:`log_precision_products`: ``H_u V`` (optionally whitened, ``S H_u S V``);
- :func:`log_hvp` builds the product inside other compiled code (the low-rank Laplace of
  :mod:`.lowrank`, the Newton-CG mode search of :mod:`.newton`).

``kind`` is ``"observed"`` (``w = d/E²``: ``H_u`` is then the exact negative Hessian of the
log-space density) or ``"expected"`` (``w = 1/E``, positive semi-definite ``F``).

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 3), 5.0), np.ones((1, 1, 1, 1, 3)), pixel_area=1.0)
>>> p = Problem.from_datasets([ds])
>>> fv = fisher_products(p, np.array([5.0 / 3.0]), np.ones((1, 1)), kind="expected")
>>> round(float(fv[0, 0]), 9)   # S / λ with S = 3, as precision_matrix
1.8
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ParameterError
from ..forward.problem import Problem
from .fisher import KINDS, flux_hvp
from .latent import chain_terms

__all__ = ["log_hvp", "fisher_products", "log_precision_products"]


def log_hvp(u, free, datasets, config, kind: str):
    """``v ↦ H_u v = T' ⊙ (F + H_p)(T' ⊙ v) + c ⊙ v`` at ``u`` (inside compiled code)."""
    theta, t1, c = chain_terms(u, free, datasets, config)
    inner = flux_hvp(theta, free, datasets, config, kind)
    return lambda v: t1 * inner(t1 * v) + c * v


@functools.partial(jax.jit, static_argnames=("kind",))
def _flux_block(theta, vs, free, datasets, config, kind: str):
    return jax.vmap(flux_hvp(theta, free, datasets, config, kind))(vs)  # [m, n] -> [m, n]


@functools.partial(jax.jit, static_argnames=("kind",))
def _log_block(u, vs, scale, free, datasets, config, kind: str):
    hvp = log_hvp(u, free, datasets, config, kind)
    return jax.vmap(lambda v: scale * hvp(scale * v))(vs)  # [m, n] -> [m, n]


def _check(problem: Problem, point, vs, kind: str):
    if kind not in KINDS:
        raise ParameterError(f"fisher kind: got {kind!r}; valid choices: {', '.join(KINDS)}.")
    point = jnp.asarray(point, problem.dtype)
    vs = jnp.asarray(vs, problem.dtype)
    n = problem.n_params
    if point.shape != (n,) or vs.ndim != 2 or vs.shape[1] != n:
        raise ParameterError(f"curvature products: point {tuple(point.shape)} and vectors "
                             f"{tuple(vs.shape)}; expected ({n},) and (m, {n}) (free pixels "
                             "+ free backgrounds).")
    return point, vs


def fisher_products(problem: Problem, theta, vs, *, kind: str = "observed") -> np.ndarray:
    """``(F + H_p) v`` for each row ``v`` of ``vs [m, n]`` at ``θ`` (flux space)."""
    theta, vs = _check(problem, theta, vs, kind)
    return np.asarray(_flux_block(theta, vs, jnp.asarray(problem.free_index),
                                  problem.datasets, problem.config, kind))


def log_precision_products(problem: Problem, u, vs, *, kind: str = "observed",
                           scale=None) -> np.ndarray:
    """``S H_u S v`` for each row ``v`` of ``vs [m, n]`` at log-space ``u``
    (``S = diag(scale)``, default 1: the plain ``H_u v``)."""
    u, vs = _check(problem, u, vs, kind)
    scale = jnp.ones_like(u) if scale is None else jnp.asarray(scale, problem.dtype)
    return np.asarray(_log_block(u, vs, scale, jnp.asarray(problem.free_index),
                                 problem.datasets, problem.config, kind))
