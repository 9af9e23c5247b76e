"""Bootstrap of Richardson-Lucy: resample the counts, rerun the algorithm, collect the maps.

Each replicate draws new counts — ``Poisson(d)`` in every bin (``resample="poisson"``) or a
multinomial with the observed total over all bins of all datasets (``"multinomial"``) — and
runs the same RL iterations (:mod:`probdeconv.algorithms.em`, the algorithm of
``probdeconv run``) from the same flat start, so the spread of the replicate maps is the
sampling variability of the *estimator* (RL stopped after ``iterations``), not a Bayesian
posterior: with early stopping it includes RL's regularisation, and its mean is biased the
way the estimator is.  Replicates run in vectorised batches (``jax.vmap`` over a
``lax.scan`` of RL steps), over the observed bins of the data only: a resample is 0
wherever the data are 0, so the reduced EM of :mod:`probdeconv.algorithms.em` runs
unchanged on each replicate (:func:`probdeconv.forward.with_observed_counts`), with the
memory and time of the observed bins, not of the whole data space.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> rng = np.random.default_rng(0)
>>> ds = make_dataset(rng.poisson(20.0, (2, 3, 12)), rng.random((12, 1, 2, 3, 12)))
>>> draws = run_bootstrap(Problem.from_datasets([ds]), num_draws=16, iterations=20)
>>> draws.store.read("image").shape
(1, 16, 12, 1)
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import forward as fm
from ..algorithms import em, map_em
from ..algorithms.accelerate import accelerator_names
from ..errors import ParameterError
from ..forward.problem import Problem
from .draws import Draws, DrawStore
from .start import flat_start

__all__ = ["RESAMPLE", "run_bootstrap"]

logger = logging.getLogger(__name__)

RESAMPLE = ("poisson", "multinomial")


ALGORITHMS = ("RL", "MAP_RL")


@functools.partial(jax.jit, static_argnames=("options", "iterations"))
def _replicates(counts, datasets, params, image0, bkg0, options, iterations: int):
    """EM maps ``[B, lb, Ei]`` and backgrounds ``[B, K]`` for a batch of count sets, each
    given at the observed bins of its dataset (``[B, n_obs]`` per dataset).

    ``options`` is an :class:`em.EMOptions` (RL) or a :class:`map_em.MAPOptions` (MAP-RL).
    """
    step = map_em.step if isinstance(options, map_em.MAPOptions) else em.step

    def one(cs):
        dss = tuple(fm.with_observed_counts(ds, c) for ds, c in zip(datasets, cs))
        state = em.init(image0, bkg0, dss, params)

        def body(st, _):
            st, _ = step(st, dss, params, options)
            return st, None

        state, _ = jax.lax.scan(body, state, None, length=iterations)
        return state.model, state.bkg_norm

    return jax.vmap(one)(counts)


def _resample(rng: np.random.Generator, counts: list[np.ndarray], how: str, n: int) -> list:
    """``n`` resamples of each dataset's counts at its observed bins (``[n, n_obs]``): both
    schemes give 0 wherever the data are 0, so the other bins need no draws."""
    if how == "poisson":
        return [rng.poisson(c, size=(n, *c.shape)).astype(c.dtype) for c in counts]
    sizes = [c.size for c in counts]
    flat = np.concatenate([c.ravel() for c in counts])
    total = int(round(flat.sum()))
    draws = rng.multinomial(total, flat / max(flat.sum(), 1e-300), size=n).astype(flat.dtype)
    out, start = [], 0
    for c, size in zip(counts, sizes):
        out.append(draws[:, start:start + size].reshape(n, *c.shape))
        start += size
    return out


def run_bootstrap(problem: Problem, *, num_draws: int = 100, iterations: int = 50,
                  resample: str = "poisson", acceleration: str = "none",
                  algorithm: str = "RL",
                  alpha_max: float = 10.0, seed: int = 0, batch: int = 8,
                  init_image: np.ndarray | None = None, backend: Any = None,
                  progress_bar: bool = True) -> Draws:
    """Bootstrap replicates of RL or MAP-RL: the spread of the map under resampled counts.

    Parameters
    ----------
    num_draws
        Number of replicates.
    iterations
        RL iterations per replicate (and for the estimate on the observed counts).
    resample
        ``"poisson"`` or ``"multinomial"``.
    acceleration
        ``"none"``, ``"classic"`` (cosipy's RL acceleration up to ``alpha_max``; RL only),
        ``"MaxStep"`` or ``"LineSearch"``.
    algorithm
        ``"RL"`` (maximum likelihood; the problem's priors are ignored) or ``"MAP_RL"``
        (MAP-EM with the problem's gamma image/background priors and further priors such
        as TSV).
    batch
        Replicates per vectorised batch.
    init_image
        Start of every replicate (default: the flat image of :func:`~.start.flat_start`).
    """
    if resample not in RESAMPLE:
        raise ParameterError(f"resample: got {resample!r}; valid choices: "
                             f"{', '.join(RESAMPLE)}.")
    if algorithm not in ALGORITHMS:
        raise ParameterError(f"algorithm: got {algorithm!r}; valid choices for the "
                             f"bootstrap: {', '.join(ALGORITHMS)}.")
    # replicates scan the plain step: accelerators that wrap it (SQUAREM) are left out
    valid = ("none", *accelerator_names(algorithm, stand_ins=False, in_one_step=True))
    if acceleration not in valid:
        raise ParameterError(f"acceleration: got {acceleration!r}; valid choices for the "
                             f"{algorithm} bootstrap: {', '.join(valid)}.")
    for name, value in (("num_draws", num_draws), ("iterations", iterations),
                        ("batch", batch)):
        if int(value) != value or value < 1:
            raise ParameterError(f"{name}: got {value!r}; expected an integer >= 1.")
    cfg = problem.config
    g = cfg.image_gamma
    flat = cfg.image_prior == "flat" or (cfg.image_prior == "gamma" and g.k == 1.0
                                         and g.theta == float("inf"))
    if algorithm == "RL" and (not flat or cfg.priors):
        logger.warning("bootstrap: RL ignores the image priors of the problem (%s%s); the "
                       "replicates are maximum-likelihood RL maps.", cfg.image_prior,
                       ", " + ", ".join(cfg.priors) if cfg.priors else "")
    t_all = time.perf_counter()
    options = em.EMOptions(acceleration=acceleration, optimize_bkg=bool(cfg.bkg_free))
    params = em.make_params(problem.datasets, options, mask=problem.mask,
                            bkg_range=np.asarray(cfg.bkg_range), alpha_max=alpha_max,
                            n_bkg=cfg.n_bkg)
    if algorithm == "MAP_RL":  # the problem's own posterior: its priors, its backgrounds
        params = map_em.MAPParams(em=params, posterior=cfg)
        options = map_em.MAPOptions(acceleration=acceleration)
    image0 = jnp.asarray(flat_start(problem) if init_image is None else init_image,
                         dtype=problem.dtype)
    bkg0 = cfg.bkg_fixed
    counts = [np.asarray(fm.observed_counts(ds)) for ds in problem.datasets]  # [n_obs]
    observed = tuple(jnp.asarray(c)[None] for c in counts)
    est_img, est_bkg = _replicates(observed, problem.datasets, params, image0, bkg0, options,
                                   int(iterations))
    shapes = {"image": problem.model_shape}
    if cfg.bkg_free:
        shapes["bkg_norm"] = (problem.n_bkg,)
    store = DrawStore(1, shapes, backend=backend)
    rng = np.random.default_rng(int(seed))
    t0 = time.perf_counter()
    with tqdm(total=int(num_draws), desc=f"bootstrap {algorithm}", disable=not progress_bar,
              unit="rep") as bar:
        done = 0
        while done < num_draws:
            take = min(int(batch), num_draws - done)
            new = _resample(rng, counts, resample, int(batch))  # full batch: one compile
            images, bkgs = _replicates(tuple(jnp.asarray(c) for c in new), problem.datasets,
                                       params, image0, bkg0, options, int(iterations))
            chunk = {"image": np.asarray(images)[None, :take]}
            if cfg.bkg_free:
                chunk["bkg_norm"] = np.asarray(bkgs)[None, :take]
            store.append(chunk)
            done += take
            bar.update(take)
    timings = {"replicates": time.perf_counter() - t0, "total": time.perf_counter() - t_all}
    settings = {"method": "bootstrap", "algorithm": algorithm, "num_draws": int(num_draws),
                "iterations": int(iterations), "resample": resample,
                "acceleration": acceleration, "alpha_max": float(alpha_max),
                "seed": int(seed)}
    return Draws(store, "bootstrap", settings, timings, independent=True,
                 map_image=np.asarray(est_img[0]), map_bkg=np.asarray(est_bkg[0]))
