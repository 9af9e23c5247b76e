"""The log-space mode by Newton-CG with matrix-free curvature, and the EM-family flux start.

:func:`newton_mode` maximises :func:`~.latent.latent_log_density` (the log-posterior in
``u = log λ`` with its Jacobian) like :func:`~.mode.find_mode`, but by truncated Newton
steps: each solves ``H p = −g`` by conjugate gradients in whitened coordinates
``u = u_k + scale ⊙ z`` with the exact Hessian-vector products of :mod:`.curvature`
(``kind="observed"``: ``H_u`` *is* the negative Hessian of the log-space density), stops
CG at a relative residual ``η = min(0.5, √‖g‖)`` (Eisenstat-Walker: loose far from the
mode, tight near it) or at negative curvature (then the last CG iterate, or the gradient,
is the direction), and backtracks (Armijo, halving) along ``p``.  The CG loop runs
compiled, the forward model linearised once per Newton step.  It stops when the largest
whitened gradient ``max |∂f/∂z|`` is at most ``gradient_tolerance`` (as
:func:`~.mode.find_mode`), or no step increases the density.

:func:`em_start` is the flux-space start: SQUAREM-accelerated Richardson-Lucy
(:mod:`probdeconv.algorithms.accelerate`; the maximum-likelihood image, seconds) until the
log-likelihood gains less than ``tolerance`` relative per step.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> res = newton_mode(Problem.from_datasets([ds]), np.zeros(1), scale=np.array([1 / 9]))
>>> res.converged, round(float(np.exp(res.u[0])), 4)   # log-space mode: (80 + 1) / 4
(True, 20.25)
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ..algorithms import em
from ..errors import ParameterError
from ..forward.problem import Problem
from .curvature import log_hvp
from .fisher import KINDS
from .latent import Latent, latent_log_density
from .mode import ModeResult

__all__ = ["newton_mode", "em_start"]

logger = logging.getLogger(__name__)


@jax.jit
def _value_grad(u, scale, free, datasets, config):
    latent = Latent(free, u, scale)
    value, g = jax.value_and_grad(lambda z: latent_log_density(z, datasets, config, latent))(
        jnp.zeros_like(u))
    return value, g  # log-density and its whitened gradient at u


@jax.jit
def _value(u, scale, z, free, datasets, config):
    return latent_log_density(z, datasets, config, Latent(free, u, scale))


@functools.partial(jax.jit, static_argnames=("kind",))
def _cg(u, scale, g, free, datasets, config, forcing, maxiter, kind: str):
    """Truncated CG for ``(S H_u S) p = g`` (``g`` the ascent gradient): ``(p, i, neg)``."""
    hvp = log_hvp(u, free, datasets, config, kind)

    def hz(v):
        return scale * hvp(scale * v)

    tol = forcing * jnp.linalg.norm(g)

    def cond(c):
        _, r, _, rr, i, neg = c
        return (i < maxiter) & (jnp.sqrt(rr) > tol) & ~neg

    def body(c):
        x, r, d, rr, i, _ = c
        hd = hz(d)
        dhd = jnp.vdot(d, hd)
        neg = dhd <= 0.0
        alpha = rr / jnp.where(neg, 1.0, dhd)
        x_new = jnp.where(neg, jnp.where(i == 0, g, x), x + alpha * d)
        r_new = jnp.where(neg, r, r - alpha * hd)
        rr_new = jnp.vdot(r_new, r_new)
        d_new = r_new + (rr_new / rr) * d
        return x_new, r_new, d_new, rr_new, i + 1, neg

    zero = jnp.zeros_like(g)
    x, _, _, _, i, neg = jax.lax.while_loop(
        cond, body, (zero, g, g, jnp.vdot(g, g), jnp.asarray(0), jnp.asarray(False)))
    return x, i, neg


def newton_mode(problem: Problem, u0: np.ndarray, *, scale: np.ndarray | None = None,
                kind: str = "observed", max_iterations: int = 30,
                gradient_tolerance: float = 1e-3, cg_iterations: int = 100,
                progress_bar: bool = False) -> ModeResult:
    """Mode of the log-flux posterior by Newton-CG from ``u0`` (module docstring).

    Parameters
    ----------
    problem
        The inference problem.
    u0
        ``[n_params]`` start (:func:`~.latent.start_vector`).
    scale
        ``[n_params]`` whitening (e.g. ``1/√diag H_u`` at ``u0``); default 1.
    kind
        Fisher information of the Hessian-vector products: ``"observed"`` (exact Newton)
        or ``"expected"`` (Gauss-Newton-like, always positive).
    max_iterations, gradient_tolerance
        Newton steps at most; stop when ``max |∂f/∂z| ≤ gradient_tolerance``.
    cg_iterations
        Hessian-vector products per Newton step at most.
    progress_bar
        A progress bar over the Newton steps (and an INFO log line per step).
    """
    if kind not in KINDS:
        raise ParameterError(f"fisher kind: got {kind!r}; valid choices: {', '.join(KINDS)}.")
    u = jnp.asarray(u0, dtype=problem.dtype)
    scale = jnp.ones_like(u) if scale is None else jnp.asarray(scale, problem.dtype)
    free = jnp.asarray(problem.free_index)
    args = (free, problem.datasets, problem.config)
    value, g = _value_grad(u, scale, *args)
    history, products = [float(value)], 0
    gmax = float(jnp.max(jnp.abs(g)))
    steps, converged = 0, gmax <= gradient_tolerance
    with tqdm(total=int(max_iterations), desc="start: log-space mode (Newton-CG)",
              unit="step", disable=not progress_bar, leave=False) as bar:
        while steps < max_iterations and not converged:
            forcing = min(0.5, float(np.sqrt(np.linalg.norm(np.asarray(g)))))
            p, n_cg, neg = _cg(u, scale, g, *args, jnp.asarray(forcing, u.dtype),
                               jnp.asarray(int(cg_iterations)), kind)
            products += int(n_cg)
            slope = float(jnp.vdot(g, p))
            if not slope > 0:  # not an ascent direction: fall back to the gradient
                p, slope = g, float(jnp.vdot(g, g))
            step = 1.0  # Armijo backtracking: one log-density per trial, the full step first
            while step > 1e-9:
                trial = float(_value(u, scale, step * p, *args))
                if np.isfinite(trial) and trial >= float(value) + 1e-4 * step * slope:
                    break
                step *= 0.5
            else:
                logger.info("Newton-CG: no step along the direction increases the "
                            "log-density; stopping at max|grad| %.3g", gmax)
                converged = gmax <= gradient_tolerance
                break
            u = u + scale * step * p
            value, g = _value_grad(u, scale, *args)
            history.append(float(value))
            gmax = float(jnp.max(jnp.abs(g)))
            steps += 1
            converged = gmax <= gradient_tolerance
            bar.update(1)
            bar.set_postfix_str(f"log-density {float(value):.10g}, max|grad| {gmax:.2g}",
                                refresh=False)
            logger.info("start: Newton-CG step %d: log-density %.10g, largest whitened "
                        "gradient %.3g, %d CG products%s, step %g", steps, float(value), gmax,
                        int(n_cg), " (negative curvature)" if bool(neg) else "", step)
    result = ModeResult(np.asarray(u), float(value), steps, bool(converged), gmax,
                        np.asarray(history))
    level = logging.INFO if result.converged else logging.WARNING
    logger.log(level, "log-space mode: %s after %d Newton-CG steps (%d Hessian-vector "
               "products; log-density %.10g, largest whitened gradient %.2g, limit %g)",
               "converged" if result.converged else "NOT converged", steps, products,
               result.log_density, gmax, gradient_tolerance)
    return result


def em_start(problem: Problem, init_image: np.ndarray, *, max_iterations: int = 100,
             tolerance: float = 1e-6, progress_bar: bool = False):
    """SQUAREM-accelerated Richardson-Lucy from ``init_image`` until the log-likelihood
    gains less than ``tolerance`` relative per step; ``(image, bkg, steps, converged)``."""
    cfg = problem.config
    opts = em.EMOptions(optimize_bkg=bool(cfg.bkg_free), acceleration="SQUAREM")
    params = em.make_params(problem.datasets, opts, mask=problem.mask,
                            bkg_range=np.asarray(cfg.bkg_range), n_bkg=cfg.n_bkg)
    state = em.init(jnp.asarray(init_image), cfg.bkg_fixed, problem.datasets, params)
    step = em.build_step(opts)
    last, steps, converged = None, 0, False
    with tqdm(total=int(max_iterations), desc="start: EM (SQUAREM)", unit="step",
              disable=not progress_bar, leave=False) as bar:
        while steps < max_iterations:
            state, info = step(state, problem.datasets, params)
            steps += 1
            bar.update(1)
            ll = float(jnp.sum(info.loglik))
            if last is not None and abs(ll - last) <= tolerance * max(1.0, abs(ll)):
                converged = True
                break
            last = ll
    logger.info("start: EM (SQUAREM) %s after %d steps (log-likelihood %.10g)",
                "converged" if converged else "stopped at its limit", steps, ll)
    return np.asarray(state.model), np.asarray(state.bkg_norm), steps, converged
