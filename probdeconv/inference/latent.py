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
  MAP image (:func:`~.map.map_run`) and is refined in log space by L-BFGS; unlike the
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

Masked pixels are not parameters at all (the model's masked entries are inert; here they
never enter ``z``), so the sampler sees no flat directions.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import scipy.linalg as sla
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from .. import forward as fm
from ..errors import ParameterError
from .fisher import log_posterior_theta, precision_matrix
from .map import MAPOptions, map_run
from .model import bkg_inside_support, bkg_support, sky_model
from .problem import Problem

__all__ = ["Latent", "Start", "to_model", "latent_to_flux", "latent_model",
           "latent_log_density", "flat_start", "find_map", "start_vector", "find_mode",
           "log_space_precision", "prepare"]

logger = logging.getLogger(__name__)

PRECONDITION = ("diagonal", "dense", "none")


class Latent(NamedTuple):
    """``u = center + scale ⊙ z`` (or ``center + scale @ z`` for a matrix) over (free
    pixels, free backgrounds); a pytree."""

    free: jax.Array  # [n_free] flat indices into [lb * Ei]
    center: jax.Array  # [n_params]
    scale: jax.Array  # [n_params] (diagonal) or [n_params, n_params] (dense whitening)


def _bkg_transform(config):
    return biject_to(bkg_support(config))


def to_model(z: jax.Array, latent: Latent, config):
    """``(image, bkg_norm, log_jacobian)`` at latent ``z``.

    Masked pixels of ``image`` are 1 (inert placeholders, see :mod:`.model`); the
    log-Jacobian is that of ``u ↦ (λ, b)`` (the constant ``Σ log scale`` is left out).
    """
    n = latent.free.shape[0]
    u = latent.center + (latent.scale @ z if latent.scale.ndim == 2 else latent.scale * z)
    size = int(np.prod(config.model_shape))
    image = jnp.ones(size, dtype=z.dtype).at[latent.free].set(jnp.exp(u[:n]))
    image = image.reshape(config.model_shape)
    log_jac = jnp.sum(u[:n])
    if config.bkg_free:
        t = _bkg_transform(config)
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
    from .model import log_posterior

    return log_posterior(datasets, image, bkg, config) + log_jac


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def _lbfgs_mode(z0, datasets, config, latent, max_iterations: int, tolerance):
    """Maximise :func:`latent_log_density` by L-BFGS (zoom line search) from ``z0``."""

    def f(z):
        value = -latent_log_density(z, datasets, config, latent)
        return jnp.where(jnp.isfinite(value), value, jnp.inf)

    opt = optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30))
    value_and_grad = optax.value_and_grad_from_state(f)

    def cond(carry):
        _, _, i, change, _ = carry
        return (i < max_iterations) & (change > tolerance)

    def body(carry):
        z, state, i, _, value = carry
        v, g = value_and_grad(z, state=state)
        updates, new_state = opt.update(g, state, z, value=v, grad=g, value_fn=f)
        new_z = optax.apply_updates(z, updates)
        new_value = optax.tree.get(new_state, "value")
        ok = jnp.isfinite(new_value) & (new_value <= v)
        change = jnp.where(ok, jnp.abs(v - new_value) / jnp.maximum(1.0, jnp.abs(v)), 0.0)
        return (jnp.where(ok, new_z, z), jax.tree.map(lambda a, b: jnp.where(ok, a, b),
                                                      new_state, state),
                i + 1, change, jnp.where(ok, new_value, v))

    init = (z0, opt.init(z0), jnp.asarray(0), jnp.asarray(jnp.inf, z0.dtype), f(z0))
    z, _, n, change, value = jax.lax.while_loop(cond, body, init)
    return z, -value, n


class Start(NamedTuple):
    """Where the samplers start: the MAP, the log-space mode and its Laplace precision."""

    map_image: np.ndarray  # [lb, Ei] flux-space MAP (masked 0)
    map_bkg: np.ndarray  # [K]
    latent: Latent  # center = log-space mode, scale = 1/sqrt(diag precision)
    precision: np.ndarray | None  # [n, n] in u (log-space) coordinates, when asked
    log_density: float  # at the mode
    seconds: dict


