"""Gradient MAP: maximise the one log-posterior by L-BFGS, Adam or AutoDelta SVI.

Positivity.  The optimiser works on unconstrained variables ``u`` with
``λ = minimum_flux + exp(u)`` on free pixels (masked pixels are 0 and get no gradient) and
``b = T(v)`` for free background normalisations, ``T`` NumPyro's bijection onto their
support (sigmoid onto ``[lo, hi]``, or ``lo + exp``).  The objective is the
log-posterior *itself*, :func:`probdeconv.forward.posterior.log_posterior`, evaluated at
``(λ(u), b(v))`` — no log-Jacobian is added — so its maximiser is the constrained-space MAP
of MAP-RL's own log-posterior.  (A density transformed with its Jacobian would move the
mode: ``exp(u)`` adds ``Σ u``, which is a different point.)  A pixel whose MAP value is 0 is
approached as ``u → −∞``.  With the flat prior this is the plain EM (RL) fixed point.  With TSV or
entropy priors MAP-RL's fixed point lies slightly off it: its prior filter is ``exp(x)``,
``x = ∇log P_p / (S + 1/θ)``, where stationarity needs ``1 / (1 − x)``, so it stops
``O(x²)`` short of the maximum (measured in the tests: image ~1e-5 relative, log-posterior
~5e-9 relative, for ``|x| < 5e-3``).

Optimisers (:class:`MAPOptions`):

- ``"lbfgs"`` (default, the exact one): ``optax.lbfgs`` with its zoom line search (strong
  Wolfe); a step that would lower the log-posterior is rejected, so the recorded
  log-posterior never decreases.
- ``"adam"``: ``optax.adam`` on the same objective (first order; not monotone).
- ``"autodelta"``: NumPyro SVI with ``AutoDelta`` on :func:`.model.sky_model` and
  ``optax.adam``.  AutoDelta does MAP in the *constrained* space: its loss is
  ``−log p(data, z)`` at the point ``z`` without a Jacobian (checked in the tests), i.e.
  ``−log_posterior`` minus the constants listed in :func:`.model.sky_model` — the same
  maximiser.  It optimises NumPyro's density with support ``λ > 0``, so ``minimum_flux``
  is not applied; its masked entries are placeholders (set to the mean free value).

Pure core: ``state = map_init(...)``, ``state, info = map_step(state, datasets, config,
options)``, ``image, bkg = map_values(state, config)``; :func:`map_run` loops until the
relative change of the log-posterior is below ``tolerance``.

Examples
--------
>>> import numpy as np, jax.numpy as jnp
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.posterior import make_config
>>> rng = np.random.default_rng(0)
>>> ds = make_dataset(rng.poisson(20.0, (2, 3, 12)), rng.random((12, 1, 2, 3, 12)))
>>> cfg = make_config(ds.model_shape)
>>> res = map_run(jnp.ones((12, 1)), None, (ds,), cfg, max_iterations=200)
>>> bool(res.log_posterior[-1] >= res.log_posterior[0]), res.image.shape
(True, (12, 1))
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.distributions.transforms import biject_to
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta
from numpyro.infer.initialization import init_to_value

from .. import forward as fm
from ..errors import ParameterError
from ..forward.posterior import SkyModelConfig, bkg_inside_support, log_posterior
from .model import bkg_support, sky_model

__all__ = ["OPTIMIZERS", "MAPOptions", "MAPState", "MAPInfo", "MAPResult", "map_init",
           "map_step", "build_step", "build_run", "map_values", "map_run", "TRACE_COUNT"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("lbfgs", "adam", "autodelta")


class MAPOptions(NamedTuple):
    """Static choices of a gradient-MAP run (hashable; a change recompiles).

    ``learning_rate`` is Adam's (``adam``, ``autodelta``); L-BFGS takes its step from the
    line search.
    """

    optimizer: str = "lbfgs"
    learning_rate: float = 0.05
    memory_size: int = 10
    max_linesearch_steps: int = 30


def _static(default: Any = None) -> Any:
    return dataclasses.field(default=default, metadata=dict(static=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MAPState:
    """State of a gradient-MAP run.

    ``params`` are the unconstrained variables ``{"image": u, "bkg_norm": v}`` (``lbfgs``,
    ``adam``); for ``autodelta`` ``opt_state`` is NumPyro's ``SVIState`` and the ``SVI``
    object rides along as static data.
    """

    params: Any
    opt_state: Any
    log_posterior: jax.Array  # at the current point
    iteration: jax.Array
    minimum_flux: jax.Array
    svi: Any = _static(None)


class MAPInfo(NamedTuple):
    log_posterior: jax.Array  # after the step
    accepted: jax.Array  # bool: False when the step was rejected (no increase possible)


class MAPResult(NamedTuple):
    """Outcome of :func:`map_run` (values in flux units)."""

    image: jax.Array  # [lb, Ei]
    bkg_norm: jax.Array  # [K]
    log_posterior: np.ndarray  # [iterations + 1]: start, then after each step
    iterations: int
    converged: bool
    state: MAPState


def _check_options(options: MAPOptions) -> None:
    if options.optimizer not in OPTIMIZERS:
        raise ParameterError(f"optimizer: got {options.optimizer!r}; valid choices: "
                             f"{', '.join(OPTIMIZERS)}.")
    if options.optimizer != "lbfgs" and not options.learning_rate > 0:
        raise ParameterError(f"optimizer:learning_rate: got {options.learning_rate!r}; "
                             "expected a number > 0 (e.g. 0.05).")


@functools.lru_cache(maxsize=32)
def _optax(options: MAPOptions) -> optax.GradientTransformation:
    if options.optimizer == "lbfgs":
        return optax.lbfgs(
            memory_size=options.memory_size,
            linesearch=optax.scale_by_zoom_linesearch(
                max_linesearch_steps=options.max_linesearch_steps,
                initial_guess_strategy="one"))
    return optax.adam(options.learning_rate)


def _constrain(params: dict, config: SkyModelConfig, minimum_flux: jax.Array):
    """``(λ, b)`` from the unconstrained variables (masked pixels 0)."""
    image = jnp.where(config.mask, minimum_flux + jnp.exp(params["image"]), 0.0)
    if config.bkg_free:
        bkg = biject_to(bkg_support(config))(params["bkg_norm"])
    else:
        bkg = config.bkg_fixed
    return image, bkg


def _unconstrain(image0, bkg0, config: SkyModelConfig, minimum_flux) -> dict:
    """Inverse of :func:`_constrain`, with starts nudged strictly inside the support."""
    mask = config.mask
    excess = jnp.asarray(image0) - minimum_flux
    free_pos = mask & (excess > 0)
    n = jnp.sum(free_pos)
    ref = jnp.where(n > 0, jnp.sum(jnp.where(free_pos, excess, 0.0)) / jnp.maximum(n, 1), 1.0)
    start = jnp.where(free_pos, excess, 1e-3 * ref)  # zero or masked: a small positive start
    params = {"image": jnp.log(start)}
    if config.bkg_free:
        b = bkg_inside_support(config, jnp.asarray(bkg0, dtype=start.dtype))
        params["bkg_norm"] = biject_to(bkg_support(config)).inv(b)
    return params


def _objective(params, datasets, config, minimum_flux):
    image, bkg = _constrain(params, config, minimum_flux)
    value = -log_posterior(datasets, image, bkg, config)
    return jnp.where(jnp.isnan(value), jnp.inf, value)  # outside the domain for the search


_objective_jit = jax.jit(_objective)
_unconstrain_jit = jax.jit(_unconstrain)


def map_init(image0: jax.Array, bkg0: jax.Array | None, datasets: Sequence[fm.Dataset],
             config: SkyModelConfig, options: MAPOptions | None = None, *,
             minimum_flux: float = 0.0, rng_seed: int = 0) -> MAPState:
    """Initial state at ``(image0, bkg0)`` (flux units; ``bkg0 = None``: ``config.bkg_fixed``).

    Zero or sub-``minimum_flux`` pixels start at ``10⁻³`` of the mean free excess (``log 0``
    has no unconstrained value); free backgrounds start strictly inside their range.
    """
    options = MAPOptions() if options is None else options
    _check_options(options)
    dtype = datasets[0].counts.dtype
    image0 = jnp.asarray(image0, dtype=dtype)
    if image0.shape != config.model_shape:
        raise ParameterError(f"image0 has shape {image0.shape}; expected {config.model_shape} "
                             "(the model axes [lb, Ei]).")
    bkg0 = config.bkg_fixed if bkg0 is None else jnp.asarray(bkg0, dtype=dtype)
    floor = jnp.asarray(minimum_flux, dtype=dtype)
    params = _unconstrain_jit(image0, bkg0, config, floor)
    if options.optimizer == "autodelta":
        if minimum_flux > 0:
            logger.warning("optimizer autodelta: minimum_flux %g is not applied (NumPyro's "
                           "image support is λ > 0); use lbfgs to impose it.", minimum_flux)
        image, bkg = _constrain(params, config, jnp.zeros((), dtype))
        values = {"image": jnp.where(config.mask, image, jnp.mean(image, where=config.mask))}
        if config.bkg_free:
            values["bkg_norm"] = bkg
        guide = AutoDelta(sky_model, init_loc_fn=init_to_value(values=values))
        svi = SVI(sky_model, guide, _optax(options), Trace_ELBO())
        svi_state = svi.init(jax.random.PRNGKey(rng_seed), datasets, config)
        state = MAPState(None, svi_state, jnp.zeros((), dtype), jnp.asarray(0), floor, svi)
        image, bkg = map_values(state, config)
        state = dataclasses.replace(state, log_posterior=log_posterior(datasets, image, bkg,
                                                                       config))
        return _strong(state)
    opt_state = _optax(options).init(params)
    value = -_objective_jit(params, datasets, config, floor)
    return _strong(MAPState(params, opt_state, value, jnp.asarray(0), floor))


def _strong(state: MAPState) -> MAPState:
    """Drop weak types, so the first and later steps see the same types (one compile)."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), state)


