"""Standardised coordinates ``x`` of a problem, with their Fisher metric (MGVI, field Laplace).

Two parameterisations share one interface (:class:`Coords`, a pytree):

- ``kind="field"`` (``image_prior: field``, :mod:`probdeconv.forward.field`):
  ``x = [field coordinates (N(0, I) a priori), u_b]`` with the free background
  normalisations ``b = T_b(u_b)`` (NumPyro's bijection onto their support);
- ``kind="latent"`` (every other prior): ``x = z``, the whitened log-flux of
  :mod:`.latent` around the log-space mode (``u = center + scale ⊙ z``).

:func:`log_joint` is the log-posterior density of ``x`` (log-likelihood over the observed
bins, log-prior, log-Jacobian of ``x ↦ (λ, b)``), up to a constant.  The metric

    M(x) = Jᵀ diag(1/E) J + diag(p(x)),       J = ∂E/∂x,

is the Fisher information of the Poisson data in ``x`` plus the prior's curvature ``p``:
exactly ``1`` on the field coordinates (their ``N(0, I)`` prior) and elsewhere the
diagonal of ``−∇² log prior`` clipped at 0 (:func:`prior_curvature`) — the Fisher metric of
MGVI.  :func:`metric_product` is ``M v`` (matrix-free: one forward projection ``J v`` and one
back projection ``Jᵀ (w ⊙ ·)``), :func:`metric_sqrt_product` draws ``ζ ~ N(0, M)`` as
``Jᵀ (√w ⊙ ε_d) + √p ⊙ ε_x``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import forward as fm
from ..forward.field import field_hyper, field_image
from ..forward.posterior import bkg_inside_support, log_prior_terms
from ..forward.problem import Problem
from .latent import Latent, bkg_transform, to_model

__all__ = ["Coords", "field_coords", "latent_coords", "coords_to_model", "log_joint",
           "expectations", "metric_product", "metric_sqrt_product", "prior_curvature",
           "coords_outputs", "field_start"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Coords:
    """How ``x`` maps to ``(image, bkg)``; build with :func:`field_coords` or
    :func:`latent_coords`."""

    latent: Latent | None  # kind "latent"
    kind: str = dataclasses.field(default="field", metadata=dict(static=True))
    n_field: int = dataclasses.field(default=0, metadata=dict(static=True))


def field_coords(problem: Problem) -> Coords:
    """Coordinates of a problem with ``image_prior: field``."""
    return Coords(None, "field", int(problem.config.field.size))


def latent_coords(latent: Latent) -> Coords:
    """Coordinates ``z`` of :mod:`.latent` (``u = center + scale z``)."""
    return Coords(latent, "latent", 0)


def coords_to_model(x: jax.Array, coords: Coords, config):
    """``(image [lb, Ei] masked 0, bkg [K], log-prior of x incl. the log-Jacobian)``."""
    if coords.kind == "latent":
        image, bkg, log_jac = to_model(x, coords.latent, config)
        image = jnp.where(config.mask, image, 0.0)
        terms = log_prior_terms(image, bkg, config)
        return image, bkg, log_jac + sum(terms.values(), jnp.zeros((), x.dtype))
    xf = x[:coords.n_field]
    image = jnp.where(config.mask, field_image(xf, config.field), 0.0)
    lp = -0.5 * jnp.sum(xf * xf)
    if config.bkg_free:
        t = bkg_transform(config)
        ub = x[coords.n_field:]
        bkg = t(ub)
        lp = lp + jnp.sum(t.log_abs_det_jacobian(ub, bkg))
    else:
        bkg = config.bkg_fixed
    terms = log_prior_terms(image, bkg, config)  # field: only a background gamma prior
    return image, bkg, lp + sum(terms.values(), jnp.zeros((), x.dtype))


def log_joint(x: jax.Array, datasets, config, coords: Coords) -> jax.Array:
    """Log-posterior density of ``x`` (up to a constant)."""
    image, bkg, lp = coords_to_model(x, coords, config)
    return lp + sum(fm.observed_log_likelihood(ds, image, bkg) for ds in datasets)


def expectations(x: jax.Array, datasets, config, coords: Coords) -> tuple:
    """Expected counts ``E`` of every dataset (``[t, i]`` each) at ``x``."""
    image, bkg, _ = coords_to_model(x, coords, config)
    return tuple(fm.expected_counts(ds, image, bkg) for ds in datasets)


def _weights(expect) -> tuple:
    # 1/E on bins with an expectation; bins no source or background reaches carry none
    return tuple(jnp.where(e > 0, 1.0 / jnp.where(e > 0, e, 1.0), 0.0) for e in expect)


def metric_product(x, v, p, datasets, config, coords: Coords) -> jax.Array:
    """``M(x) v = Jᵀ (w ⊙ J v) + p ⊙ v`` (``p`` from :func:`prior_curvature`)."""
    expect, f_jvp = jax.linearize(lambda y: expectations(y, datasets, config, coords), x)
    f_t = jax.linear_transpose(f_jvp, x)
    w = _weights(expect)
    jv = f_jvp(v)  # [n] -> per dataset [t, i]
    return f_t(tuple(wi * d for wi, d in zip(w, jv)))[0] + p * v


def metric_sqrt_product(x, key, p, datasets, config, coords: Coords) -> jax.Array:
    """One ``ζ ~ N(0, M(x))``: ``Jᵀ (√w ⊙ ε_d) + √p ⊙ ε_x`` with ``ε`` standard normal."""
    expect, f_jvp = jax.linearize(lambda y: expectations(y, datasets, config, coords), x)
    f_t = jax.linear_transpose(f_jvp, x)
    keys = jax.random.split(key, len(expect) + 1)
    eps = tuple(jnp.sqrt(w) * jax.random.normal(k, e.shape, e.dtype)
                for k, w, e in zip(keys[1:], _weights(expect), expect))
    return f_t(eps)[0] + jnp.sqrt(p) * jax.random.normal(keys[0], x.shape, x.dtype)


@functools.partial(jax.jit, static_argnames=("batch",))
def _prior_diag_block(x, start, config, coords: Coords, batch: int):
    n = x.shape[0]
    idx = start + jnp.arange(batch)
    basis = jax.nn.one_hot(idx, n, dtype=x.dtype)
    grad = jax.grad(lambda y: coords_to_model(y, coords, config)[2])
    cols = jax.vmap(lambda v: jax.jvp(grad, (x,), (v,))[1])(basis)
    return -jnp.take_along_axis(cols, jnp.minimum(idx, n - 1)[:, None], axis=1)[:, 0]


def prior_curvature(x: np.ndarray, config, coords: Coords) -> np.ndarray:
    """Diagonal ``p ≥ 0`` of the prior's curvature in ``x`` (Hessian-vector products of the
    log-prior with its log-Jacobian; no data): 1 on field coordinates."""
    x = jnp.asarray(x)
    n = int(x.shape[0])
    out = np.zeros(n)
    first = coords.n_field if coords.kind == "field" else 0
    out[:first] = 1.0
    batch = int(max(1, min(n - first, 256)))
    for start in range(first, n, batch):
        stop = min(start + batch, n)
        block = _prior_diag_block(x, jnp.asarray(start), config, coords, batch)
        out[start:stop] = np.asarray(block)[: stop - start]
    return np.maximum(out, 0.0)


@jax.jit
def coords_outputs(xs: jax.Array, config, coords: Coords) -> dict:
    """Per draw ``x [n, D]``: ``image``, ``bkg_norm`` and, for the field, its
    hyper-parameters ``field.amplitude``, ``field.slope``, ``field.offset [Ei]``."""

    def one(x):
        image, bkg, _ = coords_to_model(x, coords, config)
        out = {"image": image, "bkg_norm": bkg}
        if coords.kind == "field":
            offset, amplitude, slope = field_hyper(x[:coords.n_field], config.field)
            out.update({"field.amplitude": amplitude, "field.slope": slope,
                        "field.offset": offset})
        return out

    return jax.vmap(one)(xs)


def field_start(problem: Problem, level: np.ndarray) -> np.ndarray:
    """A start ``x`` for a field problem: a flat image at ``level [Ei]`` (flux), the prior's
    median amplitude and slope, backgrounds at their fixed values (inside their support)."""
    cfg = problem.config
    f = cfg.field
    x = np.zeros(f.size + (problem.n_bkg if cfg.bkg_free else 0))
    n = f.n_alm * f.n_energy
    level = np.broadcast_to(np.asarray(level, dtype=np.float64), (f.n_energy,))
    x[n:n + f.n_energy] = ((np.log(np.maximum(level, 1e-300)) - np.asarray(f.offset_loc))
                           / float(f.offset_scale))
    if cfg.bkg_free:
        b = bkg_inside_support(cfg, np.asarray(cfg.bkg_fixed))
        x[f.size:] = np.asarray(bkg_transform(cfg).inv(b))
    return x
