"""NUTS / HMC on the sky model (NumPyro), in chunks of draws streamed to a store.

The sampler runs on :func:`~.latent.latent_model` — :func:`~.model.sky_model` conditioned on
the whitened log-flux parameterisation of :mod:`.latent` (see there for why): the chains
start near the log-space posterior mode (reached from the MAP image of
:func:`~.map.map_run`) with a small random spread, the step size and a diagonal (or dense)
mass matrix are adapted during warm-up, and the draws of the flux image and background
normalisations are appended to a :class:`~.draws.DrawStore` chunk by chunk: after the
first call, ``mcmc.post_warmup_state`` is set to the last state and ``mcmc.run`` continues
the same chains for the next chunk (no new warm-up, no recompilation).  Moments are kept
online, so even a file-backed run never holds more than one chunk in memory.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> p = Problem.from_datasets([ds], image_prior="gamma", gamma=(1.0, 100.0))
>>> draws = run_mcmc(p, num_warmup=100, num_samples=100, chains=1, progress_bar=False)
>>> draws.store.read("image").shape
(1, 100, 1, 1)
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import jax
import numpy as np
from numpyro.infer import HMC, MCMC, NUTS

from ..errors import ParameterError
from ..forward.problem import Problem
from .draws import Draws, DrawStore
from .latent import latent_model
from .start import Start, begin, start_settings

__all__ = ["METHODS", "STAT_NAMES", "run_mcmc", "auto_chunk_size"]

logger = logging.getLogger(__name__)

METHODS = ("nuts", "hmc")

_EXTRA_FIELDS = ("diverging", "energy", "num_steps", "accept_prob", "adapt_state.step_size",
                 "potential_energy")
STAT_NAMES = ("diverging", "energy", "n_steps", "acceptance_rate", "step_size", "lp",
              "tree_depth")
"""Sample statistics kept per draw (ArviZ names, as :func:`arviz.from_numpyro` gives them)."""


def auto_chunk_size(problem: Problem, chains: int, num_samples: int,
                    memory_bytes: float = 5e8) -> int:
    """Draws per chunk so that one chunk of images (plus NumPyro's copy) fits ``memory_bytes``."""
    per_draw = 8 * (int(np.prod(problem.model_shape)) * 2 + problem.n_params + 16) * chains
    return int(max(1, min(num_samples, memory_bytes // per_draw)))


def _stats(extra: dict) -> dict[str, np.ndarray]:
    n_steps = np.asarray(extra["num_steps"])
    return {
        "stats.diverging": np.asarray(extra["diverging"], dtype=bool),
        "stats.energy": np.asarray(extra["energy"], dtype=np.float64),
        "stats.n_steps": n_steps.astype(np.int64),
        "stats.acceptance_rate": np.asarray(extra["accept_prob"], dtype=np.float64),
        "stats.step_size": np.asarray(extra["adapt_state.step_size"], dtype=np.float64),
        "stats.lp": -np.asarray(extra["potential_energy"], dtype=np.float64),
        "stats.tree_depth": np.floor(np.log2(np.maximum(n_steps, 1))).astype(np.int64) + 1,
    }


def run_mcmc(problem: Problem, *, method: str = "nuts", num_warmup: int = 500,
             num_samples: int = 1000, chains: int = 2, seed: int = 0,
             target_accept: float = 0.8, dense_mass: bool = False, max_tree_depth: int = 10,
             num_steps: int | None = None, trajectory_length: float | None = None,
             thinning: int = 1, chain_method: str = "sequential", init_spread: float = 0.5,
             chunk_size: int | None = None, backend: Any = None, progress_bar: bool = True,
             start: Start | None = None, **prepare_options: Any) -> Draws:
    """Sample the posterior with NUTS (default) or HMC.

    Parameters
    ----------
    problem
        The inference problem.
    method
        ``"nuts"`` or ``"hmc"`` (fixed ``num_steps`` or ``trajectory_length``).
    num_warmup, num_samples, chains, seed, thinning
        As in :class:`numpyro.infer.MCMC` (``num_samples`` per chain, before thinning).
    target_accept
        Target acceptance probability of the step-size adaptation.
    dense_mass
        Adapt a dense mass matrix (default diagonal).
    max_tree_depth
        NUTS tree depth limit (``2**depth`` leapfrog steps at most).
    chain_method
        ``"sequential"``, ``"vectorized"`` or ``"parallel"`` (needs as many devices).
    init_spread
        Standard deviation of the chains' starting points around the log-space mode, in
        whitened units (about posterior standard deviations).
    chunk_size
        Draws per chunk (default: all at once when they fit in ~0.5 GB).
    backend
        Storage the draws stream into (e.g. :class:`probdeconv.io.draws.DrawsFile`; default
        memory).
    progress_bar
        NumPyro's progress bars for warm-up and sampling.
    start
        A prepared :class:`~.start.Start` (skips the MAP and the mode search).
    **prepare_options
        Passed to :func:`~.start.prepare` (``init``, ``precondition``, ``fisher``, ...).

    Returns
    -------
    Draws
        The draws and how they were made (:class:`probdeconv.results.posterior.Posterior`
        turns them into maps).
    """
    if method not in METHODS:
        raise ParameterError(f"method: got {method!r}; valid choices: {', '.join(METHODS)}.")
    for name, value, low in (("num_warmup", num_warmup, 0), ("num_samples", num_samples, 1),
                             ("chains", chains, 1), ("thinning", thinning, 1),
                             ("max_tree_depth", max_tree_depth, 1)):
        if int(value) != value or value < low:
            raise ParameterError(f"{name}: got {value!r}; expected an integer >= {low}.")
    if not 0.0 < target_accept < 1.0:
        raise ParameterError(f"target_accept: got {target_accept!r}; expected a number in "
                             "(0, 1), e.g. 0.8.")
    t_all = time.perf_counter()
    prepare_options.setdefault("progress_bar", progress_bar)
    start, timings, latent, n, init = begin(problem, start, prepare_options)
    if method == "nuts":
        kernel = NUTS(latent_model, target_accept_prob=target_accept, dense_mass=dense_mass,
                      max_tree_depth=int(max_tree_depth), init_strategy=init)
    else:
        if num_steps is None and trajectory_length is None:
            trajectory_length = 2.0 * math.pi
        kernel = HMC(latent_model, target_accept_prob=target_accept, dense_mass=dense_mass,
                     num_steps=num_steps, trajectory_length=trajectory_length,
                     init_strategy=init)
    draws_out = -(-int(num_samples) // int(thinning))
    if chunk_size is None:
        chunk_size = auto_chunk_size(problem, chains, draws_out)
    n_chunks = -(-draws_out // max(int(chunk_size), 1))
    per_chunk = -(-draws_out // n_chunks)  # equal chunks: one compiled sampler
    mcmc = MCMC(kernel, num_warmup=int(num_warmup), num_samples=per_chunk * int(thinning),
                num_chains=int(chains), thinning=int(thinning), chain_method=chain_method,
                progress_bar=progress_bar, jit_model_args=True)
    key = jax.random.PRNGKey(int(seed))
    key, sub = jax.random.split(key)
    spread = init_spread * jax.random.normal(sub, (int(chains), n), dtype=problem.dtype)
    init_params = {"z": spread if chains > 1 else spread[0]}
    args = (problem.datasets, problem.config, latent)
    shapes = {"image": problem.model_shape}
    if problem.config.bkg_free:
        shapes["bkg_norm"] = (problem.n_bkg,)
    shapes.update({f"stats.{k}": () for k in STAT_NAMES})
    dtypes = {"stats.diverging": bool, "stats.n_steps": np.int64, "stats.tree_depth": np.int64}
    store = DrawStore(chains, shapes, dtypes, backend=backend)
    t0 = time.perf_counter()
    kept = 0
    for c in range(n_chunks):
        if c == 0:
            mcmc.run(key, *args, init_params=init_params, extra_fields=_EXTRA_FIELDS)
            timings["warmup_and_first_chunk"] = time.perf_counter() - t0
        else:
            mcmc.post_warmup_state = mcmc.last_state
            mcmc.run(mcmc.post_warmup_state.rng_key, *args, extra_fields=_EXTRA_FIELDS)
        take = min(per_chunk, draws_out - kept)
        samples = mcmc.get_samples(group_by_chain=True)
        chunk = {"image": np.asarray(samples["image"])[:, :take]}
        if problem.config.bkg_free:
            chunk["bkg_norm"] = np.asarray(samples["bkg_norm"])[:, :take]
        stats = _stats(mcmc.get_extra_fields(group_by_chain=True))
        chunk.update({k: v[:, :take] for k, v in stats.items()})
        store.append(chunk)
        kept += take
        logger.info("%s: chunk %d/%d, %d draws per chain stored", method.upper(), c + 1,
                    n_chunks, kept)
    timings["sampling"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    divergences = int(np.sum(store.read("stats.diverging")))
    if divergences:
        logger.warning("%s: %d divergent transitions after warm-up; raise target_accept "
                       "(now %g) or use dense_mass.", method.upper(), divergences, target_accept)
    settings = {"method": method, "num_warmup": int(num_warmup), "num_samples": int(num_samples),
                "chains": int(chains), "seed": int(seed), "target_accept": float(target_accept),
                "dense_mass": bool(dense_mass), "max_tree_depth": int(max_tree_depth),
                "thinning": int(thinning), "chain_method": chain_method,
                "chunk_size": int(per_chunk), "chunks": int(n_chunks),
                "parameterisation": "whitened log-flux around the log-space mode"}
    settings.update(start_settings(start))
    if method == "hmc":
        settings.update(num_steps=num_steps, trajectory_length=trajectory_length)
    return Draws(store, method, settings, timings, independent=False,
                 map_image=start.map_image, map_bkg=start.map_bkg, start=start,
                 mcmc=mcmc if n_chunks == 1 else None)
