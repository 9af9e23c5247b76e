"""Stochastic variational inference: AutoNormal or low-rank Gaussian guides (NumPyro, optax).

The guide approximates the posterior of the whitened log-flux ``z`` of :mod:`.latent` (the
model is :func:`~.latent.latent_model`, i.e. :func:`~.model.sky_model` itself): a Gaussian
in ``z`` is a log-normal in flux.  It starts at ``z = 0`` (the log-space mode) with scale
``init_scale`` (the whitening makes ``z`` about unit scale), is fitted by ``optax.adam``
with an exponentially decaying learning rate, and posterior draws come from the fitted
guide (``guide.sample_posterior``) in batches appended to a :class:`~.draws.DrawStore`.
The fit runs in about 20 compiled chunks of steps (a progress bar; the datasets are
arguments of the compiled loop, not constants in it).  Each draw is stored with
``stats.log_p`` (the log-density of ``z``: log-posterior + log-Jacobian) and
``stats.log_q`` (the guide's log-density): the importance weights of PSIS-LOO
(:mod:`.weights`).

Timings (``Draws.timings``, seconds) cover the whole run: ``start_map``, ``start_mode``,
``start_precision`` (the common start, :func:`~.start.prepare`; absent when a prepared
``start`` is passed), ``init`` (the guide's set-up), ``compile`` (compiling the fit
loop), ``fit`` (the optimisation steps), ``draws`` (drawing and storing) and ``total``
(all of it, from the call to the return).

Approximation error.  For one pixel with a ``Gamma(a, b)`` posterior the best log-normal
(the minimum of ``KL(q‖p)``) has the exact mean ``a/b`` and a standard deviation larger by
a factor ``√(a (e^{1/a} − 1)) ≈ 1 + 1/(4a)``; with correlated pixels a diagonal guide
(``AutoNormal``) under-estimates marginal variances, a low-rank guide much less so.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> p = Problem.from_datasets([ds])
>>> draws = run_svi(p, num_steps=500, num_draws=200, progress_bar=False)
>>> draws.store.read("image").shape
(1, 200, 1, 1)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from tqdm.auto import tqdm

from ..errors import ParameterError
from ..forward.problem import Problem
from .draws import Draws, DrawStore
from .latent import latent_model, latent_to_flux
from .start import Start, begin, start_settings
from .weights import latent_log_p, svi_log_q

__all__ = ["GUIDES", "run_svi"]

logger = logging.getLogger(__name__)

GUIDES = ("normal", "lowrank")

_PROGRESS_CHUNKS = 20
"""The fit runs in about this many compiled chunks of steps (one progress update each)."""


def _fit_chunk(svi: SVI, length: int):
    """``run(state, limit, *model_args)``: up to ``length`` SVI steps in one compiled loop.

    The datasets are arguments of the compiled loop (never constants baked into it); the
    losses of the ``limit`` steps taken are returned in a ``[length]`` buffer (NaN beyond).
    """

    def run(state, limit, datasets, config, latent):
        def body(i, carry):
            st, losses = carry
            st, loss = svi.update(st, datasets, config, latent)
            return st, losses.at[i].set(loss)

        losses = jnp.full(length, jnp.nan, dtype=latent.center.dtype)
        return jax.lax.fori_loop(0, limit, body, (state, losses))

    return jax.jit(run)


def _non_finite_loss(losses: np.ndarray, learning_rate: float) -> ParameterError:
    """The error for a fit whose loss stopped being finite, naming the likely cause."""
    bad = int(np.flatnonzero(~np.isfinite(losses))[0])
    if bad == 0:
        return ParameterError(
            "SVI: the loss is not finite at the first step, i.e. the model's log-density is "
            "not finite at its start (the log-space mode): check the data and priors (e.g. "
            "free pixels that no data constrain under an improper prior: mask them); the "
            "learning rate is not the cause.")
    return ParameterError(
        f"SVI: the loss became {losses[bad]} at step {bad + 1} after finite values (last "
        f"{losses[bad - 1]:.6g}); the optimiser stepped outside the region where the "
        f"log-density is finite: lower learning_rate (now {learning_rate}) or init_scale.")


def run_svi(problem: Problem, *, guide: str = "normal", rank: int | None = None,
            num_steps: int = 5000, learning_rate: float = 0.01, decay: float = 0.1,
            num_particles: int = 1, init_scale: float = 0.1, num_draws: int = 1000,
            seed: int = 0, batch_draws: int | None = None, backend: Any = None,
            progress_bar: bool = True, start: Start | None = None,
            **prepare_options: Any) -> Draws:
    """Fit a Gaussian guide on the whitened log-flux and draw from it.

    Parameters
    ----------
    guide
        ``"normal"`` (:class:`~numpyro.infer.autoguide.AutoNormal`, diagonal) or
        ``"lowrank"`` (:class:`~numpyro.infer.autoguide.AutoLowRankMultivariateNormal`).
    rank
        Rank of the low-rank guide (default NumPyro's, about ``√n``).
    num_steps, learning_rate, decay
        Adam steps; the learning rate decays exponentially to ``decay × learning_rate``.
    num_particles
        ELBO Monte-Carlo particles per step.
    init_scale
        Initial standard deviation of the guide in whitened units.
    num_draws
        Posterior draws taken from the fitted guide.
    batch_draws
        Draws converted and stored per batch (default: all at once when small).
    """
    if guide not in GUIDES:
        raise ParameterError(f"guide: got {guide!r}; valid choices: {', '.join(GUIDES)}.")
    for name, value in (("num_steps", num_steps), ("num_draws", num_draws)):
        if int(value) != value or value < 1:
            raise ParameterError(f"{name}: got {value!r}; expected an integer >= 1.")
    if not learning_rate > 0 or not 0 < decay <= 1:
        raise ParameterError(f"learning_rate {learning_rate!r} must be > 0 and decay "
                             f"{decay!r} in (0, 1].")
    t_all = time.perf_counter()
    prepare_options.setdefault("progress_bar", progress_bar)
    start, timings, latent, n, init = begin(problem, start, prepare_options)
    if guide == "normal":
        g = AutoNormal(latent_model, init_loc_fn=init, init_scale=init_scale)
    else:
        kw = {} if rank is None else {"rank": int(rank)}
        g = AutoLowRankMultivariateNormal(latent_model, init_loc_fn=init,
                                          init_scale=init_scale, **kw)
    schedule = optax.exponential_decay(learning_rate, int(num_steps), decay)
    svi = SVI(latent_model, g, optax.adam(schedule), Trace_ELBO(num_particles=num_particles))
    key = jax.random.PRNGKey(int(seed))
    key, fit_key = jax.random.split(key)
    args = (problem.datasets, problem.config, latent)
    t0 = time.perf_counter()
    state = svi.init(fit_key, *args)
    timings["init"] = time.perf_counter() - t0
    length = int(min(num_steps, max(1, -(-int(num_steps) // _PROGRESS_CHUNKS))))
    t0 = time.perf_counter()
    run = _fit_chunk(svi, length).lower(state, jnp.asarray(length), *args).compile()
    timings["compile"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses = []
    with tqdm(total=int(num_steps), desc="SVI fit", unit="step", disable=not progress_bar,
              leave=False) as bar:
        while sum(map(len, losses)) < num_steps:
            take = min(length, int(num_steps) - sum(map(len, losses)))
            state, chunk = run(state, jnp.asarray(take), *args)
            chunk = np.asarray(chunk)[:take]
            losses.append(chunk)
            bar.update(take)
            bar.set_postfix_str(f"loss {chunk[-1]:.6g}", refresh=False)
            if not np.all(np.isfinite(chunk)):
                break
    losses = np.concatenate(losses)
    timings["fit"] = time.perf_counter() - t0
    if not np.all(np.isfinite(losses)):
        raise _non_finite_loss(losses, learning_rate)
    params = svi.get_params(state)
    logger.info("SVI: %d steps in %.1f s (+ %.1f s compilation), final loss %.10g",
                len(losses), timings["fit"], timings["compile"], losses[-1])
    shapes = {"image": problem.model_shape, "stats.log_p": (), "stats.log_q": ()}
    if problem.config.bkg_free:
        shapes["bkg_norm"] = (problem.n_bkg,)
    store = DrawStore(1, shapes, backend=backend)
    batch = int(batch_draws or max(1, min(num_draws, 2.5e8 // (8 * max(
        int(np.prod(problem.model_shape)), n)))))
    t0 = time.perf_counter()
    done = 0
    while done < num_draws:
        take = min(batch, num_draws - done)
        key, sub = jax.random.split(key)
        z = g.sample_posterior(sub, params, sample_shape=(take,))["z"]
        images, bkgs = latent_to_flux(z, problem.config, latent)
        chunk = {"image": np.asarray(images)[None],  # and the importance weights' parts
                 "stats.log_p": latent_log_p(z, *args)[None],
                 "stats.log_q": svi_log_q(g, params, z)[None]}
        if problem.config.bkg_free:
            chunk["bkg_norm"] = np.asarray(bkgs)[None]
        store.append(chunk)
        done += take
    timings["draws"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    settings = {"method": "svi", "guide": guide, "rank": rank, "num_steps": int(num_steps),
                "learning_rate": float(learning_rate), "decay": float(decay),
                "num_particles": int(num_particles), "init_scale": float(init_scale),
                "num_draws": int(num_draws), "seed": int(seed),
                "final_loss": float(losses[-1]),
                "parameterisation": "whitened log-flux around the log-space mode"}
    settings.update(start_settings(start))
    return Draws(store, "svi", settings, timings, independent=True,
                 map_image=start.map_image, map_bkg=start.map_bkg, extras={"loss": losses},
                 start=start)
