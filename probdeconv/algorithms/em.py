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

__all__ = ["EMOptions", "EMParams", "EMState", "EMInfo", "init", "step", "make_params",
           "calc_alpha", "state_loglik"]

logger = logging.getLogger(__name__)


class EMOptions(NamedTuple):
    """Static (structural) choices; hashable, so they can be a ``jit`` static argument."""

    simple: bool = False  # True: RLsimple (recompute E first, no acceleration/smoothing)
    weighting: bool = False
    smoothing: bool = False
    acceleration: bool = False
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
    smoothing_fwhm: jax.Array  # scalar, radians


class EMState(NamedTuple):
    model: jax.Array  # [lb, Ei]
    bkg_norm: jax.Array  # [K]
    expectations: tuple  # per dataset [t, i]
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
    smoothing_fwhm_rad: float = 0.0,
    n_bkg: int | None = None,
) -> EMParams:
    """Precompute exposure, weighting filter and summed backgrounds (spec §2, shared init)."""
    s = fm.summed_exposure(datasets)
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
            summed = summed.at[jnp.asarray(ds.bkg_index)].add(ds.backgrounds.sum(axis=(1, 2)))
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
        smoothing_fwhm=jnp.asarray(smoothing_fwhm_rad, dtype=s.dtype),
    )


def _expectations(datasets, model, bkg_norm) -> tuple:
    return tuple(fm.expected_counts(ds, model, bkg_norm) for ds in datasets)


def init(model: jax.Array, bkg_norm: jax.Array, datasets: Sequence[fm.Dataset],
         params: EMParams) -> EMState:
    """Initial state: the expectation of the given image (taken as given, not masked)."""
    del params
    model = jnp.asarray(model)
    bkg_norm = jnp.asarray(bkg_norm, dtype=model.dtype)
    return EMState(model, bkg_norm, _expectations(datasets, model, bkg_norm),
                   jnp.asarray(0, dtype=jnp.int32))


def calc_alpha(model: jax.Array, delta: jax.Array, mask: jax.Array,
               alpha_max: jax.Array) -> jax.Array:
    """Largest step keeping every free pixel non-negative, within ``[1, alpha_max]``.

    ``α = max(1, min(min_j(−λ_j / δ_j) over δ_j < 0 and free j, alpha_max))``.
    """
    safe = jnp.where(delta != 0, delta, 1.0)
    ratio = -model / safe
    valid = (delta != 0) & (ratio > 0) & mask
    ratio = jnp.where(valid, ratio, jnp.inf)
    return jnp.maximum(jnp.minimum(jnp.min(ratio), alpha_max), 1.0)


def _healpy_smooth(delta: np.ndarray, fwhm: np.ndarray, nest: bool) -> np.ndarray:
    import healpy as hp

    out = np.empty(delta.shape, dtype=delta.dtype)
    for e in range(delta.shape[1]):
        m = np.array(delta[:, e], dtype=np.float64)
        if nest:
            m = hp.reorder(m, n2r=True)
        s = hp.smoothing(m, fwhm=float(fwhm))
        out[:, e] = hp.reorder(s, r2n=True) if nest else s
    return out


def smooth(delta: jax.Array, fwhm_rad: jax.Array, nest: bool = False) -> jax.Array:
    """Gaussian beam smoothing of each energy bin on the sphere (healpy, via a callback).

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
    """M-step: image update ``δ`` and new background normalisations."""
    ratios = [ds.counts / e for ds, e in zip(datasets, expectations)]  # [t, i]
    t = fm.summed_backproject(datasets, ratios)  # [lb, Ei]
    free = params.mask & (params.exposure > 0)
    s_safe = jnp.where(free, params.exposure, 1.0)
    delta = jnp.where(free, state.model * (t / s_safe - 1.0), 0.0)
    bkg_norm = state.bkg_norm
    if options.optimize_bkg and bkg_norm.shape[0] > 0:
        prod = jnp.zeros_like(bkg_norm)
        for ds, r in zip(datasets, ratios):
            if ds.bkg_index:
                prod = prod.at[jnp.asarray(ds.bkg_index)].add(fm.background_product(ds, r))
        new = bkg_norm * prod / jnp.where(params.summed_bkg > 0, params.summed_bkg, 1.0)
        new = jnp.where(params.summed_bkg > 0, new, bkg_norm)
        bkg_norm = jnp.clip(new, params.bkg_range[:, 0], params.bkg_range[:, 1])
    return delta, bkg_norm


def step(state: EMState, datasets: Sequence[fm.Dataset], params: EMParams,
         options: EMOptions) -> tuple[EMState, EMInfo]:
    """One EM iteration; returns the new state and what the iteration recorded."""
    if options.simple:
        expectations = _expectations(datasets, state.model, state.bkg_norm)  # E-step
    else:
        expectations = state.expectations
    delta, bkg_norm = _m_step(state, datasets, params, options, expectations)
    processed = delta
    if options.weighting:
        processed = processed * params.weight
    if options.smoothing and not options.simple:
        processed = smooth(processed, params.smoothing_fwhm, options.nest)
    if options.acceleration and not options.simple:
        alpha = calc_alpha(state.model, processed, params.mask, params.alpha_max)
    else:
        alpha = jnp.asarray(1.0, dtype=state.model.dtype)
    # The barrier keeps ``α δ'`` a separate rounding step (no fused multiply-add), so the
    # pixel that limits ``α`` lands on the same value as in cosipy's numpy arithmetic.
    step_map = jax.lax.optimization_barrier(alpha * processed)
    model = state.model + step_map
    model = jnp.maximum(model, params.minimum_flux)
    model = jnp.where(params.mask, model, 0.0)
    new_expect = _expectations(datasets, model, bkg_norm)
    loglik = jnp.stack([fm.log_likelihood(ds, e) for ds, e in zip(datasets, new_expect)])
    new_state = EMState(model, bkg_norm, new_expect, state.iteration + 1)
    return new_state, EMInfo(delta, processed, alpha, loglik)


TRACE_COUNT: collections.Counter = collections.Counter()
"""How often the jitted step of each :class:`EMOptions` was traced (compiled)."""


@functools.lru_cache(maxsize=64)
def build_step(options: EMOptions):
    """A jitted ``step(state, datasets, params)`` for fixed options (cached per options).

    Arrays are arguments, so new data of the same shapes and new numbers in
    :class:`EMParams` reuse the compiled code; :data:`TRACE_COUNT` counts the traces.
    """

    def _step(state, datasets, params):
        TRACE_COUNT[options] += 1
        return step(state, datasets, params, options)

    return jax.jit(_step)
