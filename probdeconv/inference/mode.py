"""The mode of the log-flux posterior: L-BFGS on the whitened latent density, in chunks.

:func:`find_mode` maximises :func:`~.latent.latent_log_density` (the log-posterior in
``u = log λ`` with its Jacobian) from a start ``u0`` in whitened coordinates
``u = u0 + scale ⊙ z``.  It runs ``optax.lbfgs`` (zoom line search) inside compiled
``while`` loops of ``chunk`` steps (a progress bar between chunks; the datasets are
arguments of the compiled loop) and stops when

- the largest whitened gradient ``max |∂f/∂z|`` is at most ``gradient_tolerance``: with
  ``z`` in units of about one posterior standard deviation, the point is then within about
  that many standard deviations of the mode in every direction — what a sampler start and
  a Laplace centre need (the default 1e-3), independent of the size of the log-density; or
- one step changes the log-density by at most ``tolerance · max(1, |log-density|)``; or
- no step increases it (a rejected line search).

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> res = find_mode(Problem.from_datasets([ds]), np.zeros(1), scale=np.array([1 / 9]))
>>> res.converged, round(float(np.exp(res.u[0])), 2)   # log-space mode: (80 + 1) / 4
(True, 20.25)
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ..forward.problem import Problem
from .latent import Latent, latent_log_density

__all__ = ["ModeResult", "find_mode"]

logger = logging.getLogger(__name__)


class ModeResult(NamedTuple):
    """Outcome of :func:`find_mode`."""

    u: np.ndarray  # [n_params] the mode (log-flux, unconstrained backgrounds)
    log_density: float  # at u
    iterations: int
    converged: bool  # a stopping rule was met before max_iterations
    gradient_max: float  # largest whitened gradient |∂f/∂z| at u
    history: np.ndarray  # [iterations + 1] log-density: start, then after each step


@functools.partial(jax.jit, static_argnames=("chunk",))
def _lbfgs_chunk(carry, datasets, config, latent, limit, tolerance, gradient_tolerance,
                 chunk: int):
    """Up to ``min(limit, chunk)`` L-BFGS steps; returns ``(carry, history[chunk], n)``."""

    def f(z):
        value = -latent_log_density(z, datasets, config, latent)
        return jnp.where(jnp.isfinite(value), value, jnp.inf)

    opt = optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30))
    value_and_grad = optax.value_and_grad_from_state(f)

    def cond(c):
        _, _, i, change, _, gmax, _ = c
        return (i < jnp.minimum(limit, chunk)) & (change > tolerance) & (
            gmax > gradient_tolerance)

    def body(c):
        z, state, i, _, value, gmax, hist = c
        v, g = value_and_grad(z, state=state)
        updates, new_state = opt.update(g, state, z, value=v, grad=g, value_fn=f)
        new_z = optax.apply_updates(z, updates)
        new_value = optax.tree.get(new_state, "value")
        ok = jnp.isfinite(new_value) & (new_value <= v)
        change = jnp.where(ok, jnp.abs(v - new_value) / jnp.maximum(1.0, jnp.abs(v)), 0.0)
        new_gmax = jnp.max(jnp.abs(optax.tree.get(new_state, "grad")))
        keep = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (new_z, new_state),
                            (z, state))
        value = jnp.where(ok, new_value, v)
        return (*keep, i + 1, change, value, jnp.where(ok, new_gmax, jnp.max(jnp.abs(g))),
                hist.at[i].set(-value))

    z, state, _, change, value, gmax = carry
    hist = jnp.full(chunk, jnp.nan, z.dtype)
    z, state, n, change, value, gmax, hist = jax.lax.while_loop(
        cond, body, (z, state, jnp.asarray(0), change, value, gmax, hist))
    return (z, state, n, change, value, gmax), hist, n


@jax.jit
def _init_carry(z0, datasets, config, latent):
    def f(z):
        return -latent_log_density(z, datasets, config, latent)

    opt = optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30))
    value, grad = jax.value_and_grad(f)(z0)
    inf = jnp.asarray(jnp.inf, z0.dtype)
    return z0, opt.init(z0), jnp.asarray(0), inf, value, jnp.max(jnp.abs(grad))


def find_mode(problem: Problem, u0: np.ndarray, *, scale: np.ndarray | None = None,
              max_iterations: int = 500, tolerance: float = 1e-11,
              gradient_tolerance: float = 1e-3, chunk: int = 25,
              progress_bar: bool = False) -> ModeResult:
    """Mode of the log-flux posterior by L-BFGS from ``u0`` (see the module docstring).

    Parameters
    ----------
    problem
        The inference problem.
    u0
        ``[n_params]`` start (:func:`~.latent.start_vector`).
    scale
        Whitening of the search, ``u = u0 + scale ⊙ z`` (or ``scale @ z`` for a matrix);
        default 1.
    max_iterations, tolerance, gradient_tolerance
        The stopping rules of the module docstring.
    chunk
        Steps per compiled loop (one progress update each).
    progress_bar
        Show a progress bar of the steps.
    """
    u0 = jnp.asarray(u0, dtype=problem.dtype)
    scale = jnp.ones_like(u0) if scale is None else jnp.asarray(scale, dtype=problem.dtype)
    latent = Latent(jnp.asarray(problem.free_index), u0, scale)
    args = (problem.datasets, problem.config, latent)
    carry = _init_carry(jnp.zeros_like(u0), *args)
    history = [np.asarray([-float(carry[4])])]
    tol, gtol = jnp.asarray(tolerance, u0.dtype), jnp.asarray(gradient_tolerance, u0.dtype)
    steps, converged = 0, float(carry[5]) <= gradient_tolerance
    with tqdm(total=int(max_iterations), desc="start: log-space mode", unit="step",
              disable=not progress_bar, leave=False) as bar:
        while steps < max_iterations and not converged:
            limit = jnp.asarray(min(chunk, max_iterations - steps))
            carry, hist, n = _lbfgs_chunk(carry, *args, limit, tol, gtol, int(chunk))
            n = int(n)
            history.append(np.asarray(hist)[:n])
            steps += n
            change, gmax = float(carry[3]), float(carry[5])
            converged = change <= tolerance or gmax <= gradient_tolerance
            bar.update(n)
            logger.debug("log-space mode: %d steps, log-density %.12g, largest whitened "
                         "gradient %.3g", steps, -float(carry[4]), gmax)
            bar.set_postfix_str(f"log-density {-float(carry[4]):.10g}, max|grad| {gmax:.2g}",
                                refresh=False)
    z = carry[0]
    dz = scale @ z if scale.ndim == 2 else scale * z
    result = ModeResult(np.asarray(u0 + dz), -float(carry[4]), steps, bool(converged),
                        float(carry[5]), np.concatenate(history))
    level = logging.INFO if result.converged else logging.WARNING
    logger.log(level, "log-space mode: %s after %d L-BFGS steps (log-density %.10g, largest "
               "whitened gradient %.2g, limit %g)",
               "converged" if result.converged else "NOT converged", steps,
               result.log_density, result.gradient_max, gradient_tolerance)
    return result