def flat_start(problem: Problem) -> np.ndarray:
    """A flat ``[lb, Ei]`` image whose expected sky counts equal ``Σ d − Σ b B``.

    At least a tenth of the counts is given to the sky; masked pixels are 0.
    """
    cfg = problem.config
    s = np.asarray(fm.summed_exposure(problem.datasets))
    counts = sum(float(jnp.sum(ds.counts)) for ds in problem.datasets)
    bkg = sum(float(jnp.sum(fm.background_counts(ds, cfg.bkg_fixed))) for ds in problem.datasets)
    exposure = float(np.sum(np.where(problem.mask, s, 0.0)))
    level = max(counts - bkg, 0.1 * counts, 1.0) / max(exposure, 1e-300)
    return np.where(problem.mask, level, 0.0)


def find_map(problem: Problem, *, init_image: np.ndarray | None = None,
             max_iterations: int = 1000, tolerance: float = 1e-10):
    """The flux-space MAP by :func:`~.map.map_run` (L-BFGS) from a flat image.

    The flat start has the total flux that explains the counts left after the
    backgrounds: ``Σ d − Σ b B`` spread over the exposure.
    """
    cfg = problem.config
    if init_image is None:
        init_image = flat_start(problem)
    init_image = np.asarray(init_image, dtype=np.float64)
    if init_image.shape != problem.model_shape:
        raise ParameterError(f"init_image has shape {init_image.shape}; expected "
                             f"{problem.model_shape} (the model axes [lb, Ei]).")
    res = map_run(jnp.asarray(init_image), None, problem.datasets, cfg, MAPOptions(),
                  max_iterations=max_iterations, tolerance=tolerance)
    return res


def start_vector(problem: Problem, image: np.ndarray, bkg: np.ndarray) -> np.ndarray:
    """Unconstrained ``u`` of ``(image, bkg)``: zero pixels floored at 10⁻³ of the mean."""
    cfg = problem.config
    free = problem.free_index
    vals = np.asarray(image, dtype=np.float64).ravel()[free]
    positive = vals[vals > 0]
    floor = 1e-3 * float(positive.mean()) if positive.size else 1e-10
    u_img = np.log(np.maximum(vals, floor))
    parts = [u_img]
    if cfg.bkg_free:
        b = bkg_inside_support(cfg, np.asarray(bkg, dtype=np.float64))
        parts.append(np.asarray(_bkg_transform(cfg).inv(b)))
    return np.concatenate(parts)


def find_mode(problem: Problem, u0: np.ndarray, *, scale: np.ndarray | None = None,
              max_iterations: int = 500, tolerance: float = 1e-11):
    """Mode of the log-flux posterior by L-BFGS from ``u0`` (:func:`start_vector`).

    ``scale`` preconditions the search (``u = u0 + scale ⊙ z``).  Returns
    ``(u, log_density, iterations)``.
    """
    u0 = jnp.asarray(u0, dtype=problem.dtype)
    scale = jnp.ones_like(u0) if scale is None else jnp.asarray(scale, dtype=problem.dtype)
    latent = Latent(jnp.asarray(problem.free_index), u0, scale)
    cfg = problem.config
    z, value, n = _lbfgs_mode(jnp.zeros_like(u0), problem.datasets, cfg, latent,
                              int(max_iterations), jnp.asarray(tolerance, u0.dtype))
    dz = scale @ z if scale.ndim == 2 else scale * z
    return np.asarray(u0 + dz), float(value), int(n)


def _transform(u: jax.Array, n_img: int, config):
    """Elementwise ``θ = T(u)``."""
    img = jnp.exp(u[:n_img])
    if not config.bkg_free:
        return img
    return jnp.concatenate([img, _bkg_transform(config)(u[n_img:])])


def _log_abs_dt(u: jax.Array, n_img: int, config):
    """Elementwise ``log |T'(u)|``."""
    parts = [u[:n_img]]
    if config.bkg_free:
        t = _bkg_transform(config)
        parts.append(t.log_abs_det_jacobian(u[n_img:], t(u[n_img:])))
    return jnp.concatenate(parts)


