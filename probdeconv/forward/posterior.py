"""THE posterior: the sky-model configuration and the log-prior / log-posterior terms.

Both engines use these functions and nothing else for their priors:

- MAP-EM (:mod:`probdeconv.algorithms.map_em`, cosipy's ``MAP_RL``) folds the gamma priors
  of :func:`image_gamma` / :func:`bkg_gamma` into its update in closed form, applies the
  rest (:func:`filter_log_prior`: TSV, entropy, log-normal) through its prior filter
  ``exp(∇ / (S + 1/θ))`` and registers :func:`log_prior_terms` per iteration;
- the NumPyro model (:func:`probdeconv.inference.model.sky_model`) turns the same
  :class:`SkyModelConfig` into sample and factor sites, and :func:`log_posterior` is its
  ``log_density`` up to the constants listed there (tested).

Configuration (:class:`SkyModelConfig`, built by :func:`make_config`): the image prior
(``flat``, ``gamma (k, θ)`` with ``θ = ∞`` allowed, ``lognormal (loc, scale)``), further
priors on the image by name (``{"TSV": TSVPrior, "entropy": EntropyPrior}``), the mask of
free pixels and the backgrounds: fixed normalisations, or free ones on a range with a
uniform or (truncated, unnormalised) gamma prior.  All fluxes are in ``cm-2 s-1 sr-1``.

Log-prior terms, named as MAP-RL registers them: ``gamma_model`` (MAP-RL's
``(k−1) Σ log(λ+eps) − Σ λ/θ`` over all pixels), ``lognormal_model`` (unnormalised),
``gamma_bkg`` (free backgrounds with the gamma prior), ``smooth_bkg`` (the random walk
between time nodes of free backgrounds), then the names of ``config.priors``.

Examples
--------
>>> import numpy as np, jax.numpy as jnp
>>> from probdeconv.forward import make_dataset
>>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)))
>>> cfg = make_config(ds.model_shape, image_prior="gamma", gamma=(2.0, 10.0))
>>> terms = log_posterior_terms((ds,), jnp.ones((12, 1)), None, cfg)
>>> sorted(terms.log_prior), bool(terms.total == log_posterior((ds,), jnp.ones((12, 1)),
...                                                               None, cfg))
(['gamma_model'], True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DataError, ParameterError
from ..priors import GammaPrior, LogNormalPrior
from .dataset import Dataset
from .field import FieldPrior
from .model import observed_log_likelihood
from .nodes import NodeWalkPrior

__all__ = [
    "IMAGE_PRIORS",
    "BKG_PRIORS",
    "RESERVED_NAMES",
    "SkyModelConfig",
    "PosteriorTerms",
    "make_config",
    "bkg_inside_support",
    "check_backgrounds",
    "image_gamma",
    "bkg_gamma",
    "filter_log_prior",
    "log_prior_terms",
    "log_posterior_terms",
    "log_posterior",
]

IMAGE_PRIORS = ("flat", "gamma", "lognormal", "field")
BKG_PRIORS = ("uniform", "gamma")
RESERVED_NAMES = ("image", "bkg_norm", "gamma_model", "lognormal_model", "gamma_bkg",
                  "smooth_bkg")
"""Names of model sites and log-prior terms; a further prior may not take one."""

FLAT_GAMMA = GammaPrior(1.0, math.inf)


def _static(default: Any = None) -> Any:
    return dataclasses.field(default=default, metadata=dict(static=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SkyModelConfig:
    """Priors, mask and background set-up of the posterior (a pytree).

    Build it with :func:`make_config`.  Arrays and numbers are leaves (a change does not
    recompile); the prior *kinds* and the names of further priors are static.  All fluxes
    are in ``cm-2 s-1 sr-1``.
    """

    mask: jax.Array  # [lb, Ei] bool, True = free pixel
    image_gamma: GammaPrior  # used when image_prior == "gamma"
    lognormal: LogNormalPrior  # used when image_prior == "lognormal"
    priors: dict  # {name: prior with log_prob(image)} (TSV, entropy, ...)
    bkg_fixed: jax.Array  # [K] used when the backgrounds are not free; start of a fit
    bkg_range: jax.Array  # [K, 2] support of the free normalisations
    bkg_gamma: GammaPrior  # used when bkg_prior == "gamma"
    bkg_walk: NodeWalkPrior | None = None  # smoothness between time nodes (forward.nodes)
    field: FieldPrior | None = None  # used when image_prior == "field" (.field)
    image_prior: str = _static("flat")
    gamma_proper: bool = _static(False)  # gamma with finite θ: a proper density
    bkg_free: bool = _static(False)
    bkg_prior: str = _static("uniform")
    bkg_bounded: bool = _static(True)  # every upper bound finite

    @property
    def model_shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)

    @property
    def n_bkg(self) -> int:
        return int(self.bkg_fixed.shape[0])


def _gamma(value: Any, what: str) -> GammaPrior:
    k, theta = (value.k, value.theta) if isinstance(value, GammaPrior) else value
    k, theta = float(k), float(theta)
    if not (math.isfinite(k) and k > 0):
        raise ParameterError(f"{what}: k = {k!r}; expected a finite number > 0 (1 = flat).")
    if not theta > 0:
        raise ParameterError(f"{what}: theta = {theta!r}; expected a number > 0 or inf "
                             "(inf = no exponential cut-off).")
    return GammaPrior(k, theta)


def _check_priors(priors: Mapping[str, Any]) -> dict:
    priors = dict(priors or {})
    for name, p in priors.items():
        if name in RESERVED_NAMES or str(name).startswith("obs_"):
            raise ParameterError(f"priors: the name {name!r} is reserved for a site of the "
                                 "model; rename the prior (e.g. 'TSV', 'entropy').")
        if not hasattr(p, "log_prob"):
            raise ParameterError(f"priors:{name}: {type(p).__name__} has no log_prob(image); "
                                 "use a probdeconv.priors object.")
    return priors


def _bkg_arrays(n_bkg: int, bkg_norm: Any, bkg_range: Any, bkg_free: bool):
    b = np.ones(n_bkg) if bkg_norm is None else np.asarray(bkg_norm, dtype=np.float64)
    if b.shape != (n_bkg,):
        raise DataError(f"bkg_norm has shape {b.shape}; expected ({n_bkg},), one per "
                        "background.")
    rng = np.tile([0.0, 100.0], (n_bkg, 1)) if bkg_range is None else np.asarray(
        bkg_range, dtype=np.float64).reshape(-1, 2)
    if rng.shape != (n_bkg, 2):
        raise DataError(f"bkg_range has shape {rng.shape}; expected ({n_bkg}, 2).")
    finite_hi = np.isfinite(rng[:, 1])
    if bkg_free:
        if not (np.all(np.isfinite(rng[:, 0])) and np.all(rng[:, 0] < rng[:, 1])):
            raise ParameterError(f"bkg_range: {rng.tolist()}; every free background needs a "
                                 "finite lower bound below its upper bound.")
        if finite_hi.any() and not finite_hi.all():
            raise ParameterError(f"bkg_range: {rng.tolist()}; upper bounds must be all finite "
                                 "or all inf; give every background a finite upper bound.")
    return b, rng, bool(finite_hi.all())


def make_config(
    model_shape: tuple[int, int],
    *,
    n_bkg: int = 0,
    mask: np.ndarray | jax.Array | None = None,
    image_prior: str = "flat",
    gamma: GammaPrior | tuple[float, float] = (1.0, math.inf),
    lognormal: tuple[Any, Any] = (0.0, 1.0),
    priors: Mapping[str, Any] | None = None,
    bkg_free: bool = False,
    bkg_norm: Sequence[float] | jax.Array | None = None,
    bkg_range: np.ndarray | Sequence | None = None,
    bkg_prior: str = "uniform",
    bkg_gamma: GammaPrior | tuple[float, float] = (1.0, math.inf),
    bkg_walk: NodeWalkPrior | None = None,
    field: FieldPrior | None = None,
    dtype: str | np.dtype = "float64",
) -> SkyModelConfig:
    """Check the choices and build a :class:`SkyModelConfig`.

    Parameters
    ----------
    model_shape
        ``(lb, Ei)`` of the image.
    n_bkg
        Number of global background normalisations ``K``.
    mask
        ``[lb, Ei]`` bool, True = free pixel (default: all free).
    image_prior
        ``"flat"``, ``"gamma"`` (uses ``gamma = (k, θ)``, ``θ`` may be ``inf``) or
        ``"lognormal"`` (uses ``lognormal = (loc, scale)``, scalars or ``[lb, Ei]``) or
        ``"field"`` (uses ``field``, a :class:`~.field.FieldPrior` from
        :func:`~.field.build_field`: a log-normal field with learnt power spectrum; the
        samplers and gradient MAP of :mod:`probdeconv.inference` only, not MAP-EM).
    priors
        Further priors ``{name: prior}`` with ``log_prob(image)``, e.g.
        ``{"TSV": TSVPrior.build(nside, c)}``; each becomes a ``numpyro.factor`` site.
    bkg_free
        Whether the background normalisations are parameters (ignored when ``n_bkg == 0``).
    bkg_norm
        ``[K]`` fixed normalisations (default ones); also the start of a fit.
    bkg_range
        ``[K, 2]`` lower and upper bounds of free normalisations (default ``[0, 100]``);
        upper bounds are either all finite or all ``inf``.
    bkg_prior
        ``"uniform"`` (on the range) or ``"gamma"`` (``bkg_gamma = (k_b, θ_b)``, truncated to
        the range, unnormalised: MAP-RL's background prior).
    bkg_walk
        Smoothness prior between the time nodes of free backgrounds (a Gaussian random
        walk on ``log b``, :func:`probdeconv.forward.nodes.walk_prior`); log-prior term
        ``smooth_bkg``.

    Raises
    ------
    ParameterError
        Unknown prior kind, non-positive ``k``, ``θ`` or ``scale``, bad ranges, reserved names.
    DataError
        Arrays of the wrong shape.

    Examples
    --------
    >>> cfg = make_config((12, 1), image_prior="gamma", gamma=(2.0, 1e-3))
    >>> cfg.image_prior, cfg.gamma_proper, cfg.bkg_free
    ('gamma', True, False)
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in model_shape)
    if image_prior not in IMAGE_PRIORS:
        raise ParameterError(f"image_prior: got {image_prior!r}; valid choices: "
                             f"{', '.join(IMAGE_PRIORS)}.")
    if bkg_prior not in BKG_PRIORS:
        raise ParameterError(f"bkg_prior: got {bkg_prior!r}; valid choices: "
                             f"{', '.join(BKG_PRIORS)}.")
    mask = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise DataError(f"mask has shape {mask.shape}; expected {shape} (the model axes "
                        "[lb, Ei]).")
    g = _gamma(gamma, "gamma prior on the image")
    loc, scale = (np.broadcast_to(np.asarray(v, dtype=dtype), shape) for v in lognormal)
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0) and np.all(np.isfinite(loc))):
        raise ParameterError("lognormal: loc must be finite and scale finite and > 0 for every "
                             "pixel.")
    if image_prior == "field":
        _check_field(field, shape, priors)
    n_bkg = int(n_bkg)
    bkg_free = bool(bkg_free) and n_bkg > 0
    b, rng, bounded = _bkg_arrays(n_bkg, bkg_norm, bkg_range, bkg_free)
    return SkyModelConfig(
        mask=jnp.asarray(mask),
        image_gamma=g,
        lognormal=LogNormalPrior(jnp.asarray(loc), jnp.asarray(scale)),
        priors=_check_priors(priors),
        bkg_fixed=jnp.asarray(b, dtype=dtype),
        bkg_range=jnp.asarray(rng, dtype=dtype),
        bkg_gamma=_gamma(bkg_gamma, "gamma prior on the background"),
        bkg_walk=_walk(bkg_walk, n_bkg, dtype),
        field=field if image_prior == "field" else None,
        image_prior=image_prior,
        gamma_proper=image_prior == "gamma" and math.isfinite(g.theta),
        bkg_free=bkg_free,
        bkg_prior=bkg_prior,
        bkg_bounded=bounded,
    )


