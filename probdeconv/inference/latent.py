"""The sampled parameterisation: whitened log-flux around the log-space posterior mode.

Every sampler of :mod:`probdeconv.inference` (NUTS/HMC, SVI, log-space Laplace) works on
one unconstrained vector ``z`` (free pixels, then free background normalisations):

    u = center + scale ⊙ z,     λ_free = exp(u_image),     b = T_b(u_bkg)

``T_b`` is NumPyro's bijection onto the background support (sigmoid onto ``[lo, hi]``).
The target density of ``z`` is the posterior of the NumPyro model
:func:`~.model.sky_model` *itself* — :func:`latent_model` conditions that model's
``image`` / ``bkg_norm`` sites on ``(λ(z), b(z))`` and adds the log-Jacobian
``Σ u_image + Σ log T_b'(u_bkg)`` — so nothing about the model is re-derived here.

Why this parameterisation.
- Log-flux removes the positivity boundary (pixels near zero flux are common) and
  makes the Poisson posterior of a pixel close to Gaussian (a gamma posterior is nearly
  log-normal), so NUTS needs neither reflections nor tiny steps near zero.
- ``center`` is the mode of the log-flux posterior (with its Jacobian): it starts at the
  MAP image (:func:`~.map.map_run`) and is refined in log space by L-BFGS
  (:func:`~.mode.find_mode`); unlike the
  flux-space MAP, it is finite for pixels whose MAP is 0.
- ``scale = 1/√diag(H_u)`` with ``H_u`` the Laplace precision in log space (Fisher
  information of the forward model plus the prior Hessian, :mod:`.fisher`): ``z`` has
  roughly unit scale in every direction, bright and faint pixels alike, so the identity
  mass matrix NUTS starts from is already close to the adapted one and warm-up is short.
  Pixels are whitened one by one by default (``precondition="diagonal"``);
  ``precondition="dense"`` whitens by the full Laplace covariance (``scale`` is then a
  matrix ``S`` with ``S Sᵀ = H_u⁻¹``).  On simulated COSI skies both mix alike (NUTS
  trees of ~30 leapfrog steps at NSIDE 2, set by faint pixels whose log-flux posterior is
  skewed, which no Gaussian whitening removes), so the cheaper diagonal is the default;
  correlations are otherwise left to ``dense_mass=True`` or SVI's low-rank guide.
  ``precondition="lowrank"`` whitens by the matrix-free low-rank plus diagonal Laplace
  covariance (:mod:`.lowrank`), for problems too large for the dense one.

The common start of every sampler (MAP, log-space mode, whitening) is
:func:`probdeconv.inference.start.prepare`.

Masked pixels are not parameters at all (the model's masked entries are inert; here they
never enter ``z``), so the sampler sees no flat directions.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import scipy.linalg as sla
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from ..forward.posterior import bkg_inside_support, log_posterior
from ..forward.problem import Problem
from .fisher import (
    cholesky_precision,
    data_diagonal_theta,
    log_posterior_theta,
    precision_matrix,
    prior_diagonal,
)
from .model import bkg_support, sky_model

__all__ = ["Latent", "bkg_transform", "to_model", "latent_to_flux", "latent_model",
           "latent_log_density", "start_vector", "log_posterior_gradient", "theta_of",
           "log_space_precision", "whitening", "chain_terms"]

logger = logging.getLogger(__name__)


class Latent(NamedTuple):
    """``u = center + scale ⊙ z`` (or ``center + scale @ z`` for a matrix) over (free
    pixels, free backgrounds); a pytree.

    Low-rank whitening (``vectors`` and ``coef`` given, :mod:`.lowrank`):
    ``u = center + scale ⊙ (z + V (coef ⊙ Vᵀ z))`` with orthonormal ``V`` and
    ``coef = θ^(-1/2) − 1``, the square root of the low-rank plus diagonal covariance.
    """

    free: jax.Array  # [n_free] flat indices into [lb * Ei]
    center: jax.Array  # [n_params]
    scale: jax.Array  # [n_params] (diagonal) or [n_params, n_params] (dense whitening)
    vectors: jax.Array | None = None  # [n_params, k] orthonormal (low-rank whitening)
    coef: jax.Array | None = None  # [k]


def bkg_transform(config):
    """NumPyro's bijection from the real line onto the support of free backgrounds."""
    return biject_to(bkg_support(config))