@jax.jit
def _chain_terms(u, free, datasets, config):
    """``T'(u)``, and the diagonal ``−g T'' − (log|T'|)''`` of the change of variables."""
    n_img = free.shape[0]
    ones = jnp.ones_like(u)
    theta, t1 = jax.jvp(lambda x: _transform(x, n_img, config), (u,), (ones,))
    t2 = jax.jvp(lambda x: jax.jvp(lambda y: _transform(y, n_img, config), (x,), (ones,))[1],
                 (u,), (ones,))[1]
    l2 = jax.jvp(lambda x: jax.jvp(lambda y: _log_abs_dt(y, n_img, config), (x,), (ones,))[1],
                 (u,), (ones,))[1]
    g = jax.grad(log_posterior_theta)(theta, free, datasets, config)
    return theta, t1, -g * t2 - l2


def log_space_precision(problem: Problem, u: np.ndarray, *, kind: str = "expected",
                        diagonal: bool = False, batch_size: int | None = None):
    """Laplace precision of the log-space density at ``u``: ``D (F + H_p) D + diag(c)``.

    ``D = diag(T'(u))`` and ``c = −g ⊙ T'' − (log|T'|)''`` (``g`` the gradient of the
    log-posterior in ``θ``): the exact negative Hessian of ``log p(T(u)) + log|T'(u)|``
    when ``kind = "observed"``, its Fisher version otherwise.  Returns ``(θ, H_u)``.
    """
    free = jnp.asarray(problem.free_index)
    theta, t1, c = _chain_terms(jnp.asarray(u, dtype=problem.dtype), free, problem.datasets,
                                problem.config)
    t1, c = np.asarray(t1), np.asarray(c)
    h = precision_matrix(problem, np.asarray(theta), kind=kind, diagonal=diagonal,
                         batch_size=batch_size)
    if diagonal:
        return np.asarray(theta), h * t1 * t1 + c
    h = h * t1[:, None] * t1[None, :]
    h[np.diag_indices_from(h)] += c
    return np.asarray(theta), h


def whitening(h: np.ndarray) -> np.ndarray:
    """``S = L⁻ᵀ`` with ``L Lᵀ = h`` (so ``S Sᵀ = h⁻¹``): ``u = center + S z`` whitens ``z``."""
    from .fisher import cholesky_precision

    chol = cholesky_precision(np.asarray(h, dtype=np.float64))
    return sla.solve_triangular(chol, np.eye(chol.shape[0]), lower=True).T


def _scale(diag: np.ndarray) -> np.ndarray:
    """``1/√diag`` where finite and positive, else 1."""
    ok = np.isfinite(diag) & (diag > 0)
    return np.where(ok, 1.0 / np.sqrt(np.where(ok, diag, 1.0)), 1.0)


