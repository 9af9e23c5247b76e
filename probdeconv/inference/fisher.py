"""Curvature of the log-posterior from the forward model: Fisher information plus prior Hessian.

The parameters are ``θ = (λ_free, b_free)``: the free pixels of the image (flux units) and
the free background normalisations.  For Poisson data with expectation ``E(θ)`` (affine in
``θ``, Jacobian ``J``), the Fisher information is ``F = Jᵀ diag(w) J`` with

- ``w = 1 / E`` (``kind="expected"``, the Fisher information ``Aᵀ diag(1/E) A``; always
  positive semi-definite), or
- ``w = d / E²`` (``kind="observed"``, the Hessian of ``−log L``, exact for the conjugate
  one-pixel case).

``F`` is never formed from a dense Hessian of the whole model: its columns are built in
batches as ``F v = Jᵀ (w ⊙ J v)`` — one forward projection (:func:`jax.linearize` of
:func:`probdeconv.forward.expected_counts`) and one back projection (its transpose) per
column, summed over datasets.  The prior part ``−∇² log p(θ)`` enters as Hessian-vector
products of the model's log-prior (:func:`~probdeconv.forward.posterior.log_prior_terms`)
in the same batches, so neither term needs more than ``batch × data`` memory besides the
``n × n`` result.

The diagonal alone (``diagonal=True``, what the samplers' whitening needs) takes no column
of ``F``: it is ``Σ_i w_i A_ij²``, a few back-projections of the squared response
(:mod:`.fisher_diag`, exact: equal to the diagonal of the columns to rounding), plus the
diagonal of the prior Hessian from Hessian-vector products of the log-prior alone.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 3), 5.0), np.ones((1, 1, 1, 1, 3)), pixel_area=1.0)
>>> p = Problem.from_datasets([ds])
>>> F = precision_matrix(p, np.array([5.0 / 3.0]))   # S = 3, E = 5/3 per bin
>>> round(float(F[0, 0]), 9)                          # S² / (λ S) = S / λ
1.8
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import forward as fm
from ..errors import ParameterError
from ..forward.posterior import log_posterior_terms, log_prior_terms
from ..forward.problem import Problem
from .fisher_diag import PairPlan, data_diagonal

__all__ = ["KINDS", "theta_to_model", "flux_hvp", "precision_matrix", "data_diagonal_theta",
           "prior_diagonal", "log_posterior_theta", "cholesky_precision"]

logger = logging.getLogger(__name__)

KINDS = ("expected", "observed")


def theta_to_model(theta: jax.Array, free: jax.Array, config, fill: float = 0.0):
    """``(image [lb, Ei], bkg [K])`` from ``θ = (λ_free, b_free)``; masked pixels ``fill``."""
    n = free.shape[0]
    size = int(np.prod(config.model_shape))
    image = jnp.full(size, fill, dtype=theta.dtype).at[free].set(theta[:n])
    image = image.reshape(config.model_shape)
    bkg = theta[n:] if config.bkg_free else config.bkg_fixed
    return image, bkg


def log_posterior_theta(theta, free, datasets, config) -> jax.Array:
    """The model's log-posterior (:func:`~.model.log_posterior`) at ``θ``."""
    image, bkg = theta_to_model(theta, free, config, fill=1.0)
    return log_posterior_terms(datasets, image, bkg, config).total


def _log_prior_theta(theta, free, config) -> jax.Array:
    image, bkg = theta_to_model(theta, free, config)  # masked pixels 0, as the posterior's
    terms = log_prior_terms(image, bkg, config)
    return sum(terms.values(), jnp.zeros((), theta.dtype))


def _expectations(theta, free, datasets, config) -> tuple:
    image, bkg = theta_to_model(theta, free, config)
    return tuple(fm.expected_counts(ds, image, bkg) for ds in datasets)  # per ds [t, i]


def flux_hvp(theta, free, datasets, config, kind: str):
    """``v ↦ (F + H_p) v`` at ``θ``: one forward and one back projection per vector
    (``F v = Jᵀ (w ⊙ J v)``) plus the prior's Hessian-vector product; the expectation is
    linearised once.  For use inside compiled code (the columns here, and
    :mod:`.curvature`'s matrix-free products)."""
    expect, f_jvp = jax.linearize(lambda th: _expectations(th, free, datasets, config), theta)
    f_t = jax.linear_transpose(f_jvp, theta)
    if kind == "expected":
        weights = tuple(1.0 / e for e in expect)
    else:
        weights = tuple(ds.counts / (e * e) for ds, e in zip(datasets, expect))
    grad_prior = jax.grad(lambda th: _log_prior_theta(th, free, config))

    def product(v):
        de = f_jvp(v)  # [n] -> per ds [t, i]: J v
        fisher = f_t(tuple(w * d for w, d in zip(weights, de)))[0]  # Jᵀ (w ⊙ J v) -> [n]
        return fisher - jax.jvp(grad_prior, (theta,), (v,))[1]  # − ∇² log p · v

    return product


@functools.partial(jax.jit, static_argnames=("kind", "batch", "diagonal"))
def _columns(theta, start, free, datasets, config, kind: str, batch: int, diagonal: bool):
    """Columns ``start … start+batch`` of ``F + H_prior`` (or their diagonal entries)."""
    n = theta.shape[0]
    idx = start + jnp.arange(batch)
    basis = jax.nn.one_hot(idx, n, dtype=theta.dtype)  # [batch, n]; rows past n are zero
    column = flux_hvp(theta, free, datasets, config, kind)
    cols = jax.vmap(column)(basis)  # [batch, n]
    if diagonal:
        return jnp.take_along_axis(cols, jnp.minimum(idx, n - 1)[:, None], axis=1)[:, 0]
    return cols


