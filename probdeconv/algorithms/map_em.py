"""MAP-EM (cosipy's ``MAP_RL``) as pure ``init`` / ``step`` functions.

One iteration (spec §2):

1. ``λ_EM = max((λ ⊙ Aᵀ(d/E) + k − 1) / (S + 1/θ), minimum_flux)`` (gamma prior in closed form);
2. prior filter ``F = exp(Σ_p ∇log P_p(λ_EM) / (S + 1/θ))`` (gradients by ``jax.grad``);
   ``λ_new = F ⊙ λ_EM``;
3. with response weighting ``λ ← λ_prev + w ⊙ (λ_new − λ_prev)``; mask; clip;
4. ``b_k ← clip((b_k Σ B_k (d/E) + k_b − 1) / (Σ B_k + 1/θ_b), range_k)``; with a
   smoothness prior between background time nodes the same surrogate plus the prior is
   maximised by a few Newton steps in ``log b`` (:func:`_walk_m_step`);
5. the new expectation, log-likelihood, log-priors and log-posterior.

The priors are the posterior configuration of :mod:`probdeconv.forward.posterior` (the one
the NumPyro model uses): ``(k, θ)`` and ``(k_b, θ_b)`` are its :func:`image_gamma` and
:func:`bkg_gamma`, ``P_p`` its :func:`filter_log_prior` (TSV, entropy, log-normal), the
backgrounds are fitted when it has them free, and the registered log-priors are its
:func:`log_prior_terms`.

Acceleration composes: ``MaxStep`` / ``LineSearch`` scale the step ``λ_new − λ_prev``
(objective: the log-posterior, expectation linear in the step); ``SQUAREM`` wraps the step.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import forward as fm
from ..errors import ParameterError
from ..forward.posterior import (
    SkyModelConfig,
    bkg_gamma,
    filter_log_prior,
    image_gamma,
    log_prior_terms,
)
from . import accelerate
from .em import (
    EMParams,
    EMState,
    background_products,
    expectations,
    logliks,
    ratios_and_backprojection,
    sky_counts,
)

__all__ = ["MAPOptions", "MAPParams", "MAPInfo", "init", "step", "log_priors",
           "log_posterior", "build_step", "TRACE_COUNT"]


MAX_LOG_FILTER = 30.0
_TINY = 1e-300


class MAPOptions(NamedTuple):
    """Static choices of MAP-EM (whether backgrounds are fitted is the posterior's
    ``bkg_free``)."""

    weighting: bool = False
    acceleration: str = "none"  # "none" or one MAP_RL runs (accelerate.REGISTRY)


class MAPParams(NamedTuple):
    """Dynamic numbers: the shared EM parameters and the posterior's priors."""

    em: EMParams
    posterior: SkyModelConfig  # priors on image and backgrounds (forward.posterior)


class MAPInfo(NamedTuple):
    prior_filter: jax.Array  # [lb, Ei]
    alpha: jax.Array
    loglik: jax.Array  # [n_datasets]
    log_prior: dict  # forward.posterior.log_prior_terms: {'gamma_model', 'gamma_bkg', name...}
    log_posterior: jax.Array


def init(model, bkg_norm, datasets: Sequence[fm.Dataset], params: MAPParams) -> EMState:
    """Initial state: the expectation of the given image."""
    model = jnp.asarray(model)
    bkg_norm = jnp.asarray(bkg_norm, dtype=model.dtype)
    del params
    return EMState(model, bkg_norm, sky_counts(datasets, model), jnp.asarray(0, jnp.int32))


def log_priors(model, bkg_norm, params: MAPParams) -> dict:
    """The posterior's log-prior terms at the iterate (:func:`log_prior_terms`, as cosipy
    names them: ``gamma_model``, ``gamma_bkg`` when the backgrounds are fitted, prior names)."""
    return log_prior_terms(model, bkg_norm, params.posterior)