def _check_field(field: Any, shape: tuple[int, int], priors: Any) -> None:
    if not isinstance(field, FieldPrior):
        raise ParameterError("image_prior 'field' needs field=build_field(nside, n_energy, ...) "
                             f"(a FieldPrior); got {type(field).__name__}.")
    if (field.n_pix, field.n_energy) != shape:
        raise DataError(f"field prior: built for {field.n_pix} pixels x {field.n_energy} "
                        f"energy bins; the image has {shape}.")
    if priors:
        raise ParameterError(f"image_prior 'field' with further priors {sorted(priors)}: the "
                             "field is the smoothness prior; remove TSV / entropy.")


def _walk(walk: NodeWalkPrior | None, n_bkg: int, dtype) -> NodeWalkPrior | None:
    if walk is None:
        return None
    pairs = np.asarray(walk.pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or (pairs.size and (
            pairs.min() < 0 or pairs.max() >= n_bkg)):
        raise DataError(f"bkg_walk: pairs of shape {pairs.shape} with indices up to "
                        f"{pairs.max() if pairs.size else None}; expected [P, 2] indices of "
                        f"the {n_bkg} background normalisations (forward.nodes.walk_prior).")
    return NodeWalkPrior(jnp.asarray(pairs, jnp.int32), jnp.asarray(walk.sigma, dtype))


def bkg_inside_support(config: SkyModelConfig, bkg: Any) -> jax.Array:
    """Background normalisations moved strictly inside their range (a start point whose
    unconstraining transform is finite)."""
    lo, hi = config.bkg_range[:, 0], config.bkg_range[:, 1]
    b = jnp.asarray(bkg, dtype=jnp.result_type(lo, float))
    if config.bkg_bounded:
        width = hi - lo
        return lo + width * jnp.clip((b - lo) / width, 1e-6, 1.0 - 1e-6)
    return jnp.maximum(b, lo + 1e-6 * jnp.maximum(jnp.abs(lo), 1.0))


def check_backgrounds(datasets: Sequence[Dataset], config: SkyModelConfig) -> None:
    """Static check: every dataset's background index exists in the config."""
    for i, ds in enumerate(datasets):
        if ds.bkg_index and max(ds.bkg_index) >= config.n_bkg:
            raise DataError(f"dataset #{i} uses background index {max(ds.bkg_index)} but the "
                            f"config has {config.n_bkg} background normalisation(s); build it "
                            f"with make_config(..., n_bkg={max(ds.bkg_index) + 1}).")


def image_gamma(config: SkyModelConfig) -> GammaPrior:
    """The gamma prior on the image that MAP-EM folds into its update (flat unless gamma)."""
    return config.image_gamma if config.image_prior == "gamma" else FLAT_GAMMA


def bkg_gamma(config: SkyModelConfig) -> GammaPrior:
    """The gamma prior on the backgrounds that MAP-EM folds into its update (flat unless
    ``bkg_prior == "gamma"``; the uniform prior is the clip to the range)."""
    return config.bkg_gamma if config.bkg_prior == "gamma" else FLAT_GAMMA


def filter_log_prior(image: jax.Array, config: SkyModelConfig) -> jax.Array:
    """The log-prior terms of the image other than the gamma prior (TSV, entropy,
    log-normal): those MAP-EM applies through its prior filter, by their gradient."""
    total = jnp.zeros((), image.dtype)
    if config.image_prior == "lognormal":
        total = total + config.lognormal.log_prob(image, config.mask)
    for prior in config.priors.values():
        total = total + prior.log_prob(image)
    return total


class PosteriorTerms(NamedTuple):
    """The parts of the log-posterior: one log-likelihood per dataset and each log-prior."""

    log_likelihood: jax.Array  # [n_datasets]
    log_prior: dict  # {"gamma_model" | "lognormal_model", "gamma_bkg", prior names: scalar}

    @property
    def total(self) -> jax.Array:
        """``Σ log-likelihood + Σ log-prior``."""
        return jnp.sum(self.log_likelihood) + sum(self.log_prior.values(),
                                                  jnp.zeros((), self.log_likelihood.dtype))


def log_prior_terms(image: jax.Array, bkg_norm: jax.Array, config: SkyModelConfig) -> dict:
    """Each log-prior term at ``(image, bkg_norm)``, by name (see the module docstring).

    ``image`` is taken as given (no mask applied): :func:`log_posterior_terms` masks it
    first; MAP-EM passes its iterate, whose masked pixels hold ``minimum_flux``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> cfg = make_config((12, 1), n_bkg=1, bkg_free=True, bkg_prior="gamma",
    ...                   bkg_gamma=(2.0, 1.0))
    >>> {k: round(float(v), 6) for k, v in log_prior_terms(jnp.ones((12, 1)),
    ...                                                     jnp.ones(1), cfg).items()}
    {'gamma_bkg': -1.0}
    """
    out = {}
    if config.image_prior == "gamma":
        out["gamma_model"] = config.image_gamma.log_prob(image)
    elif config.image_prior == "lognormal":
        out["lognormal_model"] = config.lognormal.log_prob(image, config.mask)
    if config.bkg_free and config.bkg_walk is not None:
        out["smooth_bkg"] = config.bkg_walk.log_prob(bkg_norm)
    if config.bkg_free and config.bkg_prior == "gamma":
        out["gamma_bkg"] = config.bkg_gamma.log_prob(bkg_norm)
    for name, prior in config.priors.items():
        out[name] = prior.log_prob(image)
    return out


def log_posterior_terms(datasets: Sequence[Dataset], image: jax.Array,
                        bkg_norm: jax.Array | None, config: SkyModelConfig) -> PosteriorTerms:
    """Log-likelihood per dataset and each log-prior term at ``(image, bkg_norm)``.

    ``image`` is masked first (masked pixels count as 0); ``bkg_norm = None`` means
    ``config.bkg_fixed``.

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> from probdeconv.forward import make_dataset
    >>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)))
    >>> cfg = make_config(ds.model_shape, image_prior="gamma", gamma=(2.0, 10.0))
    >>> sorted(log_posterior_terms((ds,), jnp.ones((12, 1)), None, cfg).log_prior)
    ['gamma_model']
    """
    check_backgrounds(datasets, config)
    image = jnp.where(config.mask, image, 0.0)
    b = config.bkg_fixed if bkg_norm is None else jnp.asarray(bkg_norm)
    # over the observed bins and the totals (forward.model.observed_log_likelihood)
    loglik = jnp.stack([observed_log_likelihood(ds, image, b) for ds in datasets])
    return PosteriorTerms(loglik, log_prior_terms(image, b, config))


def log_posterior(datasets: Sequence[Dataset], image: jax.Array,
                  bkg_norm: jax.Array | None, config: SkyModelConfig) -> jax.Array:
    """MAP-RL's log-posterior (spec §2), ``Σ log L + log P_γ(λ) [+ log P_γ(b)] + Σ_p log P_p``.

    Without ``log d!`` and without the normalising constants of proper priors (see
    :func:`probdeconv.inference.model.sky_model` for the exact difference to NumPyro's
    ``log_density``).

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> from probdeconv.forward import make_dataset, total_log_likelihood
    >>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)))
    >>> cfg = make_config(ds.model_shape)  # flat prior: the log-likelihood itself
    >>> img = jnp.full((12, 1), 0.1)
    >>> lp = log_posterior((ds,), img, None, cfg)
    >>> bool(jnp.isclose(lp, total_log_likelihood((ds,), img, cfg.bkg_fixed), rtol=1e-13))
    True
    """
    return log_posterior_terms(datasets, image, bkg_norm, config).total
