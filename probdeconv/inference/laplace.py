"""Laplace (Fisher) approximation: a Gaussian at the mode, precision from the forward model.

Two spaces (``space``):

- ``"log"`` (default, positive draws): the Gaussian ``N(û, H_u⁻¹)`` over the log-flux of
  the free pixels (and the unconstrained background normalisations), at the mode ``û``
  of the log-space posterior (with its Jacobian, :func:`~.latent.find_mode`) and with
  ``H_u = D (F + H_p) D + diag(c)`` (:func:`~.latent.log_space_precision`); the flux
  draws are ``exp(u)``, i.e. log-normal.
- ``"linear"``: ``N(θ̂, (F + H_p)⁻¹)`` at the flux-space MAP ``θ̂`` (``θ`` the free pixel
  fluxes and background normalisations) — the classical Laplace approximation; draws can
  be negative (their fraction is logged and recorded).

``F`` is the Fisher information ``Jᵀ diag(1/E) J`` (``fisher="expected"``) or the observed
``Jᵀ diag(d/E²) J`` of the forward model, built column by column in batches
(:mod:`.fisher`); ``H_p = −∇² log p`` the priors' Hessian, from Hessian-vector products of
the model's log-prior.  Both are ``n × n`` with ``n`` the free parameters, restricted to
the free pixels; masked pixels are 0 in every draw.

Approximation error.  For one pixel with a ``Gamma(a, b)`` posterior, the log-space
Laplace gives a log-normal with median ``a/b`` and ``σ² = 1/a``: mean too high by
``≈ 1/(2a)`` relative, std exact to ``O(1/a)``; the linear-space one has mean
``(a − 1)/b`` (low by ``1/a``) and std ``√(a−1)/b``.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> p = Problem.from_datasets([ds])
>>> draws = run_laplace(p, num_draws=4000, seed=1)
>>> abs(float(draws.store.mean("image")[0, 0]) / 20.25 - 1) < 0.03  # exact: (80+1)/4
True
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg as sla

from ..errors import ParameterError
from ..forward.problem import Problem
from .draws import Draws, DrawStore
from .fisher import cholesky_precision, precision_matrix, theta_to_model
from .latent import Latent, latent_to_flux
from .start import Start, prepare

__all__ = ["SPACES", "run_laplace", "cholesky_precision"]

logger = logging.getLogger(__name__)

SPACES = ("log", "linear")


@jax.jit
def _linear_to_flux(theta_draws, free, config):
    def one(theta):
        image, bkg = theta_to_model(theta, free, config)
        return image, bkg

    return jax.vmap(one)(theta_draws)


def run_laplace(problem: Problem, *, space: str = "log", num_draws: int = 1000, seed: int = 0,
                fisher: str = "expected", max_params: int = 8192,
                batch_draws: int | None = None, backend: Any = None,
                batch_size: int | None = None, start: Start | None = None,
                **prepare_options: Any) -> Draws:
    """Draws from the Laplace approximation of the posterior.

    Parameters
    ----------
    space
        ``"log"`` (log-normal draws, default) or ``"linear"`` (Gaussian in flux).
    num_draws, seed
        Number of draws and their random seed.
    fisher
        ``"expected"`` or ``"observed"`` Fisher information (:mod:`.fisher`).
    max_params
        Largest number of free parameters for the dense ``n × n`` precision.
    batch_size
        Columns of the precision built per compiled batch.
    """
    if space not in SPACES:
        raise ParameterError(f"space: got {space!r}; valid choices: {', '.join(SPACES)}.")
    if int(num_draws) != num_draws or num_draws < 1:
        raise ParameterError(f"num_draws: got {num_draws!r}; expected an integer >= 1.")
    n = problem.n_params
    if n > max_params:
        raise ParameterError(f"Laplace: {n} free parameters need a dense {n} x {n} precision "
                             f"matrix (limit max_params = {max_params}); mask pixels, raise "
                             "max_params, or use method='svi'.")
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    if start is None or (space == "log" and start.precision is None):
        start = prepare(problem, full=(space == "log"), precondition="none", fisher=fisher,
                        batch_size=batch_size, **prepare_options)
    timings.update({f"start_{k}": v for k, v in start.seconds.items()})
    t0 = time.perf_counter()
    free = jnp.asarray(problem.free_index)
    if space == "log":
        h = start.precision
        center = start.latent.center
    else:
        theta = np.concatenate([np.asarray(start.map_image).ravel()[problem.free_index]]
                               + ([np.asarray(start.map_bkg)] if problem.config.bkg_free
                                  else []))
        h = precision_matrix(problem, theta, kind=fisher, batch_size=batch_size)
        center = jnp.asarray(theta, problem.dtype)
    chol = cholesky_precision(np.asarray(h))
    timings["precision"] = time.perf_counter() - t0 + start.seconds.get("precision", 0.0)
    shapes = {"image": problem.model_shape}
    if problem.config.bkg_free:
        shapes["bkg_norm"] = (problem.n_bkg,)
    store = DrawStore(1, shapes, backend=backend)
    rng = np.random.default_rng(int(seed))
    batch = int(batch_draws or max(1, min(num_draws, 2.5e8 // (8 * max(
        int(np.prod(problem.model_shape)), n)))))
    latent = Latent(free, jnp.asarray(center), jnp.ones(n, problem.dtype))
    t0 = time.perf_counter()
    done, negative = 0, 0
    while done < num_draws:
        take = min(batch, num_draws - done)
        eps = rng.standard_normal((n, take))
        dz = sla.solve_triangular(chol.T, eps, lower=False).T  # L⁻ᵀ ε ~ N(0, H⁻¹)
        if space == "log":
            images, bkgs = latent_to_flux(jnp.asarray(dz), problem.config, latent)
        else:
            images, bkgs = _linear_to_flux(center + jnp.asarray(dz), free, problem.config)
            negative += int(np.sum(np.asarray(images) < 0))
        chunk = {"image": np.asarray(images)[None]}
        if problem.config.bkg_free:
            chunk["bkg_norm"] = np.asarray(bkgs)[None]
        store.append(chunk)
        done += take
    timings["draws"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    settings = {"method": "laplace", "space": space, "fisher": fisher,
                "num_draws": int(num_draws), "seed": int(seed), "n_params": int(n)}
    if space == "linear":
        frac = negative / max(num_draws * problem.n_free, 1)
        settings["negative_fraction"] = float(frac)
        if negative:
            logger.warning("Laplace (linear): %.2g of the pixel draws are negative; use "
                           "space='log' for positive draws.", frac)
    return Draws(store, "laplace", settings, timings, independent=True,
                 map_image=start.map_image, map_bkg=start.map_bkg, start=start)