def to_model(z: jax.Array, latent: Latent, config):
    """``(image, bkg_norm, log_jacobian)`` at latent ``z``.

    Masked pixels of ``image`` are 1 (inert placeholders, see :mod:`.model`); the
    log-Jacobian is that of ``u ↦ (λ, b)`` (the constant ``Σ log scale`` is left out).
    """
    n = latent.free.shape[0]
    if latent.vectors is not None:
        z = z + latent.vectors @ (latent.coef * (latent.vectors.T @ z))
    u = latent.center + (latent.scale @ z if latent.scale.ndim == 2 else latent.scale * z)
    size = int(np.prod(config.model_shape))
    image = jnp.ones(size, dtype=z.dtype).at[latent.free].set(jnp.exp(u[:n]))
    image = image.reshape(config.model_shape)
    log_jac = jnp.sum(u[:n])
    if config.bkg_free:
        t = bkg_transform(config)
        bkg = t(u[n:])
        log_jac = log_jac + jnp.sum(t.log_abs_det_jacobian(u[n:], bkg))
    else:
        bkg = config.bkg_fixed
    return image, bkg, log_jac


@jax.jit
def latent_to_flux(z_draws: jax.Array, config, latent: Latent):
    """``(images [n, lb, Ei], bkgs [n, K])`` of a batch of latent draws (masked pixels 0)."""

    def one(z):
        image, bkg, _ = to_model(z, latent, config)
        return jnp.where(config.mask, image, 0.0), bkg

    return jax.vmap(one)(z_draws)


def latent_model(datasets, config, latent: Latent) -> None:
    """NumPyro model over ``z``: :func:`~.model.sky_model` conditioned on ``(λ(z), b(z))``.

    Sites: ``z`` (latent, improper flat), ``log_jacobian`` (factor), deterministic
    ``image`` (masked pixels 0) and ``bkg_norm`` (when free), and the model's own sites
    under the prefix ``model.`` (``model.image``, ``model.obs_0``, ...).
    """
    n = latent.center.shape[0]
    z = numpyro.sample("z", dist.ImproperUniform(constraints.real_vector, (), (n,)))
    image, bkg, log_jac = to_model(z, latent, config)
    numpyro.factor("log_jacobian", log_jac)
    numpyro.deterministic("image", jnp.where(config.mask, image, 0.0))
    data = {"image": image}
    if config.bkg_free:
        numpyro.deterministic("bkg_norm", bkg)
        data["bkg_norm"] = bkg
    with handlers.scope(prefix="model", divider="."), handlers.condition(data=data):
        sky_model(datasets, config)


def latent_log_density(z, datasets, config, latent: Latent) -> jax.Array:
    """Log-density of ``z`` (up to a constant): log-posterior + log-Jacobian."""
    image, bkg, log_jac = to_model(z, latent, config)
    return log_posterior(datasets, image, bkg, config) + log_jac


def start_vector(problem: Problem, image: np.ndarray, bkg: np.ndarray, *,
                 gradient: np.ndarray | None = None,
                 curvature: np.ndarray | None = None) -> np.ndarray:
    """Unconstrained ``u`` of ``(image, bkg)``, a start for the log-space mode search.

    Without ``gradient``: pixels at 0 are floored at 10⁻³ of the mean.  With ``gradient``
    ``g`` and ``curvature`` ``F`` (``[n_free]``: the log-posterior's gradient and the
    diagonal of its negative Hessian in flux at ``image``, e.g. a MAP), each pixel starts at
    its own log-space mode given the others, from the quadratic expansion
    ``g (θ − θ̂) − F (θ − θ̂)²/2 + log θ``:

        θ = [g + F θ̂ + √((g + F θ̂)² + 4F)] / (2F),

    exact for a one-pixel Poisson-gamma posterior; a pixel whose MAP is 0 (``g < 0``) starts
    near ``1/|g|`` instead of an arbitrary floor, so the whitening there is already that of
    the mode.  Pixels where the formula is not finite and positive keep the floor.
    """
    cfg = problem.config
    free = problem.free_index
    vals = np.asarray(image, dtype=np.float64).ravel()[free]
    positive = vals[vals > 0]
    floor = 1e-3 * float(positive.mean()) if positive.size else 1e-10
    start = np.maximum(vals, floor)
    if gradient is not None and curvature is not None:
        g = np.asarray(gradient, dtype=np.float64)
        f = np.asarray(curvature, dtype=np.float64)
        b = g + f * vals
        with np.errstate(all="ignore"):
            quad = np.where(f > 0, (b + np.sqrt(b * b + 4.0 * f)) / (2.0 * f),
                            np.where(g < 0, -1.0 / g, np.nan))
        start = np.where(np.isfinite(quad) & (quad > 0), quad, start)
    parts = [np.log(start)]
    if cfg.bkg_free:
        b = bkg_inside_support(cfg, np.asarray(bkg, dtype=np.float64))
        parts.append(np.asarray(bkg_transform(cfg).inv(b)))
    return np.concatenate(parts)