def map_values(state: MAPState, config: SkyModelConfig) -> tuple[jax.Array, jax.Array]:
    """``(image, bkg_norm)`` of a state, in flux units (masked pixels 0)."""
    if state.svi is not None:
        p = state.svi.get_params(state.opt_state)
        image = jnp.where(config.mask, p["image_auto_loc"], 0.0)
        bkg = p["bkg_norm_auto_loc"] if config.bkg_free else config.bkg_fixed
        return image, bkg
    return _constrain(state.params, config, state.minimum_flux)


def map_step(state: MAPState, datasets: Sequence[fm.Dataset], config: SkyModelConfig,
             options: MAPOptions) -> tuple[MAPState, MAPInfo]:
    """One optimiser step; returns the new state and the log-posterior it reached."""
    if options.optimizer == "autodelta":
        svi_state, _ = state.svi.update(state.opt_state, datasets, config)
        new = dataclasses.replace(state, opt_state=svi_state, iteration=state.iteration + 1)
        image, bkg = map_values(new, config)
        value = log_posterior(datasets, image, bkg, config)
        new = dataclasses.replace(new, log_posterior=value)
        return new, MAPInfo(value, jnp.isfinite(value))

    opt = _optax(options)

    def f(p):
        return _objective(p, datasets, config, state.minimum_flux)

    if options.optimizer == "lbfgs":
        value, grad = optax.value_and_grad_from_state(f)(state.params, state=state.opt_state)
        updates, opt_state = opt.update(grad, state.opt_state, state.params, value=value,
                                        grad=grad, value_fn=f)
        params = optax.apply_updates(state.params, updates)
        new_value = -optax.tree.get(opt_state, "value")  # the line search's value at params
        # Reject a step that lowers the log-posterior (a failed or approximate line search).
        ok = jnp.isfinite(new_value) & (new_value >= state.log_posterior)
        params, opt_state = jax.tree.map(lambda a, b: jnp.where(ok, a, b),
                                         (params, opt_state), (state.params, state.opt_state))
        new_value = jnp.where(ok, new_value, state.log_posterior)
    else:  # adam
        grad = jax.grad(f)(state.params)
        updates, opt_state = opt.update(grad, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_value = -f(params)
        ok = jnp.isfinite(new_value)
    new = dataclasses.replace(state, params=params, opt_state=opt_state,
                              log_posterior=new_value, iteration=state.iteration + 1)
    return new, MAPInfo(new_value, ok)


TRACE_COUNT: collections.Counter = collections.Counter()
"""How often the jitted runner of each ``(MAPOptions, chunk)`` was traced (compiled)."""


@functools.lru_cache(maxsize=32)
def build_step(options: MAPOptions):
    """A jitted ``step(state, datasets, config)`` for fixed options (cached per options)."""
    _check_options(options)
    return jax.jit(functools.partial(map_step, options=options))


@functools.lru_cache(maxsize=32)
def build_run(options: MAPOptions, chunk: int):
    """A jitted ``run(state, datasets, config, limit, tolerance)``: up to ``limit`` steps.

    At most ``chunk`` (static) steps run inside one ``lax.while_loop``; the loop stops early
    once one step changes the log-posterior by at most ``tolerance · max(1, |logP|)`` or
    a step is not accepted.  Returns ``(state, history[chunk], n_steps, converged, ok)``:
    ``history`` holds the log-posterior after each step (NaN beyond ``n_steps``) and ``ok``
    is False when the last step was not accepted.  Arrays and numbers are arguments, so new
    data of the same shapes reuse the compiled code (``autodelta`` compiles once per run:
    its ``SVI`` object is static).
    """
    _check_options(options)

    def _run(state, datasets, config, limit, tolerance):
        TRACE_COUNT[(options, chunk)] += 1
        history = jnp.full(chunk, jnp.nan, dtype=state.log_posterior.dtype)

        def cond(carry):
            _, _, i, done, _ = carry
            return (i < jnp.minimum(limit, chunk)) & ~done

        def body(carry):
            st, hist, i, _, _ = carry
            new, info = map_step(st, datasets, config, options)
            change = jnp.abs(info.log_posterior - st.log_posterior)
            small = change <= tolerance * jnp.maximum(1.0, jnp.abs(info.log_posterior))
            return new, hist.at[i].set(info.log_posterior), i + 1, small | ~info.accepted, \
                info.accepted

        init = (state, history, jnp.asarray(0), jnp.asarray(False), jnp.asarray(True))
        state, history, n, done, ok = jax.lax.while_loop(cond, body, init)
        return state, history, n, done, ok

    return jax.jit(_run)


def map_run(image0: jax.Array, bkg0: jax.Array | None, datasets: Sequence[fm.Dataset],
            config: SkyModelConfig, options: MAPOptions | None = None, *,
            max_iterations: int = 1000, tolerance: float = 1e-12, minimum_flux: float = 0.0,
            state: MAPState | None = None, chunk: int = 100,
            callback: Callable[[int, float], Any] | None = None) -> MAPResult:
    """Run :func:`map_step` until the log-posterior stops increasing.

    Converged when one step changes the log-posterior by at most
    ``tolerance · max(1, |log-posterior|)``, or (L-BFGS) when no step increases it.

    Parameters
    ----------
    image0, bkg0
        Start (flux units); ignored when ``state`` is given (continue a run).
    max_iterations
        Most optimiser steps.
    tolerance
        Relative change of the log-posterior that counts as converged.
    chunk
        Steps per compiled ``while_loop`` call (see :func:`build_run`).
    callback
        Called as ``callback(steps, log_posterior)`` after each chunk (e.g. a progress bar).

    Returns
    -------
    MAPResult
        Image, background normalisations, the log-posterior history, steps taken,
        whether it converged and the final state.
    """
    options = MAPOptions() if options is None else options
    if max_iterations < 1:
        raise ParameterError(f"max_iterations: got {max_iterations!r}; expected an integer >= 1.")
    if state is None:
        state = map_init(image0, bkg0, datasets, config, options, minimum_flux=minimum_flux)
    run = build_run(options, int(chunk))
    history = [np.asarray([float(state.log_posterior)])]
    done, ok, steps = False, True, 0
    while steps < max_iterations and not done:
        state, hist, n, done, ok = run(state, datasets, config, max_iterations - steps,
                                       tolerance)
        n, done, ok = int(n), bool(done), bool(ok)
        history.append(np.asarray(hist)[:n])
        steps += n
        if callback is not None:
            callback(steps, float(state.log_posterior))
    history = np.concatenate(history)
    converged = done and (ok or options.optimizer == "lbfgs")
    if not ok and options.optimizer != "lbfgs":
        logger.warning("gradient MAP (%s): the log-posterior became %s at step %d; lower the "
                       "learning rate.", options.optimizer, history[-1], steps)
    image, bkg = map_values(state, config)
    logger.info("gradient MAP (%s): %d steps, log-posterior %.12g, converged %s",
                options.optimizer, steps, history[-1], converged)
    return MAPResult(image, bkg, history, steps, converged, state)
