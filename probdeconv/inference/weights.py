"""Importance weights of approximate posteriors: ``log p`` and ``log q`` per draw.

SVI and Laplace draw from an approximation ``q`` of the posterior ``p``.  Stored with each
draw (``stats.log_p``, ``stats.log_q``), the two log-densities let PSIS correct for the
approximation (:func:`arviz.loo_approximate_posterior`, Magnusson et al. 2019); their
difference is the log importance weight ``log p − log q`` (up to a constant).  Both are
evaluated in one parameterisation, and only their difference per draw matters:

- SVI and the log-normal Laplace: in the guide's variable ``z`` (whitened log-flux,
  :mod:`.latent`), ``log p = log posterior + log-Jacobian`` (:func:`~.latent.latent_log_density`)
  and ``log q`` the Gaussian's density;
- Laplace with gamma marginals: in flux, ``log p`` the log-posterior
  (:func:`probdeconv.forward.posterior.log_posterior`) and ``log q`` the Gaussian copula
  with gamma marginals (the Gaussian's density minus the log-derivative of each pixel's
  normal-to-gamma map) and the backgrounds' log-Jacobian;
- the linear Laplace: in flux, the Gaussian itself (``log p = −inf`` for a draw with a
  negative pixel: the posterior has no mass there).

``log p`` omits the constants of :func:`~probdeconv.forward.posterior.log_posterior`
(``log d!``, normalising constants of priors): a constant shift of all weights, which
self-normalised importance sampling ignores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from scipy.special import gammaln, xlogy

from ..forward.posterior import log_posterior
from .latent import Latent, bkg_transform, latent_log_density

__all__ = ["gaussian_log_density", "latent_log_p", "svi_log_q", "flux_log_p",
           "gamma_copula_log_q", "laplace_log_weights"]


def gaussian_log_density(dz: np.ndarray, gaussian) -> np.ndarray:
    """``log N(dz; 0, H⁻¹)`` of draws ``[n, d]``.

    ``gaussian`` is the Cholesky factor ``L`` of ``H = L Lᵀ`` (an array), or a low-rank
    precision (:class:`~.lowrank.LowRank`: ``H = S⁻¹ (V Θ Vᵀ + I − V Vᵀ) S⁻¹``).
    """
    dz = np.asarray(dz)
    d = dz.shape[-1]
    if isinstance(gaussian, np.ndarray | jax.Array):
        chol = np.asarray(gaussian)
        y = dz @ chol  # (Lᵀ dz)ᵀ: dzᵀ H dz = |Lᵀ dz|²
        quad, log_det = np.sum(y * y, axis=-1), 2.0 * np.sum(np.log(np.diag(chol)))
    else:
        w = dz / gaussian.scale  # S⁻¹ dz
        p = w @ gaussian.vectors  # [n, k]
        quad = np.sum(w * w, axis=-1) + p * p @ (gaussian.values - 1.0)
        log_det = -2.0 * np.sum(np.log(gaussian.scale)) + np.sum(np.log(gaussian.values))
    return -0.5 * quad + 0.5 * log_det - 0.5 * d * np.log(2.0 * np.pi)


BATCH = 8
"""Draws evaluated at once (each holds a data-space expectation)."""


@jax.jit
def _latent_log_p(z, datasets, config, latent):
    return jax.lax.map(lambda x: latent_log_density(x, datasets, config, latent), z,
                       batch_size=BATCH)


def latent_log_p(z: jax.Array, datasets, config, latent: Latent) -> np.ndarray:
    """``[n]`` log-density of latent draws ``z [n, d]`` (log-posterior + log-Jacobian)."""
    return np.asarray(_latent_log_p(jnp.asarray(z), datasets, config, latent))


def svi_log_q(guide, params: dict, z: jax.Array) -> np.ndarray:
    """``[n]`` log-density of the fitted guide at its draws ``z [n, d]``.

    ``AutoNormal``: the product of normals of its ``z_auto_loc`` / ``z_auto_scale``;
    other (continuous) guides: ``guide.get_posterior(params)``.
    """
    if "z_auto_loc" in params:
        q = dist.Normal(params["z_auto_loc"], params["z_auto_scale"]).to_event(1)
    else:
        q = guide.get_posterior(params)
    return np.asarray(q.log_prob(z))


@jax.jit
def _flux_log_p(images, bkgs, datasets, config):
    return jax.lax.map(lambda ib: log_posterior(datasets, ib[0], ib[1], config),
                       (images, bkgs), batch_size=BATCH)


def flux_log_p(images: np.ndarray, bkgs: np.ndarray, datasets, config) -> np.ndarray:
    """``[n]`` log-posterior of flux draws (``−inf`` where a free pixel is negative)."""
    images = np.asarray(images)
    out = np.asarray(_flux_log_p(jnp.asarray(images), jnp.asarray(bkgs), datasets, config))
    negative = np.any((images < 0) & np.asarray(config.mask), axis=(1, 2))
    return np.where(negative | ~np.isfinite(out), -np.inf, out)


def gamma_copula_log_q(dz: np.ndarray, gaussian, center: np.ndarray, sd: np.ndarray,
                       theta: np.ndarray, n_img: int, config) -> np.ndarray:
    """``[n]`` flux-space log-density of the Laplace draws with gamma marginals.

    ``dz [n, d]`` are the Gaussian deviations, ``theta [n, n_img]`` the free pixel fluxes
    they were mapped to (``θ_j = G_j⁻¹(Φ(dz_j / sd_j))``, ``G_j = Gamma(a_j, b_j)``,
    ``a_j = 1/sd_j²``, ``b_j = a_j e^{−center_j}``), so
    ``log q(θ) = log N(dz) − Σ_j [log φ(x_j) − log sd_j − log g_j(θ_j)]`` with
    ``x_j = dz_j / sd_j``, minus the backgrounds' ``log |T_b'(u_b)|``.
    """
    sd_img, c_img = sd[:n_img], np.asarray(center)[:n_img]
    x = dz[:, :n_img] / sd_img
    a = 1.0 / np.square(sd_img)
    b = a * np.exp(-c_img)
    log_g = (xlogy(a, b) + xlogy(a - 1.0, theta) - b * theta - gammaln(a))
    log_phi = -0.5 * x * x - 0.5 * np.log(2.0 * np.pi)
    out = gaussian_log_density(dz, gaussian) - np.sum(log_phi - np.log(sd_img) - log_g, axis=1)
    if config.bkg_free:
        u = jnp.asarray(np.asarray(center)[n_img:] + dz[:, n_img:])
        t = bkg_transform(config)
        out = out - np.sum(np.asarray(t.log_abs_det_jacobian(u, t(u))), axis=1)
    return out


def laplace_log_weights(problem, dz: np.ndarray, images: np.ndarray, bkgs: np.ndarray, *,
                        space: str, gamma: bool, center, sd, gaussian, latent: Latent
                        ) -> dict[str, np.ndarray]:
    """``{"stats.log_p": [1, n], "stats.log_q": [1, n]}`` of a batch of Laplace draws.

    ``dz [n, d]`` are the Gaussian deviations the draws ``images [n, lb, Ei]`` and
    ``bkgs [n, K]`` came from; ``gaussian`` the precision (Cholesky factor or low rank,
    :func:`gaussian_log_density`), ``latent`` the log-space centre with unit scale.
    """
    dz = np.asarray(dz)
    cfg = problem.config
    if space == "log" and not gamma:  # log-normal: the Gaussian in u itself
        log_p = latent_log_p(dz, problem.datasets, cfg, latent)
        log_q = gaussian_log_density(dz, gaussian)
    else:
        log_p = flux_log_p(images, np.asarray(bkgs), problem.datasets, cfg)
        if gamma:
            theta = np.asarray(images).reshape(dz.shape[0], -1)[:, problem.free_index]
            log_q = gamma_copula_log_q(dz, gaussian, np.asarray(center), np.asarray(sd),
                                       theta, problem.n_free, cfg)
        else:  # linear: N(θ̂, H⁻¹) in flux
            log_q = gaussian_log_density(dz, gaussian)
    return {"stats.log_p": np.asarray(log_p)[None], "stats.log_q": np.asarray(log_q)[None]}
