"""Metric Gaussian variational inference (MGVI) on the forward model.

MGVI approximates the posterior of the standardised coordinates ``x`` of :mod:`.coords`
(the field prior's ``N(0, I)`` coordinates, or the whitened log-flux ``z`` of
:mod:`.latent` for the other priors) by a Gaussian ``N(x̄, M(x̄)⁻¹)`` whose covariance is
the inverse Fisher metric at its mean,

    M(x) = Jᵀ diag(1/E) J + diag(p),

(``J = ∂E/∂x``, ``p`` the prior's curvature: 1 on field coordinates), and whose mean
minimises the Kullback-Leibler divergence to the posterior, estimated with ``2 N``
antithetic samples ``±s_k``.  One round:

1. draw ``s_k ~ N(0, M(x̄)⁻¹)``: ``ζ = Jᵀ (√w ⊙ ε) + √p ⊙ ε'`` has covariance ``M``, and
   ``s = M⁻¹ ζ`` by conjugate gradients (:func:`jax.scipy.sparse.linalg.cg`) with
   Fisher-vector products ``M v`` — never a matrix; the samples enter as ``±s_k``;
2. minimise ``KL(x̄) ≈ −(1/2N) Σ_k [log p(x̄ + s_k | d) + log p(x̄ − s_k | d)]`` (the
   samples held fixed) by a few Newton-CG steps: the Hessian is the sample average of the
   metrics ``M(x̄ ± s_k)``, the step is shortened until the KL falls.

After ``rounds`` rounds the final Gaussian gives ``num_draws`` draws (again antithetic,
each by conjugate gradients), converted to images, backgrounds and (field) hyper-parameters.
geoVI's nonlinear correction of the samples is not implemented.

Assumptions an analyst should check (``Draws.settings["assumptions"]``): the posterior is
Gaussian in ``x`` (log-normal in flux for the latent coordinates), with the Fisher metric
(not the exact Hessian) as its precision; the mean is a Monte-Carlo optimum over ``2 N``
samples (its noise falls as ``1/√(2N)``); the prior curvature off the field coordinates is
a clipped diagonal.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> draws = run_mgvi(Problem.from_datasets([ds]), num_draws=200, progress_bar=False)
>>> draws.method, round(float(draws.store.mean("image")[0, 0]) / 20.25, 1)
('mgvi', 1.0)
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg
from tqdm.auto import tqdm

from ..errors import ParameterError
from ..forward.problem import Problem
from .coords import (
    field_coords,
    latent_coords,
    log_joint,
    metric_product,
    metric_sqrt_product,
    prior_curvature,
)
from .draws import Draws, DrawStore
from .field_runs import FIELD_ASSUMPTION, field_map, field_store, store_coords
from .fisher import data_diagonal_theta
from .latent import bkg_transform, theta_of
from .start import Start, begin, start_settings

__all__ = ["run_mgvi", "mgvi_samples", "ASSUMPTIONS"]

logger = logging.getLogger(__name__)

ASSUMPTIONS = ("Gaussian N(mean, M^-1) in the standardised coordinates ({coords}); M = Fisher "
               "metric J^T diag(1/E) J + prior curvature at the mean; mean minimises a KL "
               "estimate over {n} antithetic samples")


@functools.partial(jax.jit, static_argnames=("maxiter",))
def _samples(x, keys, p, datasets, config, coords, tol, maxiter: int):
    """Antithetic halves ``s_k ~ N(0, M(x)⁻¹)`` (one per key) and the CG residual norms."""

    def one(key):
        zeta = metric_sqrt_product(x, key, p, datasets, config, coords)
        s, _ = cg(lambda v: metric_product(x, v, p, datasets, config, coords), zeta,
                  tol=tol, maxiter=maxiter)
        res = zeta - metric_product(x, s, p, datasets, config, coords)
        return s, jnp.linalg.norm(res) / jnp.maximum(jnp.linalg.norm(zeta), 1e-300)

    return jax.vmap(one)(keys)


def mgvi_samples(problem: Problem, x: np.ndarray, key: jax.Array, n: int, *, coords,
                 p: np.ndarray | None = None, tol: float = 1e-6,
                 maxiter: int = 200) -> tuple[np.ndarray, float]:
    """``2n`` antithetic samples ``[±s_k]`` of ``N(0, M(x)⁻¹)`` and the largest relative CG
    residual (``p``: the prior curvature, computed when not given)."""
    if p is None:
        p = prior_curvature(x, problem.config, coords)
    s, res = _samples(jnp.asarray(x), jax.random.split(key, int(n)), jnp.asarray(p),
                      problem.datasets, problem.config, coords, tol, int(maxiter))
    s = np.asarray(s)
    return np.concatenate([s, -s]), float(np.max(res))


@jax.jit
def _kl_value_grad(x, samples, datasets, config, coords):
    def kl(y):
        lp = jax.vmap(lambda s: log_joint(y + s, datasets, config, coords))(samples)
        return -jnp.mean(lp)

    return jax.value_and_grad(kl)(x)


@jax.jit
def _kl_value(x, samples, datasets, config, coords):
    lp = jax.vmap(lambda s: log_joint(x + s, datasets, config, coords))(samples)
    return -jnp.mean(lp)


@functools.partial(jax.jit, static_argnames=("maxiter",))
def _newton_direction(x, g, samples, p, datasets, config, coords, tol, maxiter: int):
    def avg_metric(v):
        mv = jax.vmap(lambda s: metric_product(x + s, v, p, datasets, config, coords))(samples)
        return jnp.mean(mv, axis=0)

    d, _ = cg(avg_metric, g, tol=tol, maxiter=maxiter)
    return d


def _minimise_kl(problem, x, samples, p, coords, steps, cg_tol, cg_maxiter):
    args = (problem.datasets, problem.config, coords)
    xs, ps = jnp.asarray(samples), jnp.asarray(p)
    x = jnp.asarray(x)
    value, g = _kl_value_grad(x, xs, *args)
    for _ in range(int(steps)):
        d = _newton_direction(x, g, xs, ps, *args, cg_tol, int(cg_maxiter))
        alpha, accepted = 1.0, False
        for _ in range(12):
            trial = x - alpha * d
            v = _kl_value(trial, xs, *args)
            if np.isfinite(float(v)) and float(v) <= float(value):
                accepted = True
                break
            alpha *= 0.5
        if not accepted:
            break
        change = float(value) - float(v)
        x = trial
        value, g = _kl_value_grad(x, xs, *args)
        if change < 1e-6 * max(1.0, abs(float(value))):
            break
    return np.asarray(x), float(value)


def _curvature(problem: Problem, x: np.ndarray, coords, floor: float) -> np.ndarray:
    """The prior curvature ``p``, raised where the metric's diagonal ``F_jj + p_j`` would be
    below ``floor`` (``F_jj`` the Fisher diagonal in ``x``, from the squared response;
    whitened log-flux coordinates with a diagonal scale; else ``floor`` is added)."""
    p = prior_curvature(x, problem.config, coords)
    if floor <= 0:
        return p
    lat = coords.latent
    scale = np.asarray(lat.scale)
    if scale.ndim != 1:
        return p + floor
    u = np.asarray(lat.center) + scale * x
    theta = theta_of(problem, u)
    t1 = theta.copy()  # dθ/du: θ for pixels, the bijection's slope for backgrounds
    n = problem.n_free
    if problem.config.bkg_free:
        ub = jnp.asarray(u[n:])
        t1[n:] = np.asarray(jax.jvp(bkg_transform(problem.config), (ub,),
                                    (jnp.ones_like(ub),))[1])
    f = data_diagonal_theta(problem, theta, kind="expected") * (scale * t1) ** 2
    return np.maximum(p, floor - f)


def run_mgvi(problem: Problem, *, kl_samples: int = 8, rounds: int = 6,
             newton_steps: int = 5, cg_tolerance: float = 1e-6, cg_iterations: int = 200,
             num_draws: int = 1000, seed: int = 0,
             map_iterations: int = 500, max_width: float = 2.0, backend: Any = None,
             progress_bar: bool = True, start: Start | None = None,
             **prepare_options: Any) -> Draws:
    """MGVI (see the module docstring); returns draws of the final Gaussian.

    Parameters
    ----------
    kl_samples
        Antithetic pairs per round (``2 kl_samples`` samples in the KL estimate).
    rounds
        Global rounds (new samples at the current mean, then the KL minimisation).
    newton_steps
        Newton-CG steps per round.
    cg_tolerance, cg_iterations
        Relative tolerance and iteration limit of every conjugate-gradient solve.
    num_draws
        Draws of the final approximation (an even number is used: antithetic pairs).
    map_iterations
        Steps of the field MAP that starts a field problem.
    max_width
        Whitened log-flux coordinates (priors other than the field): the metric is at least
        ``1 / max_width²``, i.e. no direction is wider than ``max_width`` Laplace widths at
        the log-space mode.  A faint pixel's log-flux posterior is skewed (Gumbel-like for
        no counts: σ ≈ 1.28 Laplace widths); there MGVI's metric at the mean shrinks round
        after round (σ² → exp(σ²/2)) until samples overflow.  The cap keeps such pixels at
        most ``max_width`` widths wide: their spread is then too large (up to ~1.6× at 2)
        and their mean flux biased high; quote upper limits, or the Laplace approximation's
        gamma marginals, for faint pixels.
    start, prepare_options
        For priors other than the field: the start of :func:`~.start.prepare` (the mean
        starts at the log-space mode ``z = 0``).
    """
    for name, value in (("kl_samples", kl_samples), ("rounds", rounds),
                        ("num_draws", num_draws), ("newton_steps", newton_steps)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ParameterError(f"mgvi: {name} = {value!r}; expected an integer >= 1.")
    if not max_width > 0:
        raise ParameterError(f"mgvi: max_width = {max_width!r}; expected a number > 0.")
    if not 0 < cg_tolerance < 1:
        raise ParameterError(f"mgvi: cg_tolerance = {cg_tolerance!r}; expected 0 < tol < 1.")
    t_all = time.perf_counter()
    cfg = problem.config
    timings, settings = {}, {}
    if cfg.image_prior == "field":
        coords = field_coords(problem)
        fmap = field_map(problem, max_iterations=map_iterations, hyper="prior",
                         progress_bar=progress_bar)
        x, map_image, map_bkg, start = fmap.x, fmap.image, fmap.bkg, None
        settings.update(map_amplitude=fmap.amplitude, map_slope=fmap.slope,
                        map_converged=fmap.converged, image_prior="field")
        timings["start_map"] = time.perf_counter() - t_all
        what = "field: harmonic coefficients, offsets, amplitude, slope, log-backgrounds"
    else:
        prepare_options.setdefault("progress_bar", progress_bar)
        start, timings, latent, n, _ = begin(problem, start, prepare_options)
        coords = latent_coords(latent)
        x = np.zeros(n)
        map_image, map_bkg = start.map_image, start.map_bkg
        settings.update(start_settings(start))
        what = "whitened log-flux around the log-space mode"
    floor = 0.0 if cfg.image_prior == "field" else 1.0 / float(max_width) ** 2
    key = jax.random.PRNGKey(int(seed))
    history, residual = [], 0.0
    t0 = time.perf_counter()
    for r in tqdm(range(int(rounds)), desc="MGVI rounds", disable=not progress_bar,
                  leave=False):
        key, sub = jax.random.split(key)
        p = _curvature(problem, x, coords, floor)
        samples, res = mgvi_samples(problem, x, sub, kl_samples, coords=coords, p=p,
                                    tol=cg_tolerance, maxiter=cg_iterations)
        residual = max(residual, res)
        x, kl = _minimise_kl(problem, x, samples, p, coords, newton_steps, cg_tolerance,
                             cg_iterations)
        history.append(kl)
        logger.info("MGVI round %d/%d: KL estimate %.10g (CG residual %.2g)", r + 1,
                    int(rounds), kl, res)
    timings["fit"] = time.perf_counter() - t0
    if residual > 1e3 * cg_tolerance:
        logger.warning("MGVI: a conjugate-gradient solve stopped at relative residual %.2g "
                       "(tolerance %g): raise cg_iterations (now %d); the samples are "
                       "approximate.", residual, cg_tolerance, cg_iterations)
    t0 = time.perf_counter()
    if cfg.image_prior == "field":
        store = field_store(problem, 1, backend)
    else:
        shapes = {"image": problem.model_shape}
        if cfg.bkg_free:
            shapes["bkg_norm"] = (problem.n_bkg,)
        store = DrawStore(1, shapes, backend=backend)
    p = _curvature(problem, x, coords, floor)
    pairs = -(-int(num_draws) // 2)
    batch = int(kl_samples)  # the rounds' batch: compiled once
    done = 0
    while done < pairs:
        take = min(batch, pairs - done)
        key, sub = jax.random.split(key)
        s, res = mgvi_samples(problem, x, sub, batch, coords=coords, p=p, tol=cg_tolerance,
                              maxiter=cg_iterations)
        residual = max(residual, res)
        half = s[:batch][:take]
        store_coords(store, np.concatenate([x + half, x - half])[None], problem, coords)
        done += take
    timings["draws"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    n_kl = 2 * int(kl_samples)
    settings.update(method="mgvi", kl_samples=int(kl_samples), n_samples=n_kl,
                    rounds=int(rounds),
                    newton_steps=int(newton_steps), cg_tolerance=float(cg_tolerance),
                    cg_iterations=int(cg_iterations), num_draws=2 * pairs, seed=int(seed),
                    final_kl=history[-1], kl_history=[float(v) for v in history],
                    max_cg_residual=residual, parameterisation=what,
                    assumptions=ASSUMPTIONS.format(coords=what, n=n_kl)
                    + ("; " + FIELD_ASSUMPTION if cfg.image_prior == "field" else ""),
                    geovi=False)
    return Draws(store, "mgvi", settings, timings, independent=True, map_image=map_image,
                 map_bkg=map_bkg, extras={"kl": np.asarray(history), "mean": np.asarray(x)},
                 start=start)
