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

import logging
import time
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from numpyro.infer import init_to_value

from .. import forward as fm
from ..algorithms import em
from ..errors import ParameterError
from ..forward.problem import Problem
from .latent import Latent, find_mode, log_space_precision, start_vector, whitening
from .map import MAPOptions, map_run

__all__ = ["PRECONDITION", "Start", "flat_start", "find_map", "prepare", "begin"]

logger = logging.getLogger(__name__)

PRECONDITION = ("diagonal", "dense", "none")


class Start(NamedTuple):
    """Where the samplers start: the MAP, the log-space mode and its Laplace precision."""

    map_image: np.ndarray  # [lb, Ei] flux-space MAP (masked 0)
    map_bkg: np.ndarray  # [K]
    latent: Latent  # center = log-space mode, scale = 1/sqrt(diag precision)
    precision: np.ndarray | None  # [n, n] in u (log-space) coordinates, when asked
    log_density: float  # at the mode
    seconds: dict


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


def find_map(problem: Problem, *, init_image: np.ndarray | None = None,
             max_iterations: int = 1000, tolerance: float = 1e-10):
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
    res = map_run(jnp.asarray(init_image), None, problem.datasets, cfg, MAPOptions(),
                  max_iterations=max_iterations, tolerance=tolerance)
    return res


def _scale(diag: np.ndarray) -> np.ndarray:
    """``1/√diag`` where finite and positive, else 1."""
    ok = np.isfinite(diag) & (diag > 0)
    return np.where(ok, 1.0 / np.sqrt(np.where(ok, diag, 1.0)), 1.0)


def prepare(problem: Problem, *, init: str = "map", init_image: np.ndarray | None = None,
            map_iterations: int = 1000, mode_iterations: int = 500,
            precondition: str = "diagonal", fisher: str = "expected", full: bool = False,
            dense_limit: int = 2048, batch_size: int | None = None) -> Start:
    """MAP, log-space mode and whitening scales: the common start of every sampler.

    Parameters
    ----------
    init
        ``"map"`` (gradient MAP by :func:`~.map.map_run`) or ``"rl"`` (Richardson-Lucy,
        100 iterations, then the log-space refinement); ``"image"`` uses ``init_image``
        as the MAP.
    precondition
        ``"diagonal"`` (default): ``scale = 1/√diag(H_u)``; ``"dense"``: whiten by the full
        log-space Laplace covariance, ``u = û + S z`` with ``S Sᵀ = H_u⁻¹`` (up to
        ``dense_limit`` parameters; beyond, diagonal); ``"none"``: ``scale = 1``.
    full
        Also keep the full log-space precision ``H_u`` (for the Laplace approximation).
    """
    if precondition not in PRECONDITION:
        raise ParameterError(f"precondition: got {precondition!r}; valid choices: "
                             f"{', '.join(PRECONDITION)}.")
    seconds = {}
    t0 = time.perf_counter()
    cfg = problem.config
    if init == "map":
        res = find_map(problem, init_image=init_image, max_iterations=map_iterations)
        image, bkg = np.asarray(res.image), np.asarray(res.bkg_norm)
        if not res.converged:
            logger.warning("MAP start: not converged after %d L-BFGS steps (log-posterior "
                           "%.10g); the log-space refinement continues from there.",
                           res.iterations, res.log_posterior[-1])
    elif init == "rl":
        image, bkg = _rl_start(problem, init_image)
    elif init == "image":
        if init_image is None:
            raise ParameterError("init='image' needs init_image (an [lb, Ei] array).")
        image, bkg = np.asarray(init_image, dtype=np.float64), np.asarray(cfg.bkg_fixed)
    else:
        raise ParameterError(f"init: got {init!r}; valid choices: map, rl, image.")
    image = np.where(problem.mask, image, 0.0)
    seconds["map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    u0 = start_vector(problem, image, bkg)
    n_par = int(u0.shape[0])
    dense = precondition == "dense" and n_par <= dense_limit
    want_h = precondition != "none" or full
    scale0 = None
    if want_h:  # whitened search: bright and faint pixels (and backgrounds) alike
        _, h0 = log_space_precision(problem, u0, kind=fisher, diagonal=not (dense or full),
                                    batch_size=batch_size)
        scale0 = whitening(h0) if dense else _scale(np.diag(h0) if h0.ndim == 2 else h0)
    u, value, n = find_mode(problem, u0, scale=scale0, max_iterations=mode_iterations)
    seconds["mode"] = time.perf_counter() - t0
    logger.info("log-space mode after %d L-BFGS steps: log-density %.10g", n, value)
    t0 = time.perf_counter()
    precision, scale = None, np.ones_like(u)
    if want_h:
        _, h = log_space_precision(problem, u, kind=fisher, diagonal=not (dense or full),
                                   batch_size=batch_size)
        precision = h if full else None
        if dense:
            scale = whitening(h)
        elif precondition in ("diagonal", "dense"):
            scale = _scale(np.diag(h) if h.ndim == 2 else h)
    seconds["precision"] = time.perf_counter() - t0
    latent = Latent(jnp.asarray(problem.free_index), jnp.asarray(u, problem.dtype),
                    jnp.asarray(scale, problem.dtype))
    return Start(image, np.asarray(bkg), latent, precision, value, seconds)


def begin(problem: Problem, start: Start | None, prepare_options: dict):
    """Shared opening of the samplers: the start (prepared unless given), its timings, the
    latent parameterisation, its size and NumPyro's ``init_to_value`` at ``z = 0``."""
    if start is None:
        start = prepare(problem, **prepare_options)
    timings = {f"start_{k}": v for k, v in start.seconds.items()}
    n = int(start.latent.center.shape[0])
    init = init_to_value(values={"z": jnp.zeros(n, problem.dtype)})
    return start, timings, start.latent, n, init


def _rl_start(problem: Problem, init_image):
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
    for _ in range(100):
        state, _ = step(state, problem.datasets, params)
    return np.asarray(state.model), np.asarray(state.bkg_norm)