def log_posterior(datasets, model, bkg_norm, sky, params: MAPParams) -> jax.Array:
    """``Σ logL + Σ log priors`` (no ``log d!`` terms) with the reduced expectation ``sky``."""
    lp = log_priors(model, bkg_norm, params)
    return jnp.sum(logliks(datasets, sky, bkg_norm)) + sum(lp.values(),
                                                            jnp.zeros((), model.dtype))


def _map_update(state: EMState, datasets, params: MAPParams, options: MAPOptions):
    em_p, cfg = params.em, params.posterior
    gamma, gamma_b = image_gamma(cfg), bkg_gamma(cfg)
    expect = expectations(datasets, state.sky, state.bkg_norm)
    ratios, t = ratios_and_backprojection(datasets, expect)  # d / E at observed bins, Aᵀ(d / E)
    free = em_p.mask & (em_p.exposure > 0)
    denom = jnp.where(free, em_p.exposure + 1.0 / gamma.theta, 1.0)
    model_em = jnp.where(free, (state.model * t + gamma.k - 1.0) / denom, 0.0)
    model_em = jnp.maximum(model_em, em_p.minimum_flux)
    grad = jax.grad(filter_log_prior)(model_em, cfg)  # [lb, Ei]; 0 without such priors
    # The exponent is clipped at ±MAX_LOG_FILTER so that a prior far too strong for the
    # data's scale saturates instead of overflowing to inf / NaN.
    prior_filter = jnp.where(free, jnp.exp(jnp.clip(grad / denom, -MAX_LOG_FILTER,
                                                    MAX_LOG_FILTER)), 1.0)
    model = prior_filter * model_em
    if options.weighting:
        model = state.model + em_p.weight * (model - state.model)
    model = jnp.where(em_p.mask, model, 0.0)
    model = jnp.maximum(model, em_p.minimum_flux)
    bkg = state.bkg_norm
    if cfg.bkg_free and bkg.shape[0] > 0:
        prod = background_products(datasets, ratios, bkg)
        denom = em_p.summed_bkg + 1.0 / gamma_b.theta
        new = (bkg * prod + gamma_b.k - 1.0) / denom
        if cfg.bkg_walk is not None:  # nodes coupled by the walk: M-step by Newton in log b
            new = _walk_m_step(bkg * prod + gamma_b.k - 1.0, denom, new, cfg.bkg_walk)
        new = jnp.where(em_p.summed_bkg > 0, new, bkg)
        bkg = jnp.clip(new, em_p.bkg_range[:, 0], em_p.bkg_range[:, 1])
    return model, bkg, prior_filter


WALK_NEWTON_STEPS = 12


def _walk_m_step(a: jax.Array, c: jax.Array, start: jax.Array, walk) -> jax.Array:
    """The background M-step with the random walk between time nodes.

    Maximises the EM surrogate plus the walk, ``Σ_k (a_k log b_k − c_k b_k) + log P_walk(b)``
    (``a = b Σ B (d/E) + k_b − 1``, ``c = Σ B + 1/θ_b``), concave in ``u = log b``, by
    :data:`WALK_NEWTON_STEPS` Newton steps (each move at most 1 in ``u``) from the
    closed-form update without the walk.  A generalised EM step: the log-posterior does not
    fall, and its fixed point is the MAP.
    """
    a = jnp.maximum(a, _TINY)
    c = jnp.maximum(c, 1e-12 * jnp.max(c))  # a node without template: keep h regular
    walk_u = lambda u: walk.log_prob(jnp.exp(u))  # noqa: E731  (quadratic in u)
    u0 = jnp.log(jnp.maximum(start, _TINY))
    hess_walk = jax.hessian(walk_u)(u0)  # [K, K], constant

    def newton(u, _):
        g = a - c * jnp.exp(u) + jax.grad(walk_u)(u)
        h = hess_walk - jnp.diag(c * jnp.exp(u))
        du = jnp.linalg.solve(h, -g)
        return u + jnp.clip(du, -1.0, 1.0), None

    u, _ = jax.lax.scan(newton, u0, None, length=WALK_NEWTON_STEPS)
    return jnp.exp(u)


