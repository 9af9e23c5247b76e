"""Laplace (Fisher) approximation: a Gaussian at the mode, precision from the forward model.

Two spaces (``space``):

- ``"log"`` (default, positive draws): the Gaussian ``N(û, H_u⁻¹)`` over the log-flux of
  the free pixels (and the unconstrained background normalisations), at the mode ``û``
  of the log-space posterior (with its Jacobian, :func:`~.mode.find_mode`) and with
  ``H_u = D (F + H_p) D + diag(c)`` (:func:`~.latent.log_space_precision`).  The pixel
  marginals (``marginals``) are

  - ``"gamma"`` (default): each pixel's draw is mapped through the normal and gamma
    quantile functions onto ``Gamma(a_j, b_j)`` with ``a_j = 1/σ_j²``,
    ``b_j = a_j e^{−û_j}`` (``σ_j² = (H_u⁻¹)_jj``) — the gamma distribution whose own
    log-space Laplace approximation is this Gaussian marginal — keeping the Gaussian's
    correlations (a Gaussian copula);
  - ``"lognormal"``: ``λ = exp(u)``, the plain log-normal.

  Both agree for bright pixels (``a_j ≫ 1``).  For a faint pixel (a few counts' worth of
  information, ``a ~ 1``) the log-normal is far too wide and too high: for an exact
  ``Gamma(1, b)`` posterior it has std ``√((e−1)e)/b ≈ 2.16/b`` against ``1/b`` and mean
  ``1.65/b`` against ``1/b``; the gamma marginals are exact there.
- ``"linear"``: ``N(θ̂, (F + H_p)⁻¹)`` at the flux-space MAP ``θ̂`` (``θ`` the free pixel
  fluxes and background normalisations) — the classical Laplace approximation; draws can
  be negative (their fraction is logged and recorded).

``F`` is the observed information ``Jᵀ diag(d/E²) J`` (``fisher="observed"``, the
default: with it ``H_u`` is the exact negative Hessian of the log-space density, which the
gamma marginals need — for a pixel without counts the expected information
``Jᵀ diag(1/E) J`` (``fisher="expected"``) adds ``S λ`` to the log-space precision ``1``,
a standard deviation too small by ``√2``) of the forward model, built column by column in
batches
(:mod:`.fisher`); ``H_p = −∇² log p`` the priors' Hessian, from Hessian-vector products of
the model's log-prior.  Both are ``n × n`` with ``n`` the free parameters, restricted to
the free pixels; masked pixels are 0 in every draw.  The dense precision is computed once,
at the mode (:func:`~.start.prepare` with ``full=True``).

Curvature (``curvature``).  ``"dense"`` forms ``H_u`` (one forward and back projection per
parameter) and factorises it; ``"lowrank"`` never forms it: a low-rank plus diagonal
approximation from block-Lanczos products whose rank doubles until the σ map settles
(:mod:`.lowrank`, log space only; the settings record the rank, the captured variance
share and the rank history); ``"auto"`` (default) is dense up to :data:`LOWRANK_ABOVE`
parameters.

Each draw is stored with ``stats.log_p`` and ``stats.log_q``, the log-posterior and the
approximation's log-density at it (:mod:`.weights`): the importance weights of PSIS-LOO.

Timings (``Draws.timings``, seconds): ``start_map``, ``start_mode``, ``start_precision``
(the start, with the dense precision at the mode), ``factorise`` (Cholesky factor and
marginal spreads), ``draws`` and ``total`` (the whole call).

Approximation error.  For one pixel with a ``Gamma(a, b)`` posterior, the log-space
Laplace with gamma marginals is exact; with log-normal marginals it has median ``a/b`` and
``σ² = 1/a``: mean too high by ``≈ 1/(2a)`` relative, std too wide by ``≈ 1/(2a)``
(``× 2.16`` at ``a = 1``); the linear-space one has mean ``(a − 1)/b`` (low by ``1/a``)
and std ``√(a−1)/b``.  Where the posterior of a pixel is not a gamma (a faint pixel under a
bright background is closer to a truncated Gaussian), quote its quantiles (upper limits)
rather than mean ± std (:meth:`probdeconv.results.posterior.Posterior.upper_limit_map`).

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
>>> abs(float(draws.store.var("image")[0, 0]) / (81 / 16) - 1) < 0.1  # exact: 81/4²
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
from scipy.special import gammainccinv, gammaincinv, ndtr
from tqdm.auto import tqdm

from ..errors import ParameterError
from ..forward.problem import Problem
from .draws import Draws, DrawStore
from .fisher import cholesky_precision, precision_matrix, theta_to_model
from .latent import Latent, bkg_transform, latent_to_flux, log_space_precision
from .lowrank import lowrank_precision
from .start import Start, prepare, start_settings
from .weights import laplace_log_weights

__all__ = ["SPACES", "MARGINALS", "CURVATURES", "LOWRANK_ABOVE", "run_laplace",
           "cholesky_precision", "gamma_marginals"]

logger = logging.getLogger(__name__)

SPACES = ("log", "linear")
MARGINALS = ("gamma", "lognormal")
CURVATURES = ("auto", "dense", "lowrank")
LOWRANK_ABOVE = 2048
"""``curvature="auto"``: dense up to this many free parameters, low rank (:mod:`.lowrank`)
above."""


def gamma_marginals(du: np.ndarray, center: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Fluxes ``[draws, n]`` from log-space deviations ``du`` with Gaussian marginals
    ``N(0, sd²)`` around ``center``: each through ``Φ`` and the quantile function of
    ``Gamma(a, b)``, ``a = 1/sd²``, ``b = a e^{−center}`` (the gamma whose log-space
    Laplace approximation is ``N(center, sd²)``).

    Examples
    --------
    >>> import numpy as np
    >>> x = gamma_marginals(np.array([[0.0], [1.0]]), np.log([2.0]), np.array([1.0]))
    >>> [round(float(v), 4) for v in x[:, 0]]   # Gamma(1, 1/2): median 2 ln 2, q(Φ(1))
    [1.3863, 3.682]
    """
    a = 1.0 / np.square(sd)
    b = a * np.exp(-np.asarray(center))
    x = du / sd
    low = gammaincinv(a, ndtr(np.minimum(x, 0.0)))  # lower tail, accurate near 0
    high = gammainccinv(a, ndtr(-np.maximum(x, 0.0)))  # upper tail, accurate near 1
    return np.where(x <= 0.0, low, high) / b


