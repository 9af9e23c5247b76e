"""Gradient MAP, Laplace, NUTS and SVI for the field prior (``image_prior: field``).

The field prior (:mod:`probdeconv.forward.field`) lives in standardised coordinates: the
NumPyro model :func:`~.model.sky_model` samples ``field_x`` (``N(0, I)``: harmonic
coefficients, offsets, amplitude, slope) and, when free, ``bkg_norm``; the image is a
deterministic function of them.  These runners work in the coordinates ``x`` of
:mod:`.coords` and return the same :class:`~.draws.Draws` as the other samplers, whose store
also holds the hyper-parameters ``field.amplitude``, ``field.slope`` and ``field.offset``
(``[Ei]``, ln flux) per draw.

- :func:`field_map`: L-BFGS (optax) on ``−log p(x | d)`` from a flat image;
- :func:`run_field_laplace`: ``N(x̂, M(x̂)⁻¹)`` with ``M`` the Fisher metric plus the
  prior's curvature at the MAP (:func:`~.coords.metric_product`, dense: ``D ≤ max_params``);
- :func:`run_field_nuts`: NUTS on the model (the coordinates are already whitened by the
  prior), chains started at the MAP;
- :func:`run_field_svi`: a Gaussian guide (AutoNormal / low rank) on the model.

Examples
--------
>>> from probdeconv.simulate import simulate
>>> from probdeconv.shell.problem import problem_from_parameters
>>> p = problem_from_parameters([simulate(sky="points", nside=1, seed=1, phi_bins=4).dataif()],
...                             {"image": {"kind": "field"}})
>>> draws = run_field_laplace(p, num_draws=20)
>>> sorted(draws.store.names)
['bkg_norm', 'field.amplitude', 'field.offset', 'field.slope', 'image']
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg as sla
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, init_to_value
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from tqdm.auto import tqdm

from ..errors import ParameterError
from ..forward.problem import Problem
from .coords import (
    Coords,
    coords_outputs,
    field_coords,
    field_start,
    log_joint,
    metric_product,
    prior_curvature,
)
from .draws import Draws, DrawStore
from .fisher import cholesky_precision
from .latent import bkg_transform
from .model import sky_model
from .start import flat_start

__all__ = ["FieldMAP", "field_map", "field_store", "store_coords", "run_field_laplace",
           "run_field_nuts", "run_field_svi", "FIELD_ASSUMPTION"]

logger = logging.getLogger(__name__)

FIELD_ASSUMPTION = ("image = exp(offset + Gaussian field), C_l = amplitude^2 4pi (l+1)^-slope "
                    "/ norm (l >= 1); amplitude, slope and offsets sampled with the image")


class FieldMAP(NamedTuple):
    """The MAP of a field problem: coordinates, image, backgrounds and hyper-parameters."""

    x: np.ndarray  # [D] standardised coordinates (field, then u_b)
    image: np.ndarray  # [lb, Ei] masked 0
    bkg: np.ndarray  # [K]
    amplitude: float
    slope: float
    offset: np.ndarray  # [Ei] ln flux
    log_posterior: float
    iterations: int
    converged: bool


def _check(problem: Problem) -> Coords:
    if problem.config.image_prior != "field":
        raise ParameterError(f"field runner: the problem's image prior is "
                             f"{problem.config.image_prior!r}; these runners need "
                             "image: {kind: field}.")
    return field_coords(problem)


@functools.lru_cache(maxsize=4)
def _lbfgs_chunk(length: int):
    opt = optax.lbfgs()

    def run(x, state, x0, free, datasets, config, coords):
        def f(y):  # coordinates not free stay at x0
            return -log_joint(jnp.where(free, y, x0), datasets, config, coords)

        vg = optax.value_and_grad_from_state(f)

        def body(_, carry):
            y, st = carry
            value, grad = vg(y, state=st)
            upd, st = opt.update(grad, st, y, value=value, grad=grad, value_fn=f)
            return optax.apply_updates(y, upd), st

        x, state = jax.lax.fori_loop(0, length, body, (x, state))
        value, grad = jax.value_and_grad(f)(x)
        return jnp.where(free, x, x0), state, value, jnp.max(jnp.abs(grad))

    return opt, jax.jit(run)


def field_map(problem: Problem, *, max_iterations: int = 500, tolerance: float = 1e-4,
              hyper: str = "free", x0: np.ndarray | None = None,
              progress_bar: bool = False) -> FieldMAP:
    """Gradient MAP in the standardised coordinates (L-BFGS), from a flat image.

    Stops when the largest gradient component is below ``tolerance`` (the coordinates have
    unit prior scale) or after ``max_iterations`` steps (logged).

    ``hyper="free"``: the joint mode of image and hyper-parameters.  It over-fits: in these
    coordinates a larger amplitude costs only ``(ln σ)²/2`` and makes every harmonic cheaper,
    so the joint mode sits at a large amplitude with a noisy image (on the NSIDE-2 test sky:
    σ 6.6 at the mode against 0.52 true and 0.44 ± 0.14 NUTS; see benchmarks/README.md).
    ``hyper="prior"`` holds amplitude and slope at their prior medians (the samplers' start).
    """
    coords = _check(problem)
    if hyper not in ("free", "prior"):
        raise ParameterError(f"field MAP: hyper = {hyper!r}; valid choices: free, prior.")
    cfg = problem.config
    if x0 is None:
        img = flat_start(problem)
        level = np.array([img[problem.mask[:, e], e].mean() if problem.mask[:, e].any()
                          else 1e-10 for e in range(img.shape[1])])
        x0 = field_start(problem, level)
    x = jnp.asarray(x0, problem.dtype)
    length = 25
    opt, run = _lbfgs_chunk(length)
    free = np.ones(x.shape, dtype=bool)
    if hyper == "prior":
        free[coords.n_field - 2:coords.n_field] = False  # ζ_a = ζ_s = 0 (x0): prior medians
    free = jnp.asarray(free)
    x0 = x
    state = opt.init(x)
    steps, converged, value, gmax = 0, False, np.nan, np.inf
    with tqdm(total=int(max_iterations), desc="field MAP (L-BFGS)", unit="step",
              disable=not progress_bar, leave=False) as bar:
        while steps < max_iterations:
            x, state, value, gmax = run(x, state, x0, free, problem.datasets, cfg, coords)
            steps += length
            bar.update(length)
            if not np.isfinite(float(value)):
                raise ParameterError("field MAP: the log-posterior stopped being finite; "
                                     "check the offset prior (flux) against the data.")
            if float(gmax) < tolerance:
                converged = True
                break
    if not converged:
        logger.info("field MAP: %d L-BFGS steps, largest gradient %.3g > tolerance %g",
                    steps, float(gmax), tolerance)
    out = coords_outputs(x[None], cfg, coords)
    return FieldMAP(np.asarray(x), np.asarray(out["image"][0]), np.asarray(out["bkg_norm"][0]),
                    float(out["field.amplitude"][0]), float(out["field.slope"][0]),
                    np.asarray(out["field.offset"][0]), -float(value), steps, converged)


def field_store(problem: Problem, chains: int, backend: Any = None,
                stats: dict | None = None) -> DrawStore:
    """A store for image, backgrounds (when free), the field's hyper-parameters and stats."""
    shapes = {"image": problem.model_shape}
    if problem.config.bkg_free:
        shapes["bkg_norm"] = (problem.n_bkg,)
    shapes.update({"field.amplitude": (), "field.slope": (),
                   "field.offset": (problem.model_shape[1],)})
    shapes.update({k: () for k in (stats or {})})
    dtypes = {k: np.asarray(v).dtype for k, v in (stats or {}).items()}
    return DrawStore(chains, shapes, dtypes, backend=backend)


def store_coords(store: DrawStore, xs: np.ndarray, problem: Problem, coords: Coords,
                 stats: dict | None = None, batch: int = 256) -> None:
    """Append draws ``xs [chains, n, D]`` of the coordinates (converted in batches)."""
    chains, n = xs.shape[:2]
    for s in range(0, n, batch):
        part = jnp.asarray(xs[:, s:s + batch].reshape(-1, xs.shape[-1]))
        out = coords_outputs(part, problem.config, coords)
        chunk = {k: np.asarray(v).reshape(chains, -1, *np.shape(v)[1:])
                 for k, v in out.items() if k in store.shapes}
        chunk.update({k: np.asarray(v)[:, s:s + batch] for k, v in (stats or {}).items()})
        store.append(chunk)


def _settings(method: str, fmap: FieldMAP, **more) -> dict:
    return {"method": method, "image_prior": "field", "assumptions": FIELD_ASSUMPTION,
            "map_amplitude": fmap.amplitude, "map_slope": fmap.slope,
            "map_steps": fmap.iterations, "map_converged": fmap.converged, **more}


@jax.jit
def _metric_columns(x, basis, p, datasets, config, coords):
    return jax.vmap(lambda v: metric_product(x, v, p, datasets, config, coords))(basis)


def run_field_laplace(problem: Problem, *, num_draws: int = 1000, seed: int = 0,
                      max_params: int = 8192, map_iterations: int = 500,
                      backend: Any = None, progress_bar: bool = False) -> Draws:
    """``N(x̂, M(x̂)⁻¹)`` at the field MAP: a Gaussian in the standardised coordinates."""
    coords = _check(problem)
    t0 = time.perf_counter()
    fmap = field_map(problem, max_iterations=map_iterations, progress_bar=progress_bar)
    timings = {"map": time.perf_counter() - t0}
    n = fmap.x.size
    if n > max_params:
        raise ParameterError(f"field Laplace: {n} coordinates > max_params {max_params} (the "
                             "dense metric); use method mgvi (matrix-free).")
    t1 = time.perf_counter()
    x = jnp.asarray(fmap.x)
    p = jnp.asarray(prior_curvature(fmap.x, problem.config, coords))
    h = np.zeros((n, n))
    for s in range(0, n, 64):
        basis = jnp.eye(n, dtype=x.dtype)[s:s + 64]
        h[s:s + 64] = np.asarray(_metric_columns(x, basis, p, problem.datasets,
                                                 problem.config, coords))
    chol = cholesky_precision(0.5 * (h + h.T))
    timings["precision"] = time.perf_counter() - t1
    eps = np.random.default_rng(seed).standard_normal((num_draws, n))
    xs = fmap.x + sla.solve_triangular(chol.T, eps.T, lower=False).T  # L⁻ᵀ ε ~ N(0, M⁻¹)
    store = field_store(problem, 1, backend)
    store_coords(store, xs[None], problem, coords)
    timings["total"] = time.perf_counter() - t0
    return Draws(store, "laplace", _settings("laplace", fmap, num_draws=int(num_draws),
                                             seed=int(seed), curvature="dense",
                                             n_params=int(n), fisher="expected (metric)"),
                 timings, True, fmap.image, fmap.bkg)


def _to_coords(field_x: np.ndarray, bkg: np.ndarray | None, problem: Problem) -> np.ndarray:
    if not problem.config.bkg_free:
        return np.asarray(field_x)
    ub = np.asarray(bkg_transform(problem.config).inv(jnp.asarray(bkg)))
    return np.concatenate([np.asarray(field_x), ub], axis=-1)


def run_field_nuts(problem: Problem, *, num_warmup: int = 500, num_samples: int = 1000,
                   chains: int = 2, seed: int = 0, target_accept: float = 0.8,
                   dense_mass: bool = False, max_tree_depth: int = 10,
                   map_iterations: int = 500, backend: Any = None,
                   progress_bar: bool = True) -> Draws:
    """NUTS on the field model, chains started at the field MAP."""
    coords = _check(problem)
    t0 = time.perf_counter()
    fmap = field_map(problem, max_iterations=map_iterations, hyper="prior",
                     progress_bar=progress_bar)
    values = {"field_x": jnp.asarray(fmap.x[:coords.n_field])}
    if problem.config.bkg_free:
        values["bkg_norm"] = jnp.asarray(fmap.bkg)
    kernel = NUTS(sky_model, init_strategy=init_to_value(values=values),
                  target_accept_prob=float(target_accept), dense_mass=bool(dense_mass),
                  max_tree_depth=int(max_tree_depth))
    mcmc = MCMC(kernel, num_warmup=int(num_warmup), num_samples=int(num_samples),
                num_chains=int(chains), chain_method="sequential", progress_bar=progress_bar,
                jit_model_args=True)
    t1 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(int(seed)), problem.datasets, problem.config,
             extra_fields=("diverging", "num_steps"))
    samples = mcmc.get_samples(group_by_chain=True)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    xs = _to_coords(samples["field_x"], samples.get("bkg_norm"), problem)
    stats = {"stats.diverging": np.asarray(extra["diverging"], bool),
             "stats.n_steps": np.asarray(extra["num_steps"], np.int64)}
    store = field_store(problem, int(chains), backend, stats)
    store_coords(store, xs, problem, coords, stats)
    timings = {"sampling": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    n_div = int(stats["stats.diverging"].sum())
    if n_div:
        logger.warning("field NUTS: %d divergent transition(s); raise target_accept.", n_div)
    return Draws(store, "nuts", _settings("nuts", fmap, num_warmup=int(num_warmup),
                                          num_samples=int(num_samples), chains=int(chains),
                                          seed=int(seed), target_accept=float(target_accept),
                                          divergences=n_div),
                 timings, False, fmap.image, fmap.bkg)


def run_field_svi(problem: Problem, *, guide: str = "lowrank", num_steps: int = 3000,
                  learning_rate: float = 0.01, num_particles: int = 1,
                  init_scale: float = 0.05, num_draws: int = 1000, seed: int = 0,
                  map_iterations: int = 500, backend: Any = None,
                  progress_bar: bool = True) -> Draws:
    """A Gaussian guide on the field model (``"normal"`` or ``"lowrank"``), from the MAP."""
    coords = _check(problem)
    if guide not in ("normal", "lowrank"):
        raise ParameterError(f"guide: got {guide!r}; valid choices: normal, lowrank.")
    t0 = time.perf_counter()
    fmap = field_map(problem, max_iterations=map_iterations, hyper="prior",
                     progress_bar=progress_bar)
    values = {"field_x": jnp.asarray(fmap.x[:coords.n_field])}
    if problem.config.bkg_free:
        values["bkg_norm"] = jnp.asarray(fmap.bkg)
    cls = AutoNormal if guide == "normal" else AutoLowRankMultivariateNormal
    g = cls(sky_model, init_loc_fn=init_to_value(values=values), init_scale=init_scale)
    svi = SVI(sky_model, g, optax.adam(learning_rate), Trace_ELBO(num_particles))
    key, sub = jax.random.split(jax.random.PRNGKey(int(seed)))
    args = (problem.datasets, problem.config)
    state = svi.init(sub, *args)
    update = jax.jit(svi.update)
    losses = np.empty(int(num_steps))
    for i in tqdm(range(int(num_steps)), desc="field SVI", disable=not progress_bar,
                  leave=False):
        state, loss = update(state, *args)
        losses[i] = float(loss)
    if not np.all(np.isfinite(losses)):
        raise ParameterError("field SVI: the loss became non-finite; lower learning_rate "
                             f"(now {learning_rate}) or init_scale.")
    post = g.sample_posterior(key, svi.get_params(state), sample_shape=(int(num_draws),))
    xs = _to_coords(post["field_x"], post.get("bkg_norm"), problem)
    store = field_store(problem, 1, backend)
    store_coords(store, xs[None], problem, coords)
    timings = {"total": time.perf_counter() - t0}
    return Draws(store, "svi", _settings("svi", fmap, guide=guide, num_steps=int(num_steps),
                                         learning_rate=float(learning_rate),
                                         num_draws=int(num_draws), seed=int(seed),
                                         final_loss=float(losses[-1])),
                 timings, True, fmap.image, fmap.bkg, extras={"loss": losses})