def prepare(problem: Problem, *, init: str = "map", init_image: np.ndarray | None = None,
            map_iterations: int = 1000, mode_iterations: int = 500,
            precondition: str = "diagonal", fisher: str = "expected", full: bool = False,
            dense_limit: int = 2048, batch_size: int | None = None) -> Start:
    """MAP, log-space mode and whitening scales: the common start of every sampler.

    Parameters
    ----------
    init
        ``"map"`` (gradient MAP by :func:`~.map.map_run`) or ``"rl"`` (Richardson-Lucy,
        100 iterations, then the log-space refinement); ``"image"`` uses ``init_image``
        as the MAP.
    precondition
        ``"diagonal"`` (default): ``scale = 1/√diag(H_u)``; ``"dense"``: whiten by the full
        log-space Laplace covariance, ``u = û + S z`` with ``S Sᵀ = H_u⁻¹`` (up to
        ``dense_limit`` parameters; beyond, diagonal); ``"none"``: ``scale = 1``.
    full
        Also keep the full log-space precision ``H_u`` (for the Laplace approximation).
    """
    if precondition not in PRECONDITION:
        raise ParameterError(f"precondition: got {precondition!r}; valid choices: "
                             f"{', '.join(PRECONDITION)}.")
    seconds = {}
    t0 = time.perf_counter()
    cfg = problem.config
    if init == "map":
        res = find_map(problem, init_image=init_image, max_iterations=map_iterations)
        image, bkg = np.asarray(res.image), np.asarray(res.bkg_norm)
        if not res.converged:
            logger.warning("MAP start: not converged after %d L-BFGS steps (log-posterior "
                           "%.10g); the log-space refinement continues from there.",
                           res.iterations, res.log_posterior[-1])
    elif init == "rl":
        image, bkg = _rl_start(problem, init_image)
    elif init == "image":
        if init_image is None:
            raise ParameterError("init='image' needs init_image (an [lb, Ei] array).")
        image, bkg = np.asarray(init_image, dtype=np.float64), np.asarray(cfg.bkg_fixed)
    else:
        raise ParameterError(f"init: got {init!r}; valid choices: map, rl, image.")
    image = np.where(problem.mask, image, 0.0)
    seconds["map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    u0 = start_vector(problem, image, bkg)
    n_par = int(u0.shape[0])
    dense = precondition == "dense" and n_par <= dense_limit
    want_h = precondition != "none" or full
    scale0 = None
    if want_h:  # whitened search: bright and faint pixels (and backgrounds) alike
        _, h0 = log_space_precision(problem, u0, kind=fisher, diagonal=not (dense or full),
                                    batch_size=batch_size)
        scale0 = whitening(h0) if dense else _scale(np.diag(h0) if h0.ndim == 2 else h0)
    u, value, n = find_mode(problem, u0, scale=scale0, max_iterations=mode_iterations)
    seconds["mode"] = time.perf_counter() - t0
    logger.info("log-space mode after %d L-BFGS steps: log-density %.10g", n, value)
    t0 = time.perf_counter()
    precision, scale = None, np.ones_like(u)
    if want_h:
        _, h = log_space_precision(problem, u, kind=fisher, diagonal=not (dense or full),
                                   batch_size=batch_size)
        precision = h if full else None
        if dense:
            scale = whitening(h)
        elif precondition in ("diagonal", "dense"):
            scale = _scale(np.diag(h) if h.ndim == 2 else h)
    seconds["precision"] = time.perf_counter() - t0
    latent = Latent(jnp.asarray(problem.free_index), jnp.asarray(u, problem.dtype),
                    jnp.asarray(scale, problem.dtype))
    return Start(image, np.asarray(bkg), latent, precision, value, seconds)


def begin(problem: Problem, start: Start | None, prepare_options: dict):
    """Shared opening of the samplers: the start (prepared unless given), its timings, the
    latent parameterisation, its size and NumPyro's ``init_to_value`` at ``z = 0``."""
    from numpyro.infer import init_to_value

    if start is None:
        start = prepare(problem, **prepare_options)
    timings = {f"start_{k}": v for k, v in start.seconds.items()}
    n = int(start.latent.center.shape[0])
    init = init_to_value(values={"z": jnp.zeros(n, problem.dtype)})
    return start, timings, start.latent, n, init


def _rl_start(problem: Problem, init_image):
    from ..algorithms import em

    cfg = problem.config
    opts = em.EMOptions(optimize_bkg=bool(cfg.bkg_free))
    params = em.make_params(problem.datasets, opts, mask=problem.mask,
                            bkg_range=np.asarray(cfg.bkg_range), n_bkg=cfg.n_bkg)
    if init_image is None:
        s = np.asarray(params.exposure)
        counts = sum(float(jnp.sum(ds.counts)) for ds in problem.datasets)
        init_image = np.where(problem.mask, 0.5 * counts / max(float(s.sum()), 1e-300), 0.0)
    state = em.init(jnp.asarray(init_image), cfg.bkg_fixed, problem.datasets, params)
    step = em.build_step(opts)
    for _ in range(100):
        state, _ = step(state, problem.datasets, params)
    return np.asarray(state.model), np.asarray(state.bkg_norm)