@jax.jit
def _linear_to_flux(theta_draws, free, config):
    def one(theta):
        image, bkg = theta_to_model(theta, free, config)
        return image, bkg

    return jax.vmap(one)(theta_draws)


def _gamma_draws(problem: Problem, du: np.ndarray, center: np.ndarray, sd: np.ndarray):
    """Images ``[draws, lb, Ei]`` (gamma marginals) and backgrounds ``[draws, K]``."""
    n_img = problem.n_free
    images = np.zeros((du.shape[0], int(np.prod(problem.model_shape))))
    images[:, problem.free_index] = gamma_marginals(du[:, :n_img], center[:n_img],
                                                    sd[:n_img])
    images = images.reshape(du.shape[0], *problem.model_shape)
    cfg = problem.config
    if not cfg.bkg_free:
        return images, np.broadcast_to(np.asarray(cfg.bkg_fixed), (du.shape[0], cfg.n_bkg))
    bkgs = np.asarray(bkg_transform(cfg)(jnp.asarray(center[n_img:] + du[:, n_img:])))
    return images, bkgs


def run_laplace(problem: Problem, *, space: str = "log", marginals: str = "gamma",
                num_draws: int = 1000, seed: int = 0,
                fisher: str = "observed", max_params: int = 8192,
                batch_draws: int | None = None, backend: Any = None,
                batch_size: int | None = None, start: Start | None = None,
                progress_bar: bool = False, curvature: str = "auto", rank: int = 32,
                max_rank: int | None = None, rank_tolerance: float = 0.01,
                **prepare_options: Any) -> Draws:
    """Draws from the Laplace approximation of the posterior.

    Parameters
    ----------
    space
        ``"log"`` (positive draws, default) or ``"linear"`` (Gaussian in flux).
    marginals
        Pixel marginals in log space: ``"gamma"`` (default) or ``"lognormal"`` (see the
        module docstring).
    num_draws, seed
        Number of draws and their random seed.
    fisher
        ``"observed"`` (default) or ``"expected"`` Fisher information (:mod:`.fisher`).
    max_params
        Largest number of free parameters for the dense ``n × n`` precision.
    batch_size
        Columns of the precision built per compiled batch.
    progress_bar
        Progress bars for the start (MAP, mode) and the draws.
    curvature
        ``"dense"`` (the ``n × n`` precision), ``"lowrank"`` (matrix-free low rank plus
        diagonal, :mod:`.lowrank`; log space only; its start defaults to ``init="em"``,
        ``mode_method="newton"``) or ``"auto"`` (dense up to :data:`LOWRANK_ABOVE`
        parameters).
    rank, max_rank, rank_tolerance
        The low-rank rule: first rank, limit, and the relative change of the informative
        pixels' σ (95th percentile) below which the doubling stops.
    """
    if space not in SPACES:
        raise ParameterError(f"space: got {space!r}; valid choices: {', '.join(SPACES)}.")
    if marginals not in MARGINALS:
        raise ParameterError(f"marginals: got {marginals!r}; valid choices: "
                             f"{', '.join(MARGINALS)}.")
    if int(num_draws) != num_draws or num_draws < 1:
        raise ParameterError(f"num_draws: got {num_draws!r}; expected an integer >= 1.")
    if curvature not in CURVATURES:
        raise ParameterError(f"curvature: got {curvature!r}; valid choices: "
                             f"{', '.join(CURVATURES)}.")
    n = problem.n_params
    if curvature == "auto":
        curvature = "lowrank" if (space == "log" and n > LOWRANK_ABOVE) else "dense"
    lowrank = curvature == "lowrank"
    if lowrank and space != "log":
        raise ParameterError("curvature='lowrank' works in log space only; use space='log' "
                             "or curvature='dense'.")
    if n > max_params and not lowrank:
        raise ParameterError(f"Laplace: {n} free parameters need a dense {n} x {n} precision "
                             f"matrix (limit max_params = {max_params}); use curvature='lowrank', "
                             "mask pixels, or raise max_params.")
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    if start is None:
        if lowrank:  # the fast start (SQUAREM EM, Newton-CG) unless asked otherwise
            prepare_options.setdefault("init", "em")
            prepare_options.setdefault("mode_method", "newton")
        start = prepare(problem, full=(space == "log" and not lowrank), precondition="none",
                        fisher=fisher,
                        batch_size=batch_size, progress_bar=progress_bar, **prepare_options)
    timings.update({f"start_{k}": v for k, v in start.seconds.items()})
    t0 = time.perf_counter()
    free = jnp.asarray(problem.free_index)
    lr = None
    if lowrank:
        center = start.latent.center
        lr = lowrank_precision(problem, np.asarray(center), kind=fisher, rank=rank,
                               max_rank=max_rank, tolerance=rank_tolerance, seed=seed,
                               progress_bar=progress_bar)
        sd = lr.sd
    elif space == "log":
        center = start.latent.center
        h = start.precision
        if h is None or (start.notes or {}).get("fisher") != fisher:  # once, at the mode
            _, h = log_space_precision(problem, np.asarray(center), kind=fisher,
                                       batch_size=batch_size, progress_bar=progress_bar)
    else:
        theta = np.concatenate([np.asarray(start.map_image).ravel()[problem.free_index]]
                               + ([np.asarray(start.map_bkg)] if problem.config.bkg_free
                                  else []))
        h = precision_matrix(problem, theta, kind=fisher, batch_size=batch_size,
                             progress_bar=progress_bar)
        center = jnp.asarray(theta, problem.dtype)
    gamma = space == "log" and marginals == "gamma"
    if not lowrank:
        chol = cholesky_precision(np.asarray(h))
    if gamma and not lowrank:  # marginal standard deviations: diag(H⁻¹) = column norms² of L⁻¹
        sd = np.sqrt(np.sum(sla.solve_triangular(chol, np.eye(n), lower=True) ** 2, axis=0))
    timings["factorise"] = time.perf_counter() - t0  # (+ the precision, when not the start's)
    shapes = {"image": problem.model_shape, "stats.log_p": (), "stats.log_q": ()}
    if problem.config.bkg_free:
        shapes["bkg_norm"] = (problem.n_bkg,)
    store = DrawStore(1, shapes, backend=backend)
    rng = np.random.default_rng(int(seed))
    batch = int(batch_draws or max(1, min(num_draws, 2.5e8 // (8 * max(
        int(np.prod(problem.model_shape)), n)))))
    latent = Latent(free, jnp.asarray(center), jnp.ones(n, problem.dtype))
    t0 = time.perf_counter()
    done, negative = 0, 0
    bar = tqdm(total=int(num_draws), desc="Laplace draws", unit="draw",
               disable=not progress_bar, leave=False)
    while done < num_draws:
        take = min(batch, num_draws - done)
        eps = rng.standard_normal((n, take))
        if lowrank:
            dz = lr.deviations(eps)
        else:
            dz = sla.solve_triangular(chol.T, eps, lower=False).T  # L⁻ᵀ ε ~ N(0, H⁻¹)
        if gamma:
            images, bkgs = _gamma_draws(problem, dz, np.asarray(center), sd)
        elif space == "log":
            images, bkgs = latent_to_flux(jnp.asarray(dz), problem.config, latent)
        else:
            images, bkgs = _linear_to_flux(center + jnp.asarray(dz), free, problem.config)
            negative += int(np.sum(np.asarray(images) < 0))
        chunk = {"image": np.asarray(images)[None]}
        if problem.config.bkg_free:
            chunk["bkg_norm"] = np.asarray(bkgs)[None]
        chunk.update(laplace_log_weights(  # importance weights for PSIS-LOO
            problem, dz, images, bkgs, space=space, gamma=gamma, center=center,
            sd=sd if gamma else None, gaussian=lr if lowrank else chol, latent=latent))
        store.append(chunk)
        done += take
        bar.update(take)
    bar.close()
    timings["draws"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    settings = {"method": "laplace", "space": space, "fisher": fisher,
                "marginals": marginals if space == "log" else "normal",
                "num_draws": int(num_draws), "seed": int(seed), "n_params": int(n),
                "curvature": curvature}
    if lowrank:
        settings.update(rank=lr.rank, captured_variance=lr.captured,
                        rank_converged=lr.converged, rank_tolerance=float(rank_tolerance),
                        rank_history=", ".join(f"{k}: {c:.3g}" for k, c, _ in lr.history))
    settings.update(start_settings(start))
    if space == "linear":
        frac = negative / max(num_draws * problem.n_free, 1)
        settings["negative_fraction"] = float(frac)
        if negative:
            logger.warning("Laplace (linear): %.2g of the pixel draws are negative; use "
                           "space='log' for positive draws.", frac)
    return Draws(store, "laplace", settings, timings, independent=True,
                 map_image=start.map_image, map_bkg=start.map_bkg, start=start)