def log_posterior_gradient(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """Gradient ``[n_params]`` of the log-posterior in ``θ`` (flux, backgrounds)."""
    return np.asarray(_theta_gradient(jnp.asarray(theta, problem.dtype),
                                      jnp.asarray(problem.free_index), problem.datasets,
                                      problem.config))


_theta_gradient = jax.jit(jax.grad(log_posterior_theta))


def _transform(u: jax.Array, n_img: int, config):
    """Elementwise ``θ = T(u)``."""
    img = jnp.exp(u[:n_img])
    if not config.bkg_free:
        return img
    return jnp.concatenate([img, bkg_transform(config)(u[n_img:])])


def _log_abs_dt(u: jax.Array, n_img: int, config):
    """Elementwise ``log |T'(u)|``."""
    parts = [u[:n_img]]
    if config.bkg_free:
        t = bkg_transform(config)
        parts.append(t.log_abs_det_jacobian(u[n_img:], t(u[n_img:])))
    return jnp.concatenate(parts)


@jax.jit
def chain_terms(u, free, datasets, config):
    """``θ = T(u)``, ``T'(u)``, and the diagonal ``−g T'' − (log|T'|)''`` of the change of
    variables (``g`` the log-posterior's gradient in ``θ``)."""
    n_img = free.shape[0]
    ones = jnp.ones_like(u)
    theta, t1 = jax.jvp(lambda x: _transform(x, n_img, config), (u,), (ones,))
    t2 = jax.jvp(lambda x: jax.jvp(lambda y: _transform(y, n_img, config), (x,), (ones,))[1],
                 (u,), (ones,))[1]
    l2 = jax.jvp(lambda x: jax.jvp(lambda y: _log_abs_dt(y, n_img, config), (x,), (ones,))[1],
                 (u,), (ones,))[1]
    g = jax.grad(log_posterior_theta)(theta, free, datasets, config)
    return theta, t1, -g * t2 - l2


def theta_of(problem: Problem, u: np.ndarray) -> np.ndarray:
    """``θ = T(u)``: the free pixel fluxes and background normalisations at ``u``."""
    return np.asarray(_transform(jnp.asarray(u, problem.dtype), problem.n_free,
                                 problem.config))


def log_space_precision(problem: Problem, u: np.ndarray, *, kind: str = "expected",
                        diagonal: bool = False, batch_size: int | None = None,
                        data_diagonal: np.ndarray | None = None, plans=None,
                        progress_bar: bool = False):
    """Laplace precision of the log-space density at ``u``: ``D (F + H_p) D + diag(c)``.

    ``D = diag(T'(u))`` and ``c = −g ⊙ T'' − (log|T'|)''`` (``g`` the gradient of the
    log-posterior in ``θ``): the exact negative Hessian of ``log p(T(u)) + log|T'(u)|``
    when ``kind = "observed"``, its Fisher version otherwise.  Returns ``(θ, H_u)``.

    With ``diagonal=True`` only the diagonal is computed, from the squared response
    (:func:`~.fisher.data_diagonal_theta`, a few back-projections); ``data_diagonal``
    gives the Fisher part ``diag F`` computed at another point instead (the prior and
    chain-rule terms are always those at ``u``).  ``plans`` are the datasets'
    :func:`~.fisher_diag.pair_plan`.
    """
    free = jnp.asarray(problem.free_index)
    theta, t1, c = chain_terms(jnp.asarray(u, dtype=problem.dtype), free, problem.datasets,
                                problem.config)
    theta, t1, c = np.asarray(theta), np.asarray(t1), np.asarray(c)
    if diagonal:
        f = (data_diagonal_theta(problem, theta, kind=kind, plans=plans)
             if data_diagonal is None else np.asarray(data_diagonal))
        return theta, (f + prior_diagonal(problem, theta)) * t1 * t1 + c
    h = precision_matrix(problem, theta, kind=kind, batch_size=batch_size,
                         progress_bar=progress_bar)
    h = h * t1[:, None] * t1[None, :]
    h[np.diag_indices_from(h)] += c
    return theta, h


def whitening(h: np.ndarray) -> np.ndarray:
    """``S = L⁻ᵀ`` with ``L Lᵀ = h`` (so ``S Sᵀ = h⁻¹``): ``u = center + S z`` whitens ``z``."""
    chol = cholesky_precision(np.asarray(h, dtype=np.float64))
    return sla.solve_triangular(chol, np.eye(chol.shape[0]), lower=True).T
