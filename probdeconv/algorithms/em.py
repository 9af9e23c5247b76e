"""Richardson-Lucy (EM) as pure ``init`` / ``step`` functions over the forward model.

Two variants share one step:

- ``RLsimple`` (plain EM): the expectation is recomputed from the current image at the
  start of every iteration, ``λ ← λ + δ`` with ``δ = λ (Aᵀ(d/E) / S − 1)``.
- ``RL`` (Knödlseder+1999/2005, Siegert+2020): the expectation of the previous iteration
  is reused, so one iteration costs one forward and one back projection; the update
  ``δ`` passes through response weighting, smoothing and the acceleration factor ``α``
  before ``λ ← max(λ + α δ', minimum_flux)``.

Structural choices (which filters are on) live in :class:`EMOptions` (static: a change
recompiles); numbers live in :class:`EMParams` (dynamic: a change does not).

Examples
--------
>>> import numpy as np, jax.numpy as jnp
>>> from probdeconv.forward import make_dataset
>>> rng = np.random.default_rng(0)
>>> ds = make_dataset(rng.poisson(5.0, (2, 3, 12)), rng.random((12, 1, 2, 3, 12)))
>>> opts = EMOptions()
>>> params = make_params((ds,), opts)
>>> state = init(jnp.ones((12, 1)), jnp.ones(0), (ds,), params)
>>> state, info = step(state, (ds,), params, opts)
>>> bool(info.loglik.sum() > state_loglik(jnp.ones((12, 1)), (ds,)))
True
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import forward as fm
from ..errors import ParameterError
from . import accelerate

__all__ = ["EMOptions", "EMParams", "EMState", "EMInfo", "init", "step", "squarem",
           "make_params", "calc_alpha", "state_loglik", "build_step", "sky_counts",
           "expectations", "logliks", "ratios_and_backprojection",
           "background_products"]

logger = logging.getLogger(__name__)


class EMOptions(NamedTuple):
    """Static (structural) choices; hashable, so they select the compiled step."""

    simple: bool = False  # True: RLsimple (recompute E first, no smoothing)
    weighting: bool = False
    smoothing: bool = False
    acceleration: str = "none"  # a name of accelerate.ACCELERATORS (SQUAREM wraps step)
    optimize_bkg: bool = False
    nest: bool = False  # HEALPix scheme of the image, for smoothing


class EMParams(NamedTuple):
    """Dynamic numbers and precomputed maps of one run."""

    exposure: jax.Array  # [lb, Ei] summed exposure map S
    mask: jax.Array  # [lb, Ei] bool, True = free pixel
    weight: jax.Array  # [lb, Ei] response-weighting filter w (ones when off)
    summed_bkg: jax.Array  # [K] Σ_i B_k,i over datasets
    bkg_range: jax.Array  # [K, 2]
    alpha_max: jax.Array  # scalar
    minimum_flux: jax.Array  # scalar
    smoothing_fwhm: jax.Array  # [Ei] radians, one Gaussian width per energy bin


class EMState(NamedTuple):
    model: jax.Array  # [lb, Ei]
    bkg_norm: jax.Array  # [K]
    sky: tuple  # per dataset [n_obs + 1]: reduced sky part of the expectation (fm.reduced_sky)
    iteration: jax.Array  # int


class EMInfo(NamedTuple):
    delta: jax.Array  # [lb, Ei] after the M-step (masked)
    processed_delta: jax.Array  # [lb, Ei] after weighting / smoothing
    alpha: jax.Array  # scalar
    loglik: jax.Array  # [n_datasets] at the new image


def make_params(
    datasets: Sequence[fm.Dataset],
    options: EMOptions,
    *,
    mask: np.ndarray | None = None,
    weighting_index: float = 0.5,
    bkg_range: np.ndarray | None = None,
    alpha_max: float = 1.0,
    minimum_flux: float = 0.0,
    smoothing_fwhm_rad: float | Sequence[float] = 0.0,
    n_bkg: int | None = None,
    exposure: jax.Array | None = None,
) -> EMParams:
    """Precompute exposure, weighting filter and summed backgrounds (spec §2, shared init).

    ``exposure`` (the summed exposure map) may be given when already known, which saves a
    pass over the response.
    """
    for i, ds in enumerate(datasets):
        fm.check_observed_view(ds, f"dataset #{i}")
    s = fm.summed_exposure(datasets) if exposure is None else jnp.asarray(exposure)
    if mask is None:
        mask = jnp.ones(s.shape, dtype=bool)
    mask = jnp.asarray(mask, dtype=bool)
    if options.weighting:
        weight = (s / jnp.max(s)) ** weighting_index
    else:
        weight = jnp.ones_like(s)
    if n_bkg is None:
        n_bkg = 1 + max((max(ds.bkg_index, default=-1) for ds in datasets), default=-1)
    summed = jnp.zeros(n_bkg, dtype=s.dtype)
    for ds in datasets:
        if ds.bkg_index:
            summed = summed.at[jnp.asarray(ds.bkg_index)].add(ds.bkg_totals)
    if bkg_range is None:
        bkg_range = np.tile([0.0, 100.0], (n_bkg, 1))
    return EMParams(
        exposure=s,
        mask=mask,
        weight=weight,
        summed_bkg=summed,
        bkg_range=jnp.asarray(bkg_range, dtype=s.dtype).reshape(n_bkg, 2),
        alpha_max=jnp.asarray(alpha_max, dtype=s.dtype),
        minimum_flux=jnp.asarray(minimum_flux, dtype=s.dtype),
        smoothing_fwhm=_fwhm_per_energy(smoothing_fwhm_rad, s.shape[1], s.dtype),
    )


def sky_counts(datasets, model) -> tuple:
    """Reduced sky ``[(A λ)[obs], Σ A λ]`` per dataset (one forward projection each)."""
    return tuple(fm.reduced_sky(ds, model) for ds in datasets)


def expectations(datasets, sky, bkg_norm) -> tuple:
    """Reduced ``E = A λ + ε + Σ b B`` per dataset from the stored reduced sky."""
    return tuple(fm.reduced_expectation(ds, s, bkg_norm) for ds, s in zip(datasets, sky))


def logliks(datasets, sky, bkg_norm) -> jax.Array:
    """Log-likelihood per dataset, ``[n_datasets]``."""
    return jnp.stack([fm.reduced_log_likelihood(ds, e)
                      for ds, e in zip(datasets, expectations(datasets, sky, bkg_norm))])


def ratios_and_backprojection(datasets, expect):
    """``d / E`` at the observed bins per dataset, and ``Σ_datasets Aᵀ(d / E)``."""
    ratios = [fm.observed_counts(ds) / e[:-1] for ds, e in zip(datasets, expect)]  # [n_obs]
    t = sum(fm.reduced_backproject(ds, r) for ds, r in zip(datasets, ratios))  # [lb, Ei]
    return ratios, t


def background_products(datasets, ratios, bkg_norm: jax.Array) -> jax.Array:
    """``Σ_i B_k,i (d / E)_i`` per global background (shaped like ``bkg_norm``), summed
    over datasets."""
    prod = jnp.zeros_like(bkg_norm)
    for ds, r in zip(datasets, ratios):
        if ds.bkg_index:
            prod = prod.at[jnp.asarray(ds.bkg_index)].add(fm.reduced_background_product(ds, r))
    return prod


def init(model: jax.Array, bkg_norm: jax.Array, datasets: Sequence[fm.Dataset],
         params: EMParams) -> EMState:
    """Initial state: the expectation of the given image (taken as given, not masked)."""
    del params
    model = jnp.asarray(model)
    bkg_norm = jnp.asarray(bkg_norm, dtype=model.dtype)
    return EMState(model, bkg_norm, sky_counts(datasets, model),
                   jnp.asarray(0, dtype=jnp.int32))


def calc_alpha(model: jax.Array, delta: jax.Array, mask: jax.Array,
               alpha_max: jax.Array) -> jax.Array:
    """Largest step keeping every free pixel non-negative, within ``[1, alpha_max]``.

    ``α = max(1, min(min_j(−λ_j / δ_j) over δ_j < 0 and free j, alpha_max))``.
    """
    return jnp.maximum(jnp.minimum(jnp.min(_step_ratios(model, delta, mask)), alpha_max), 1.0)


def _step_ratios(model: jax.Array, delta: jax.Array, mask: jax.Array) -> jax.Array:
    """``−λ_j / δ_j`` where it is positive (``δ_j < 0 < λ_j``) on free pixels, else ``inf``."""
    safe = jnp.where(delta != 0, delta, 1.0)
    ratio = -model / safe
    valid = (delta != 0) & (ratio > 0) & mask
    return jnp.where(valid, ratio, jnp.inf)


def _healpy_smooth(delta: np.ndarray, fwhm: np.ndarray, nest: bool) -> np.ndarray:
    import healpy as hp

    out = np.empty(delta.shape, dtype=delta.dtype)
    for e in range(delta.shape[1]):
        m = np.array(delta[:, e], dtype=np.float64)
        if nest:
            m = hp.reorder(m, n2r=True)
        s = hp.smoothing(m, fwhm=float(np.reshape(fwhm, -1)[e if np.size(fwhm) > 1 else 0]))
        out[:, e] = hp.reorder(s, r2n=True) if nest else s
    return out


def _fwhm_per_energy(fwhm_rad, n_energies: int, dtype) -> jax.Array:
    """The smoothing width of each energy bin, ``[Ei]`` (one number: the same for all)."""
    fwhm = np.asarray(fwhm_rad, dtype=np.float64)
    if fwhm.ndim > 1 or (fwhm.ndim == 1 and fwhm.size != n_energies):
        raise ParameterError(f"smoothing FWHM: got {fwhm.size} width(s) (shape {fwhm.shape}); "
                             f"expected one for all energies or one per energy bin "
                             f"({n_energies}).")
    if not np.all(np.isfinite(fwhm) & (fwhm >= 0)):
        raise ParameterError(f"smoothing FWHM: got {fwhm.tolist()} rad; expected finite widths "
                             ">= 0.")
    return jnp.asarray(np.broadcast_to(fwhm, (n_energies,)), dtype=dtype)


def smooth(delta: jax.Array, fwhm_rad: jax.Array, nest: bool = False) -> jax.Array:
    """Gaussian beam smoothing of each energy bin on the sphere (healpy, via a callback).

    ``fwhm_rad`` is one width (radians) for all energy bins or ``[Ei]``, one per bin.

    healpy's spherical-harmonic smoothing is what cosipy applies; calling it keeps the
    numbers identical.  It runs on the host, once per iteration, on a model-sized map.
    """
    shape = jax.ShapeDtypeStruct(delta.shape, delta.dtype)
    return jax.pure_callback(functools.partial(_healpy_smooth, nest=nest), shape, delta,
                             fwhm_rad)


def state_loglik(model: jax.Array, datasets: Sequence[fm.Dataset],
                 bkg_norm: jax.Array | None = None) -> jax.Array:
    """Summed log-likelihood of an image (helper for tests and examples)."""
    if bkg_norm is None:
        bkg_norm = jnp.ones(1 + max((max(ds.bkg_index, default=-1) for ds in datasets),
                                    default=-1))
    return fm.total_log_likelihood(datasets, model, bkg_norm)


def _m_step(state: EMState, datasets, params: EMParams, options: EMOptions, expectations):
    """M-step: image update ``δ`` and new background normalisations.

    Returns ``(δ, b_new, b_free)``: ``b_free = b + b (Σ_i B_k,i r_i / ΣB_k − 1)`` is the
    background update before it is clipped to its range, ``b_new`` the clipped one.
    """
    ratios, t = ratios_and_backprojection(datasets, expectations)
    free = params.mask & (params.exposure > 0)
    s_safe = jnp.where(free, params.exposure, 1.0)
    delta = jnp.where(free, state.model * (t / s_safe - 1.0), 0.0)
    bkg_norm = bkg_free = state.bkg_norm
    if options.optimize_bkg and bkg_norm.shape[0] > 0:
        prod = background_products(datasets, ratios, bkg_norm)
        ratio = prod / jnp.where(params.summed_bkg > 0, params.summed_bkg, 1.0)
        # b + δb with δb = b (ratio − 1), the update cosipy adds (then clips)
        bkg_free = jnp.where(params.summed_bkg > 0, bkg_norm + bkg_norm * (ratio - 1.0),
                             bkg_norm)
        bkg_norm = jnp.clip(bkg_free, params.bkg_range[:, 0], params.bkg_range[:, 1])
    return delta, bkg_norm, bkg_free


def step(state: EMState, datasets: Sequence[fm.Dataset], params: EMParams,
         options: EMOptions) -> tuple[EMState, EMInfo]:
    """One EM iteration; returns the new state and what the iteration recorded."""
    if options.simple:  # E-step: expectation of the current image
        sky = sky_counts(datasets, state.model)
    else:  # RL: the expectation refreshed at the end of the previous iteration
        sky = state.sky
    expect = expectations(datasets, sky, state.bkg_norm)
    delta, bkg_norm, bkg_free = _m_step(state, datasets, params, options, expect)
    processed = delta
    if options.weighting:
        processed = processed * params.weight
    if options.smoothing and not options.simple:
        processed = smooth(processed, params.smoothing_fwhm, options.nest)
    kind = "none" if options.simple else options.acceleration
    loglik = None
    if kind in accelerate.SEARCHED:
        model, alpha, new_sky, loglik = _searched_update(state, datasets, params, kind,
                                                         processed, bkg_norm)
    elif kind == "classic":
        model, alpha, new_sky = _classic_update(state, datasets, params, processed, bkg_free)
    else:
        alpha = jnp.asarray(1.0, dtype=state.model.dtype)
        # The barrier keeps ``α δ'`` a separate rounding step (no fused multiply-add), so
        # the pixel that limits ``α`` lands on the same value as in cosipy's arithmetic.
        step_map = jax.lax.optimization_barrier(alpha * processed)
        model = state.model + step_map
        model = jnp.maximum(model, params.minimum_flux)
        model = jnp.where(params.mask, model, 0.0)
        new_sky = sky_counts(datasets, model)
    if loglik is None:
        loglik = logliks(datasets, new_sky, bkg_norm)
    new_state = EMState(model, bkg_norm, new_sky, state.iteration + 1)
    return new_state, EMInfo(delta, processed, alpha, loglik)


def _classic_update(state, datasets, params, processed, bkg_free):
    """cosipy's default acceleration (0.4.x ``MaxStep``), computed the way cosipy does.

    The plain step is ``λ1 = λ + δ'`` with the processed update ``δ'`` as it comes out of
    weighting and smoothing (smoothing spreads it into masked pixels; they are zeroed only
    afterwards) and the background ``b1 = b + δb`` before clipping.  ``d = λ1 − λ``;
    ``α`` = the largest step keeping the free pixels non-negative, within ``[1, α_max]``
    (:func:`calc_alpha`).  When ``α > 1`` the step is kept only if the log-likelihood
    along ``d``, with the expectation extrapolated linearly, ``E(α) = A λ + ε + α A d +
    Σ b1 B``, is not below ``logL(E(1))``; otherwise ``α = 1``.  Then ``λ + α d`` is
    clipped to ``minimum_flux`` and masked (the background is clipped by the M-step) and
    the expectation is that of the final image.

    The pixels that limit ``α`` are set to exactly 0 before clipping, as exact arithmetic
    gives (``λ − (λ/d) d = 0``).  Rounding leaves 0 or ±1 ulp there, depending on the last
    bits of ``δ'`` (summation order); a remainder of +1 ulp makes that pixel pin ``α`` to 1
    in the next iteration whenever smoothing gives it a negative update, a 2e-4 change of
    the log-likelihood on cosipy's test set-up.  cosipy 0.4.3 itself lands on either side
    depending on the OpenBLAS kernel; this keeps probdeconv on the exact-arithmetic side.

    Cost: one forward projection of ``d`` when ``α > 1``; the final image's expectation
    reuses it (``A λ + α A d``) when the constraints changed no pixel by more than
    rounding, and is projected afresh otherwise (masked pixels reached by smoothing,
    clipped pixels).
    """
    model0 = state.model
    after = model0 + processed
    d = jax.lax.optimization_barrier(after) - model0  # cosipy's direction: λ1 − λ
    ratios = _step_ratios(model0, d, params.mask)
    alpha_f = jnp.maximum(jnp.minimum(jnp.min(ratios), params.alpha_max), 1.0)
    one = jnp.asarray(1.0, dtype=alpha_f.dtype)

    def checked(_):
        sky_d = sky_counts(datasets, d)  # A d: one forward projection

        def total(alpha):
            sky_a = tuple(s + alpha * sd for s, sd in zip(state.sky, sky_d))
            return jnp.sum(logliks(datasets, sky_a, bkg_free))

        return jnp.where(total(alpha_f) >= total(one), alpha_f, one), sky_d

    def unchecked(_):
        return one, tuple(jnp.zeros_like(s) for s in state.sky)

    has_sky_d = alpha_f > 1.0
    alpha, sky_d = jax.lax.cond(has_sky_d, checked, unchecked, None)
    # The barrier keeps ``α d`` a separate rounding step (no fused multiply-add), as in
    # cosipy's arithmetic; at α = 1 the step is cosipy's λ1 itself.
    plain = jnp.where(alpha == 1.0, after, model0 + jax.lax.optimization_barrier(alpha * d))
    snapped = jnp.where(ratios == alpha, 0.0, plain)  # limiting pixels: exactly 0
    model = jnp.where(params.mask, jnp.maximum(snapped, params.minimum_flux), 0.0)
    rounding = 4.0 * jnp.finfo(model0.dtype).eps * jnp.abs(model0)
    linear = has_sky_d & jnp.all(jnp.abs(model - plain) <= rounding)
    new_sky = jax.lax.cond(
        linear,
        lambda _: tuple(s + alpha * sd for s, sd in zip(state.sky, sky_d)),
        lambda _: sky_counts(datasets, model),
        None)
    return model, alpha, new_sky


def _searched_update(state, datasets, params, kind, processed, bkg_norm):
    """``MaxStep`` / ``LineSearch``: the step along the masked direction, E linear in α."""
    floor = params.minimum_flux
    d = jnp.where(params.mask, processed, 0.0)
    d = jnp.where((state.model <= floor) & (d < 0), 0.0, d)  # active bound: no move
    a_f = accelerate.feasible_alpha(state.model, d, floor)
    lo = jnp.minimum(1.0, a_f)
    hi = jnp.maximum(jnp.minimum(a_f, params.alpha_max), lo)
    sky_d = sky_counts(datasets, d)  # one forward projection of the direction
    base = expectations(datasets, state.sky, bkg_norm)  # E(0) = A λ + ε + Σ b B

    def objective(alpha):  # log-likelihood per dataset along the step; no response pass
        return jnp.stack([fm.reduced_log_likelihood(ds, b + alpha * sd)
                          for ds, b, sd in zip(datasets, base, sky_d)])

    alpha, loglik = accelerate.search_alpha(kind, objective, lo, hi)
    model = jnp.where(params.mask, jnp.maximum(state.model + alpha * d, floor), 0.0)
    new_sky = tuple(s + alpha * sd for s, sd in zip(state.sky, sky_d))
    return model, alpha, new_sky, loglik


def squarem(state: EMState, datasets: Sequence[fm.Dataset], params: EMParams,
            options: EMOptions):
    """One SQUAREM iteration around the plain RL step (five response passes)."""
    base = options._replace(simple=False, acceleration="none", smoothing=False)

    def project(model, bkg):
        model = jnp.where(params.mask, jnp.maximum(model, params.minimum_flux), 0.0)
        if options.optimize_bkg and bkg.shape[0] > 0:
            bkg = jnp.clip(bkg, params.bkg_range[:, 0], params.bkg_range[:, 1])
        return model, bkg

    def objective(model, bkg, sky):
        return jnp.sum(logliks(datasets, sky, bkg))

    new, info, sq = accelerate.squarem_step(
        lambda s: step(s, datasets, params, base), project,
        lambda m: sky_counts(datasets, m), objective, state)
    loglik = logliks(datasets, new.sky, new.bkg_norm)
    new = new._replace(iteration=state.iteration + 1)
    return new, info._replace(alpha=sq.alpha, loglik=loglik)


TRACE_COUNT: collections.Counter = collections.Counter()
"""How often the jitted step of each :class:`EMOptions` was traced (compiled)."""


@functools.lru_cache(maxsize=64)
def build_step(options: EMOptions):
    """A jitted ``step(state, datasets, params)`` for fixed options (cached per options).

    Arrays are arguments, so new data of the same shapes and new numbers in
    :class:`EMParams` reuse the compiled code; :data:`TRACE_COUNT` counts the traces.
    """

    if options.acceleration not in accelerate.ACCELERATORS:
        raise ParameterError(f"acceleration: {options.acceleration!r} is not known; valid "
                             f"choices: {list(accelerate.ACCELERATORS)}.")

    def _step(state, datasets, params):
        TRACE_COUNT[options] += 1
        if options.acceleration == "SQUAREM" and not options.simple:
            return squarem(state, datasets, params, options)
        return step(state, datasets, params, options)

    return jax.jit(_step)