@functools.partial(jax.jit, static_argnames=("batch",))
def _prior_diagonal(theta, start, free, config, batch: int):
    """Entries ``start … start+batch`` of the diagonal of ``−∇² log p(θ)`` (prior only)."""
    n = theta.shape[0]
    idx = start + jnp.arange(batch)
    basis = jax.nn.one_hot(idx, n, dtype=theta.dtype)  # rows past n are zero
    grad_prior = jax.grad(lambda th: _log_prior_theta(th, free, config))
    cols = jax.vmap(lambda v: jax.jvp(grad_prior, (theta,), (v,))[1])(basis)  # [batch, n]
    return -jnp.take_along_axis(cols, jnp.minimum(idx, n - 1)[:, None], axis=1)[:, 0]


def data_diagonal_theta(problem: Problem, theta: np.ndarray, *, kind: str = "expected",
                        plans: list[PairPlan] | None = None) -> np.ndarray:
    """Diagonal ``[n]`` of the Fisher information ``F`` at ``θ`` (no prior), from the squared
    response (:func:`~.fisher_diag.data_diagonal`): no column of ``F`` is formed."""
    free = jnp.asarray(problem.free_index)
    image, bkg = theta_to_model(jnp.asarray(theta, problem.dtype), free, problem.config)
    pix, bkg_diag = data_diagonal(problem.datasets, image, bkg, kind=kind, plans=plans)
    parts = [np.asarray(pix).reshape(-1)[problem.free_index]]
    if problem.config.bkg_free:
        parts.append(np.asarray(bkg_diag))
    return np.concatenate(parts).astype(np.float64)


def prior_diagonal(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """Diagonal ``[n]`` of ``−∇² log p(θ)`` (the priors only), by Hessian-vector products of
    the log-prior in batches (cheap: no data)."""
    theta = jnp.asarray(theta, problem.dtype)
    n = int(theta.shape[0])
    out = np.zeros(n)
    cfg = problem.config
    if not (cfg.priors or cfg.image_prior != "flat" or (cfg.bkg_free and
                                                         cfg.bkg_prior != "uniform")):
        return out
    free = jnp.asarray(problem.free_index)
    batch = int(min(n, 512))
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        block = _prior_diagonal(theta, jnp.asarray(start), free, cfg, batch)
        out[start:stop] = np.asarray(block)[: stop - start]
    return out


def _batch_size(problem: Problem, n: int) -> int:
    bins = sum(int(np.prod(ds.counts.shape)) for ds in problem.datasets)
    # a few data-sized arrays per column in flight: keep them within ~256 MB
    return int(max(1, min(n, 64, 256e6 // (8 * 4 * max(bins, 1)))))


def precision_matrix(problem: Problem, theta: np.ndarray, *, kind: str = "expected",
                     diagonal: bool = False, batch_size: int | None = None,
                     plans: list[PairPlan] | None = None,
                     progress_bar: bool = False) -> np.ndarray:
    """``F(θ) − ∇² log p(θ)``: the Laplace precision in ``θ = (λ_free, b_free)``.

    Parameters
    ----------
    problem
        The inference problem.
    theta
        ``[n_params]`` point (free pixel fluxes, then free background normalisations).
    kind
        ``"expected"`` (``Jᵀ diag(1/E) J``) or ``"observed"`` (``Jᵀ diag(d/E²) J``).
    diagonal
        Return only the diagonal ``[n]``, from the squared response (:mod:`.fisher_diag`:
        a few back-projections, no column of ``F``).
    batch_size
        Columns per compiled batch (default: from the data size, at most 64).
    plans
        :func:`~.fisher_diag.pair_plan` of each dataset, for ``diagonal=True`` (built when
        not given; pass them to reuse them at several points).
    progress_bar
        A progress bar over the columns of the dense matrix.

    Returns
    -------
    numpy.ndarray
        ``[n, n]`` symmetric matrix (or ``[n]`` diagonal).
    """
    if kind not in KINDS:
        raise ParameterError(f"fisher kind: got {kind!r}; valid choices: {', '.join(KINDS)}.")
    theta = jnp.asarray(theta, dtype=problem.dtype)
    n = int(theta.shape[0])
    if n != problem.n_params:
        raise ParameterError(f"theta has {n} entries; the problem has {problem.n_params} "
                             "parameters (free pixels + free backgrounds).")
    if diagonal:
        return (data_diagonal_theta(problem, theta, kind=kind, plans=plans)
                + prior_diagonal(problem, theta))
    batch = int(batch_size or _batch_size(problem, n))
    free = jnp.asarray(problem.free_index)
    out = np.empty((n, n), dtype=np.float64)
    with tqdm(total=n, desc="precision matrix", unit="column", disable=not progress_bar,
              leave=False) as bar:
        for start in range(0, n, batch):
            block = np.asarray(_columns(theta, jnp.asarray(start), free, problem.datasets,
                                        problem.config, kind, batch, False))
            stop = min(start + batch, n)
            out[start:stop] = block[: stop - start]
            bar.update(stop - start)
    out = 0.5 * (out + out.T)
    logger.debug("precision matrix (%s) of %d parameters in batches of %d", kind, n, batch)
    return out


def cholesky_precision(h: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a precision matrix; eigenvalues clipped when not definite."""
    try:
        return np.linalg.cholesky(h)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(h)
        floor = max(float(w.max()), 1e-300) * 1e-12
        n_bad = int(np.sum(w <= floor))
        logger.warning("Laplace: the precision matrix has %d eigenvalue(s) <= %.3g (not "
                       "positive definite); they are raised to that floor.", n_bad, floor)
        return np.linalg.cholesky((v * np.maximum(w, floor)) @ v.T)
