"""Accelerators for the EM family: step-length search along an EM direction, and SQUAREM.

The expectation is linear in the image, so along a direction ``d`` with ``A d`` known,
``E(α) = A λ + α A d + ε + Σ b B`` costs no further response pass: ``MaxStep`` and
``LineSearch`` need one forward projection (of ``d``) and one back projection per
iteration, like plain RL.

- ``classic`` (cosipy's ``acceleration``, as cosipy 0.4.x's default ``MaxStep`` does it):
  ``α`` = largest step keeping the image non-negative, within ``[1, alpha_max]``, kept
  only if the log-likelihood extrapolated along the unmasked step, with the background
  before clipping, is not below the plain step's (``em._classic_update``).
- ``MaxStep``: probdeconv's variant: that largest step along the masked direction,
  accepted only if the objective is not lower than at the plain EM step.
- ``LineSearch``: golden-section search of the objective on the feasible interval.
- ``SQUAREM`` (Varadhan & Roland 2008, scheme S3): two EM steps ``θ1 = M(θ0)``,
  ``θ2 = M(θ1)``; ``r = θ1 − θ0``, ``v = θ2 − 2θ1 + θ0``, ``α = −‖r‖/‖v‖`` (at most −1);
  ``θ' = θ0 − 2α r + α² v`` projected onto the constraints; ``θ'`` is kept only if its
  objective is not below that of ``θ2`` (monotone fallback).

:data:`REGISTRY` is the one list of these names: the parameter-file schema, the
cosipy-style classes, the compiled steps and the bootstrap read which accelerators exist,
which algorithm offers which, and how each acts on the step from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..errors import ParameterError

__all__ = ["Accelerator", "REGISTRY", "ACCELERATORS", "SEARCHED", "accelerator_names",
           "resolve_accelerator", "feasible_alpha", "search_alpha", "golden_section_max",
           "SquaremInfo", "squarem_step"]


class Accelerator(NamedTuple):
    """One accelerator of the EM family and where it applies.

    ``algorithms`` are the registry names (``deconvolution:algorithm``) that run it;
    ``stands_in`` maps an algorithm that does not offer it to the accelerator it runs
    instead when a parameter file names this one.
    """

    name: str
    algorithms: tuple[str, ...]
    searched: bool = False  # α chosen by the objective along the EM direction (E linear in α)
    wraps_step: bool = False  # runs the plain step several times (outside a single step)
    masked_start: bool = False  # moves along masked directions: start from a masked image
    stands_in: tuple[tuple[str, str], ...] = ()


REGISTRY: dict[str, Accelerator] = {a.name: a for a in (
    Accelerator("classic", ("RL",), stands_in=(("MAP_RL", "MaxStep"),)),
    Accelerator("MaxStep", ("RL", "MAP_RL"), searched=True, masked_start=True),
    Accelerator("LineSearch", ("RL", "MAP_RL"), searched=True, masked_start=True),
    Accelerator("SQUAREM", ("RL", "MAP_RL"), wraps_step=True, masked_start=True),
)}
"""Every accelerator by name (cosipy's spelling of ``acceleration:algorithm``)."""

ACCELERATORS: tuple[str, ...] = ("none", *REGISTRY)
"""Valid values of ``EMOptions.acceleration`` / ``MAPOptions.acceleration``."""

SEARCHED: tuple[str, ...] = tuple(n for n, a in REGISTRY.items() if a.searched)
"""Accelerators whose step length :func:`search_alpha` chooses."""


def accelerator_names(algorithm: str | None = None, *, stand_ins: bool = True,
                      in_one_step: bool = False) -> tuple[str, ...]:
    """Accelerators of ``algorithm`` (every name when ``None``), in registry order.

    ``stand_ins=True`` includes the names a parameter file may give although another
    accelerator runs in their place (``classic`` for MAP_RL); ``in_one_step=True`` keeps
    those that act inside one step (not ``wraps_step``), as a caller that scans the plain
    step needs.

    Examples
    --------
    >>> accelerator_names("MAP_RL")
    ('classic', 'MaxStep', 'LineSearch', 'SQUAREM')
    >>> accelerator_names("MAP_RL", stand_ins=False)
    ('MaxStep', 'LineSearch', 'SQUAREM')
    >>> accelerator_names("RL", in_one_step=True)
    ('classic', 'MaxStep', 'LineSearch')
    """
    out = []
    for name, acc in REGISTRY.items():
        runs = name if algorithm is None or algorithm in acc.algorithms else \
            dict(acc.stands_in).get(algorithm) if stand_ins else None
        if runs is not None and not (in_one_step and REGISTRY[runs].wraps_step):
            out.append(name)
    return tuple(out)


def resolve_accelerator(name: str, algorithm: str, *, key: str = "acceleration:algorithm"
                        ) -> str:
    """The accelerator ``algorithm`` runs when asked for ``name`` (``"none"`` stays).

    Raises
    ------
    ParameterError
        ``name`` is not an accelerator or ``algorithm`` does not offer it.

    Examples
    --------
    >>> resolve_accelerator("classic", "MAP_RL")
    'MaxStep'
    >>> resolve_accelerator("SQUAREM", "RL")
    'SQUAREM'
    """
    if name == "none":
        return name
    acc = REGISTRY.get(name)
    if acc is not None:
        if algorithm in acc.algorithms:
            return name
        if algorithm in dict(acc.stands_in):
            return dict(acc.stands_in)[algorithm]
    raise ParameterError(f"{key}: {name!r} is not available for {algorithm}; valid choices: "
                         f"{list(accelerator_names(algorithm))} (or turn acceleration off).")


GOLDEN_ITERATIONS = 16


def feasible_alpha(model: jax.Array, direction: jax.Array, floor: jax.Array) -> jax.Array:
    """Largest ``α`` with ``model + α direction ≥ floor`` wherever ``direction < 0``."""
    neg = direction < 0
    room = jnp.where(neg, (model - floor) / jnp.where(neg, -direction, 1.0), jnp.inf)
    return jnp.maximum(jnp.min(room), 0.0)


def golden_section_max(f: Callable[[jax.Array], jax.Array], lo: jax.Array, hi: jax.Array,
                       iterations: int = GOLDEN_ITERATIONS) -> jax.Array:
    """Maximiser of a unimodal ``f`` on ``[lo, hi]`` by golden-section search (jit-able)."""
    g = (jnp.sqrt(5.0) - 1.0) / 2.0

    def body(_, carry):
        a, b, c, d, fc, fd = carry
        left = fc >= fd  # maximum in [a, d]
        a2 = jnp.where(left, a, c)
        b2 = jnp.where(left, d, b)
        c_new = b2 - g * (b2 - a2)
        d_new = a2 + g * (b2 - a2)
        c2 = jnp.where(left, c_new, d)
        d2 = jnp.where(left, c, d_new)
        f_new = f(jnp.where(left, c_new, d_new))
        fc2 = jnp.where(left, f_new, fd)
        fd2 = jnp.where(left, fc, f_new)
        return a2, b2, c2, d2, fc2, fd2

    c = hi - g * (hi - lo)
    d = lo + g * (hi - lo)
    a, b, c, d, fc, fd = jax.lax.fori_loop(0, iterations, body, (lo, hi, c, d, f(c), f(d)))
    return jnp.where(fc >= fd, c, d)


def search_alpha(kind: str, objective: Callable[[jax.Array], jax.Array], lo: jax.Array,
                 hi: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Step length for ``MaxStep`` or ``LineSearch`` on the feasible interval ``[lo, hi]``.

    ``lo`` is the plain EM step (1, or less where a constraint binds before it).
    ``objective(α)`` may return a vector (e.g. one log-likelihood per dataset); its sum is
    maximised.  Returns ``(α, objective(α))`` so that the caller need not evaluate it again.
    """
    f_lo = objective(lo)
    if kind == "MaxStep":
        cand = hi
    elif kind == "LineSearch":
        cand = golden_section_max(lambda a: jnp.sum(objective(a)), lo, hi)
    else:
        raise ParameterError(f"search_alpha: {kind!r} is not a searched accelerator; "
                             f"valid choices: {list(SEARCHED)}.")
    f_cand = objective(cand)
    better = jnp.sum(f_cand) >= jnp.sum(f_lo)
    return jnp.where(better, cand, lo), jnp.where(better, f_cand, f_lo)


class SquaremInfo(NamedTuple):
    alpha: jax.Array  # SQUAREM step length (≤ −1 means extrapolated), 0 if fallback
    accepted: jax.Array  # bool: the extrapolated point was kept


def squarem_step(base_step: Callable, project: Callable, forward_sky: Callable,
                 objective: Callable, state, *args):
    """One SQUAREM iteration around ``base_step(state, *args) -> (state, info)``.

    ``project(model, bkg) -> (model, bkg)`` applies the constraints, ``forward_sky(model)``
    the sky expectation of an image, ``objective(model, bkg, sky)`` the statistic to
    maximise.  Costs five response passes (two EM steps and one forward projection).
    """
    s1, _ = base_step(state, *args)
    s2, info2 = base_step(s1, *args)
    r_m, r_b = s1.model - state.model, s1.bkg_norm - state.bkg_norm
    v_m = s2.model - 2.0 * s1.model + state.model
    v_b = s2.bkg_norm - 2.0 * s1.bkg_norm + state.bkg_norm
    rr = jnp.sum(r_m * r_m) + jnp.sum(r_b * r_b)
    vv = jnp.sum(v_m * v_m) + jnp.sum(v_b * v_b)
    alpha = jnp.where(vv > 0, -jnp.sqrt(rr / jnp.where(vv > 0, vv, 1.0)), -1.0)
    alpha = jnp.minimum(alpha, -1.0)
    model = state.model - 2.0 * alpha * r_m + alpha * alpha * v_m
    bkg = state.bkg_norm - 2.0 * alpha * r_b + alpha * alpha * v_b
    model, bkg = project(model, bkg)
    sky = forward_sky(model)
    better = objective(model, bkg, sky) >= objective(s2.model, s2.bkg_norm, s2.sky)
    new = s2._replace(
        model=jnp.where(better, model, s2.model),
        bkg_norm=jnp.where(better, bkg, s2.bkg_norm),
        sky=tuple(jnp.where(better, a, b) for a, b in zip(sky, s2.sky)),
    )
    return new, info2, SquaremInfo(jnp.where(better, alpha, 0.0), better)