def step(state: EMState, datasets, params: MAPParams, options: MAPOptions):
    """One MAP-EM iteration (MaxStep / LineSearch applied along its step when asked)."""
    model, bkg, prior_filter = _map_update(state, datasets, params, options)
    alpha = jnp.asarray(1.0, model.dtype)
    if options.acceleration in accelerate.SEARCHED:
        d = jnp.where(params.em.mask, model - state.model, 0.0)
        sky_d = sky_counts(datasets, d)
        hi = jnp.maximum(jnp.minimum(
            accelerate.feasible_alpha(state.model, d, params.em.minimum_flux),
            params.em.alpha_max), 1.0)

        def objective(a):
            sky = tuple(s + a * sd for s, sd in zip(state.sky, sky_d))
            return log_posterior(datasets, state.model + a * d, bkg, sky, params)

        alpha, _ = accelerate.search_alpha(options.acceleration, objective,
                                           jnp.asarray(1.0, model.dtype), hi)
        model = jnp.where(params.em.mask,
                          jnp.maximum(state.model + alpha * d, params.em.minimum_flux), 0.0)
        new_sky = tuple(s + alpha * sd for s, sd in zip(state.sky, sky_d))
    else:
        new_sky = sky_counts(datasets, model)
    return _finish(state, model, bkg, new_sky, prior_filter, alpha, datasets, params)


def _finish(state, model, bkg, sky, prior_filter, alpha, datasets, params):
    loglik = logliks(datasets, sky, bkg)
    lp = log_priors(model, bkg, params)
    post = jnp.sum(loglik) + sum(lp.values(), jnp.zeros((), model.dtype))
    new = EMState(model, bkg, sky, state.iteration + 1)
    return new, MAPInfo(prior_filter, alpha, loglik, lp, post)


def squarem(state: EMState, datasets, params: MAPParams, options: MAPOptions):
    """SQUAREM around the MAP-EM step; objective: the log-posterior."""
    base = options._replace(acceleration="none")
    em_p = params.em

    def project(model, bkg):
        model = jnp.maximum(jnp.where(em_p.mask, model, 0.0), em_p.minimum_flux)
        if params.posterior.bkg_free and bkg.shape[0] > 0:
            bkg = jnp.clip(bkg, em_p.bkg_range[:, 0], em_p.bkg_range[:, 1])
        return model, bkg

    def objective(model, bkg, sky):
        return log_posterior(datasets, model, bkg, sky, params)

    new, info, sq = accelerate.squarem_step(
        lambda s: step(s, datasets, params, base), project,
        lambda m: sky_counts(datasets, m), objective, state)
    new = new._replace(iteration=state.iteration + 1)
    _, fin = _finish(state, new.model, new.bkg_norm, new.sky, info.prior_filter, sq.alpha,
                     datasets, params)
    return new, fin


TRACE_COUNT: dict = {}


@functools.lru_cache(maxsize=64)
def build_step(options: MAPOptions):
    """Jitted ``step(state, datasets, params)`` for fixed options (cached)."""
    valid = accelerate.accelerator_names("MAP_RL", stand_ins=False)
    if options.acceleration not in ("none", *valid):
        raise ParameterError(f"acceleration:algorithm: {options.acceleration!r} is not "
                             f"available for MAP_RL; valid choices: {list(valid)} (or "
                             "acceleration:activate: false).")

    def _step(state, datasets, params):
        TRACE_COUNT[options] = TRACE_COUNT.get(options, 0) + 1
        if options.acceleration == "SQUAREM":
            return squarem(state, datasets, params, options)
        return step(state, datasets, params, options)

    return jax.jit(_step)
