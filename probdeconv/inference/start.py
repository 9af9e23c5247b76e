"""The common start of every sampler: MAP image, log-space mode and whitening scales.

:func:`prepare` finds the flux-space MAP (gradient MAP by :func:`~.map.map_run`, or 100
Richardson-Lucy iterations with ``init="rl"``), refines it to the mode of the log-flux
posterior of :mod:`.latent` and builds the Laplace precision there, whose diagonal (or
Cholesky factor) whitens the sampled variables; :func:`begin` is the shared opening of the
samplers (start, timings, NumPyro's ``init_to_value``).

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> start = prepare(Problem.from_datasets([ds]))
>>> round(float(start.map_image[0, 0]), 6)   # the MAP: counts / exposure = 80 / 4
20.0
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from numpyro.infer import init_to_value
from tqdm.auto import tqdm

from .. import forward as fm
from ..algorithms import em
from ..errors import ParameterError
from ..forward.problem import Problem
from .fisher import data_diagonal_theta, prior_diagonal
from .fisher_diag import pair_plan
from .latent import (
    Latent,
    log_posterior_gradient,
    log_space_precision,
    start_vector,
    theta_of,
    whitening,
)
from .lowrank import lowrank_precision
from .map import MAPOptions, map_run
from .mode import find_mode
from .newton import em_start, newton_mode

__all__ = ["PRECONDITION", "MODE_METHODS", "Start", "flat_start", "mask_unexposed", "find_map",
           "prepare", "begin", "start_settings"]

logger = logging.getLogger(__name__)

PRECONDITION = ("diagonal", "dense", "lowrank", "none")
MODE_METHODS = ("lbfgs", "newton")


class Start(NamedTuple):
    """Where the samplers start: the MAP, the log-space mode and its Laplace precision."""

    map_image: np.ndarray  # [lb, Ei] flux-space MAP (masked 0)
    map_bkg: np.ndarray  # [K]
    latent: Latent  # center = log-space mode, scale = 1/sqrt(diag precision)
    precision: np.ndarray | None  # [n, n] in u (log-space) coordinates, when asked
    log_density: float  # at the mode
    seconds: dict
    notes: dict | None = None  # steps and convergence of the MAP and of the mode search


def flat_start(problem: Problem) -> np.ndarray:
    """A flat ``[lb, Ei]`` image whose expected sky counts equal ``Σ d − Σ b B``.

    At least a tenth of the counts is given to the sky; masked pixels are 0.
    """
    cfg = problem.config
    s = np.asarray(fm.summed_exposure(problem.datasets))
    counts = sum(float(jnp.sum(ds.counts)) for ds in problem.datasets)
    bkg = sum(float(jnp.sum(fm.background_counts(ds, cfg.bkg_fixed))) for ds in problem.datasets)
    exposure = float(np.sum(np.where(problem.mask, s, 0.0)))
    level = max(counts - bkg, 0.1 * counts, 1.0) / max(exposure, 1e-300)
    return np.where(problem.mask, level, 0.0)


def mask_unexposed(problem: Problem) -> Problem:
    """The problem with its unexposed free pixels masked, when the image prior is improper.

    A free pixel with zero exposure (no data bin sees it) has the image prior as its
    posterior; under the flat prior (or the gamma prior with ``θ = ∞``) that is improper —
    no finite mean, nothing a sampler or a Laplace approximation can represent.  Such
    pixels are masked (0 in every draw), as Richardson-Lucy leaves them, with a warning
    naming them.  Under a proper image prior the problem is returned unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from probdeconv.forward import make_dataset
    >>> r = np.ones((2, 1, 1, 1, 4)); r[1] = 0.0          # pixel 1 is never seen
    >>> ds = make_dataset(np.full((1, 1, 4), 3.0), r, pixel_area=1.0)
    >>> mask_unexposed(Problem.from_datasets([ds])).mask.ravel().tolist()
    [True, False]
    """
    cfg = problem.config
    improper = cfg.image_prior == "flat" or (cfg.image_prior == "gamma"
                                             and not cfg.gamma_proper)
    exposure = np.asarray(fm.summed_exposure(problem.datasets))
    unexposed = problem.mask & ~(exposure > 0)
    if not (improper and unexposed.any()):
        return problem
    pix, energy = np.nonzero(unexposed)
    listed = ", ".join(f"{p} E{e}" for p, e in zip(pix[:8], energy[:8]))
    logger.warning("%d free pixel(s) have zero exposure (%s%s): no data constrain them and "
                   "the %s image prior is improper there, so they are masked (0 in every "
                   "draw), as Richardson-Lucy leaves them; mask them yourself to silence "
                   "this.", pix.size, listed, ", ..." if pix.size > 8 else "",
                   cfg.image_prior)
    config = dataclasses.replace(cfg, mask=jnp.asarray(problem.mask & ~unexposed))
    return dataclasses.replace(problem, config=config)


def find_map(problem: Problem, *, init_image: np.ndarray | None = None,
             max_iterations: int = 1000, tolerance: float = 1e-10, callback=None):
    """The flux-space MAP by :func:`~.map.map_run` (L-BFGS) from a flat image.

    The flat start has the total flux that explains the counts left after the
    backgrounds: ``Σ d − Σ b B`` spread over the exposure.
    """
    cfg = problem.config
    if init_image is None:
        init_image = flat_start(problem)
    init_image = np.asarray(init_image, dtype=np.float64)
    if init_image.shape != problem.model_shape:
        raise ParameterError(f"init_image has shape {init_image.shape}; expected "
                             f"{problem.model_shape} (the model axes [lb, Ei]).")
    return map_run(jnp.asarray(init_image), None, problem.datasets, cfg, MAPOptions(),
                   max_iterations=max_iterations, tolerance=tolerance, callback=callback)


def _scale(diag: np.ndarray) -> np.ndarray:
    """``1/√diag`` where finite and positive, else 1."""
    ok = np.isfinite(diag) & (diag > 0)
    return np.where(ok, 1.0 / np.sqrt(np.where(ok, diag, 1.0)), 1.0)


def _map_phase(problem: Problem, init: str, init_image, map_iterations: int,
               map_tolerance: float, progress_bar: bool, notes: dict):
    """The flux-space start image and backgrounds (phase 1 of :func:`prepare`)."""
    cfg = problem.config
    if init == "map":
        with tqdm(total=int(map_iterations), desc="start: MAP (L-BFGS)", unit="step",
                  disable=not progress_bar, leave=False) as bar:
            def advance(steps, value):
                bar.update(steps - bar.n)
                bar.set_postfix_str(f"log-posterior {value:.10g}", refresh=False)

            res = find_map(problem, init_image=init_image, max_iterations=map_iterations,
                           tolerance=map_tolerance, callback=advance)
        notes.update(map_steps=int(res.iterations), map_converged=bool(res.converged))
        if not res.converged:
            logger.info("MAP start: %d L-BFGS steps (log-posterior %.10g) without meeting the "
                        "tolerance %g; the log-space mode search continues from there (the "
                        "flux-space MAP is only its start).", res.iterations,
                        res.log_posterior[-1], map_tolerance)
        return np.asarray(res.image), np.asarray(res.bkg_norm)
    if init == "em":
        image, bkg, steps, ok = em_start(
            problem, flat_start(problem) if init_image is None else init_image,
            progress_bar=progress_bar)
        notes.update(em_steps=steps, em_converged=ok)
        return image, bkg
    if init == "rl":
        notes.update(rl_iterations=RL_START_ITERATIONS)
        return _rl_start(problem, init_image, progress_bar)
    if init == "image":
        if init_image is None:
            raise ParameterError("init='image' needs init_image (an [lb, Ei] array).")
        return np.asarray(init_image, dtype=np.float64), np.asarray(cfg.bkg_fixed)
    raise ParameterError(f"init: got {init!r}; valid choices: map, em, rl, image.")


def prepare(problem: Problem, *, init: str = "map", init_image: np.ndarray | None = None,
            map_iterations: int = 200, map_tolerance: float = 1e-9,
            mode_iterations: int = 500, mode_tolerance: float = 1e-3,
            precondition: str = "diagonal", fisher: str = "expected", full: bool = False,
            dense_limit: int = 2048, batch_size: int | None = None,
            mode_method: str = "lbfgs", progress_bar: bool = False) -> Start:
    """MAP, log-space mode and whitening scales: the common start of every sampler.

    Phases (each timed in ``Start.seconds``; progress bars with ``progress_bar=True``):
    ``map`` (the flux-space start), ``mode`` (the Fisher diagonal there, then the
    whitened L-BFGS search of the log-space mode, :func:`~.mode.find_mode`) and
    ``precision`` (the whitening at the mode).  The Fisher information's diagonal comes
    from the squared response (:func:`~.fisher.data_diagonal_theta`) and is computed
    *once*, at the start point: it preconditions the search and, with the prior and
    chain-rule terms evaluated at the mode, gives the final whitening (an approximation
    in the weights ``1/E`` only, which the move from the MAP to the log-space mode barely
    changes; NUTS adapts its mass matrix on top).  The dense precision (``full``, or
    ``precondition="dense"``) is computed once, at the mode.

    Parameters
    ----------
    init
        ``"map"`` (gradient MAP by :func:`~.map.map_run`), ``"em"`` (SQUAREM-accelerated
        RL to its maximum-likelihood image, :func:`~.newton.em_start`: seconds) or ``"rl"``
        (Richardson-Lucy, 100 iterations), then the log-space refinement; ``"image"`` uses
        ``init_image`` as the MAP.
    map_iterations, map_tolerance
        Steps and relative tolerance of the flux-space MAP.  It is only the start of the
        log-space search, which needs neither its last digits (slow to reach: its zero
        pixels sit at ``u → −∞``) nor its zero pixels (each pixel starts at its own
        log-space mode given the others, :func:`~.latent.start_vector`).  On the README's
        NSIDE-8 simulation (769 parameters, 2-core CPU) the MAP meets 1e-9 after 359 steps
        (93 s) and the mode search then takes 50 steps; from 150 MAP steps (46 s) it takes
        56 steps to the same mode; from ``init="rl"`` (100 RL iterations, 20 s) 44 steps.
    mode_method
        ``"lbfgs"`` (:func:`~.mode.find_mode`) or ``"newton"`` (Newton-CG with the exact
        matrix-free Hessian, :func:`~.newton.newton_mode`: a few steps of up to 100
        Hessian-vector products; with ``init="em"`` the fast start).
    mode_iterations, mode_tolerance
        Steps of the log-space mode search and its tolerance on the largest whitened
        gradient (about posterior standard deviations from the mode).
    precondition
        ``"diagonal"`` (default): ``scale = 1/√diag(H_u)``; ``"dense"``: whiten by the full
        log-space Laplace covariance, ``u = û + S z`` with ``S Sᵀ = H_u⁻¹`` (up to
        ``dense_limit`` parameters; beyond, diagonal); ``"lowrank"``: whiten by the
        matrix-free low-rank plus diagonal Laplace covariance (:mod:`.lowrank`: its rank
        rule, no dense matrix; rank and captured variance in the notes); ``"none"``:
        ``scale = 1``.  (The search for the mode is whitened by the diagonal in every case.)
    full
        Also keep the full log-space precision ``H_u`` (for the Laplace approximation).
    progress_bar
        Progress bars for the MAP and the mode search.
    """
    if precondition not in PRECONDITION:
        raise ParameterError(f"precondition: got {precondition!r}; valid choices: "
                             f"{', '.join(PRECONDITION)}.")
    if mode_method not in MODE_METHODS:
        raise ParameterError(f"mode_method: got {mode_method!r}; valid choices: "
                             f"{', '.join(MODE_METHODS)}.")
    seconds, notes = {}, {}
    t0 = time.perf_counter()
    image, bkg = _map_phase(problem, init, init_image, map_iterations, map_tolerance,
                            progress_bar, notes)
    image = np.where(problem.mask, image, 0.0)
    seconds["map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_par = problem.n_params
    dense = precondition == "dense" and n_par <= dense_limit
    # The search is always whitened (bright and faint pixels, backgrounds alike): the Fisher
    # diagonal, once, at the MAP (squared response, a few back-projections).
    theta = np.array(theta_of(problem, start_vector(problem, image, bkg)))
    theta[:problem.n_free] = image.ravel()[problem.free_index]
    fdiag = data_diagonal_theta(problem, theta, kind=fisher,
                                plans=[pair_plan(ds) for ds in problem.datasets])
    curvature = fdiag + prior_diagonal(problem, theta)
    grad = log_posterior_gradient(problem, theta)
    n = problem.n_free
    u0 = start_vector(problem, image, bkg, gradient=grad[:n], curvature=curvature[:n])
    _, h0 = log_space_precision(problem, u0, kind=fisher, diagonal=True, data_diagonal=fdiag)
    scale0 = _scale(h0)
    logger.info("start: %s phase done in %.1f s; log-space mode search (%s) from the "
                "per-pixel conditional modes", init, seconds["map"], mode_method)
    if mode_method == "newton":
        mode = newton_mode(problem, u0, scale=scale0, max_iterations=min(mode_iterations, 50),
                           gradient_tolerance=mode_tolerance, progress_bar=progress_bar)
    else:
        mode = find_mode(problem, u0, scale=scale0, max_iterations=mode_iterations,
                         gradient_tolerance=mode_tolerance, progress_bar=progress_bar)
    u = mode.u
    notes.update(mode_steps=mode.iterations, mode_converged=mode.converged,
                 mode_gradient_max=mode.gradient_max)
    seconds["mode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    precision, scale = None, np.ones_like(u)
    if dense or full:
        _, h = log_space_precision(problem, u, kind=fisher, batch_size=batch_size,
                                   progress_bar=progress_bar)
        precision = h if full else None
        scale = whitening(h) if dense else _scale(np.diag(h))
    elif precondition in ("diagonal", "dense"):  # dense beyond dense_limit: diagonal
        _, h = log_space_precision(problem, u, kind=fisher, diagonal=True, data_diagonal=fdiag)
        scale = _scale(h)
    vectors = coef = None
    if precondition == "lowrank":
        lr = lowrank_precision(problem, u, kind=fisher, progress_bar=progress_bar)
        scale, vectors, coef = lr.scale, lr.vectors, lr.values ** -0.5 - 1.0
        notes.update(lowrank_rank=lr.rank, lowrank_captured=round(float(lr.captured), 4),
                     lowrank_converged=lr.converged)
    if precondition == "none":
        scale = np.ones_like(u)
    seconds["precision"] = time.perf_counter() - t0
    notes["fisher"] = fisher
    notes["mode_method"] = mode_method
    logger.info("start: mode %.1f s, whitening %.1f s", seconds["mode"], seconds["precision"])
    latent = Latent(jnp.asarray(problem.free_index), jnp.asarray(u, problem.dtype),
                    jnp.asarray(scale, problem.dtype),
                    None if vectors is None else jnp.asarray(vectors, problem.dtype),
                    None if coef is None else jnp.asarray(coef, problem.dtype))
    return Start(image, np.asarray(bkg), latent, precision, mode.log_density, seconds, notes)


def start_settings(start: Start) -> dict:
    """How the start was reached, for a sampler's settings: ``start_<key>`` of its notes
    (MAP steps, mode steps, whether each search converged, largest whitened gradient)."""
    return {f"start_{k}": v for k, v in (start.notes or {}).items()}


def begin(problem: Problem, start: Start | None, prepare_options: dict):
    """Shared opening of the samplers: the start (prepared unless given), its timings, the
    latent parameterisation, its size and NumPyro's ``init_to_value`` at ``z = 0``."""
    if start is None:
        start = prepare(problem, **prepare_options)
    timings = {f"start_{k}": v for k, v in start.seconds.items()}
    n = int(start.latent.center.shape[0])
    init = init_to_value(values={"z": jnp.zeros(n, problem.dtype)})
    return start, timings, start.latent, n, init


RL_START_ITERATIONS = 100
"""Richardson-Lucy iterations of ``init="rl"``."""


def _rl_start(problem: Problem, init_image, progress_bar: bool = False):
    cfg = problem.config
    opts = em.EMOptions(optimize_bkg=bool(cfg.bkg_free))
    params = em.make_params(problem.datasets, opts, mask=problem.mask,
                            bkg_range=np.asarray(cfg.bkg_range), n_bkg=cfg.n_bkg)
    if init_image is None:
        s = np.asarray(params.exposure)
        counts = sum(float(jnp.sum(ds.counts)) for ds in problem.datasets)
        init_image = np.where(problem.mask, 0.5 * counts / max(float(s.sum()), 1e-300), 0.0)
    state = em.init(jnp.asarray(init_image), cfg.bkg_fixed, problem.datasets, params)
    step = em.build_step(opts)
    for _ in tqdm(range(RL_START_ITERATIONS), desc="start: RL", unit="it",
                  disable=not progress_bar, leave=False):
        state, _ = step(state, problem.datasets, params)
    return np.asarray(state.model), np.asarray(state.bkg_norm)
