"""The NumPyro model of the sky over the forward model, and its log-posterior.

One model, :func:`sky_model`, describes every dataset of a fit jointly:

- ``"image"`` (sample site, ``[lb, Ei]``, positive, flux ``cm-2 s-1 sr-1``): prior chosen by
  :class:`SkyModelConfig` — ``flat`` (improper uniform on the positive reals), ``gamma``
  (shape ``k``, scale ``θ``; ``θ = ∞`` gives the improper gamma of MAP-RL, written as an
  improper uniform site plus a ``numpyro.factor``), ``lognormal`` (``loc``, ``scale`` per
  pixel);
- further priors as factors, one site per prior named as in ``config.priors``
  (``numpyro.factor("TSV", prior.log_prob(image))``, :mod:`probdeconv.priors`);
- ``"bkg_norm"`` (``[K]``, only when the background normalisations are free): uniform on
  its range, or the (truncated, unnormalised) gamma prior of MAP-RL (``"gamma_bkg"``
  factor); otherwise the fixed vector ``config.bkg_fixed`` is used and there is no site;
- ``"obs_<i>"``: ``Poisson(E).to_event(2)`` for dataset ``i``, ``E`` from
  :func:`probdeconv.forward.expected_counts` (never re-derived here).

Masked pixels.  The ``"image"`` site always has the full ``[lb, Ei]`` shape; its log-density
is masked (``dist.mask``) so that masked entries contribute nothing, and the image that
enters the likelihood and every prior is ``where(mask, image, 0)``.  Masked entries are
therefore inert placeholders: their value is irrelevant and their gradient is exactly 0.
Keep them positive (e.g. 1) when differentiating, so that no ``0 · ∞`` appears; a sampler
sees them as flat directions (condition them, or use a mask-free problem).

Arrays (datasets, mask, neighbour tables) are *arguments* of the model, never closed over.

Examples
--------
>>> import numpy as np, jax.numpy as jnp
>>> from numpyro.infer.util import log_density
>>> from probdeconv.forward import make_dataset
>>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)))
>>> cfg = make_config(ds.model_shape)
>>> img = jnp.full(ds.model_shape, 0.01)
>>> lp, _ = log_density(sky_model, ((ds,), cfg), {}, {"image": img})
>>> bool(jnp.isclose(lp, log_posterior((ds,), img, None, cfg)))  # flat prior, d! = 1
True
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from .. import forward as fm
from ..errors import DataError, ParameterError
from ..priors import GammaPrior

__all__ = [
    "IMAGE_PRIORS",
    "BKG_PRIORS",
    "LogNormalPrior",
    "SkyModelConfig",
    "PosteriorTerms",
    "make_config",
    "sky_model",
    "bkg_support",
    "log_posterior_terms",
    "log_posterior",
]

logger = logging.getLogger(__name__)

IMAGE_PRIORS = ("flat", "gamma", "lognormal")
BKG_PRIORS = ("uniform", "gamma")
_RESERVED = ("image", "bkg_norm", "gamma_model", "lognormal_model", "gamma_bkg")


class LogNormalPrior(NamedTuple):
    """Independent log-normal prior per pixel, ``log λ ~ N(loc, scale²)``.

    ``log_prob`` is the density of ``λ`` *without* its normalising constant:
    ``Σ_j [−log λ_j − (log λ_j − loc_j)² / (2 scale_j²)]`` over the free pixels.
    """

    loc: jax.Array  # [lb, Ei]
    scale: jax.Array  # [lb, Ei]

    def log_prob(self, image: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        if mask is None:
            mask = jnp.ones(image.shape, dtype=bool)
        x = jnp.where(mask, image, 1.0)  # safe value where masked (no 0 · ∞ in gradients)
        z = (jnp.log(x) - self.loc) / self.scale
        return jnp.sum(jnp.where(mask, -jnp.log(x) - 0.5 * z * z, 0.0))


def _static(default: Any = None) -> Any:
    return dataclasses.field(default=default, metadata=dict(static=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SkyModelConfig:
    """Priors, mask and background set-up of :func:`sky_model` (a pytree).

    Build it with :func:`make_config`.  Arrays and numbers are leaves (a change does not
    recompile); the prior *kinds* are static.  All fluxes are in ``cm-2 s-1 sr-1``.
    """

    mask: jax.Array  # [lb, Ei] bool, True = free pixel
    image_gamma: GammaPrior  # used when image_prior == "gamma"
    lognormal: LogNormalPrior  # used when image_prior == "lognormal"
    priors: dict  # {site name: prior with log_prob(image)} (TSV, entropy, ...)
    bkg_fixed: jax.Array  # [K] used when the backgrounds are not free
    bkg_range: jax.Array  # [K, 2] support of "bkg_norm" when free
    bkg_gamma: GammaPrior  # used when bkg_prior == "gamma"
    image_prior: str = _static("flat")
    gamma_proper: bool = _static(False)  # gamma with finite θ: a proper dist.Gamma site
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
        ``"lognormal"`` (uses ``lognormal = (loc, scale)``, scalars or ``[lb, Ei]``).
    priors
        Further priors ``{name: prior}`` with ``log_prob(image)``, e.g.
        ``{"TSV": TSVPrior.build(nside, c)}``; each becomes a ``numpyro.factor`` site.
    bkg_free
        Whether ``"bkg_norm"`` is a parameter (ignored when ``n_bkg == 0``).
    bkg_norm
        ``[K]`` fixed normalisations (default ones); also the start of a fit.
    bkg_range
        ``[K, 2]`` lower and upper bounds of free normalisations (default ``[0, 100]``);
        upper bounds are either all finite or all ``inf``.
    bkg_prior
        ``"uniform"`` (on the range) or ``"gamma"`` (``bkg_gamma = (k_b, θ_b)``, truncated to
        the range, unnormalised: MAP-RL's background prior).

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
    if mask is None:
        mask = np.ones(shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise DataError(f"mask has shape {mask.shape}; expected {shape} (the model axes "
                        "[lb, Ei]).")
    g = _gamma(gamma, "gamma prior on the image")
    loc, scale = (np.broadcast_to(np.asarray(v, dtype=dtype), shape) for v in lognormal)
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0) and np.all(np.isfinite(loc))):
        raise ParameterError("lognormal: loc must be finite and scale finite and > 0 for every "
                             "pixel.")
    priors = dict(priors or {})
    for name, p in priors.items():
        if name in _RESERVED or str(name).startswith("obs_"):
            raise ParameterError(f"priors: the name {name!r} is reserved for a site of the "
                                 "model; rename the prior (e.g. 'TSV', 'entropy').")
        if not hasattr(p, "log_prob"):
            raise ParameterError(f"priors:{name}: {type(p).__name__} has no log_prob(image); "
                                 "use a probdeconv.priors object.")
    n_bkg = int(n_bkg)
    b = np.ones(n_bkg) if bkg_norm is None else np.asarray(bkg_norm, dtype=np.float64)
    if b.shape != (n_bkg,):
        raise DataError(f"bkg_norm has shape {b.shape}; expected ({n_bkg},), one per "
                        "background.")
    rng = np.tile([0.0, 100.0], (n_bkg, 1)) if bkg_range is None else np.asarray(
        bkg_range, dtype=np.float64).reshape(-1, 2)
    if rng.shape != (n_bkg, 2):
        raise DataError(f"bkg_range has shape {rng.shape}; expected ({n_bkg}, 2).")
    bkg_free = bool(bkg_free) and n_bkg > 0
    finite_hi = np.isfinite(rng[:, 1])
    if bkg_free:
        if not (np.all(np.isfinite(rng[:, 0])) and np.all(rng[:, 0] < rng[:, 1])):
            raise ParameterError(f"bkg_range: {rng.tolist()}; every free background needs a "
                                 "finite lower bound below its upper bound.")
        if finite_hi.any() and not finite_hi.all():
            raise ParameterError(f"bkg_range: {rng.tolist()}; upper bounds must be all finite "
                                 "or all inf; give every background a finite upper bound.")
    return SkyModelConfig(
        mask=jnp.asarray(mask),
        image_gamma=g,
        lognormal=LogNormalPrior(jnp.asarray(loc), jnp.asarray(scale)),
        priors=priors,
        bkg_fixed=jnp.asarray(b, dtype=dtype),
        bkg_range=jnp.asarray(rng, dtype=dtype),
        bkg_gamma=_gamma(bkg_gamma, "gamma prior on the background"),
        image_prior=image_prior,
        gamma_proper=image_prior == "gamma" and math.isfinite(g.theta),
        bkg_free=bkg_free,
        bkg_prior=bkg_prior,
        bkg_bounded=bool(finite_hi.all()),
    )


def bkg_support(config: SkyModelConfig) -> constraints.Constraint:
    """Support of ``"bkg_norm"``: ``interval(lo, hi)``, or ``greater_than(lo)`` when unbounded."""
    lo, hi = config.bkg_range[:, 0], config.bkg_range[:, 1]
    return constraints.interval(lo, hi) if config.bkg_bounded else constraints.greater_than(lo)


def bkg_inside_support(config: SkyModelConfig, bkg) -> jax.Array:
    """Background normalisations moved strictly inside :func:`bkg_support` (a start point
    whose unconstraining transform is finite)."""
    lo, hi = config.bkg_range[:, 0], config.bkg_range[:, 1]
    b = jnp.asarray(bkg, dtype=jnp.result_type(lo, float))
    if config.bkg_bounded:
        width = hi - lo
        return lo + width * jnp.clip((b - lo) / width, 1e-6, 1.0 - 1e-6)
    return jnp.maximum(b, lo + 1e-6 * jnp.maximum(jnp.abs(lo), 1.0))


def _check_backgrounds(datasets: Sequence[fm.Dataset], config: SkyModelConfig) -> None:
    """Static check: every dataset's background index exists in the config."""
    for i, ds in enumerate(datasets):
        if ds.bkg_index and max(ds.bkg_index) >= config.n_bkg:
            raise DataError(f"dataset #{i} uses background index {max(ds.bkg_index)} but the "
                            f"config has {config.n_bkg} background normalisation(s); build it "
                            f"with make_config(..., n_bkg={max(ds.bkg_index) + 1}).")


def _image_distribution(config: SkyModelConfig) -> dist.Distribution:
    shape = config.model_shape
    if config.image_prior == "lognormal":
        base = dist.LogNormal(config.lognormal.loc, config.lognormal.scale)
    elif config.gamma_proper:
        g = config.image_gamma
        base = dist.Gamma(g.k, 1.0 / g.theta).expand(shape)
    else:
        base = dist.ImproperUniform(constraints.positive, shape, ())
    return base.mask(config.mask).to_event(2)


def sky_model(datasets: Sequence[fm.Dataset], config: SkyModelConfig) -> None:
    """NumPyro model: image and background priors, Poisson counts of every dataset.

    Parameters
    ----------
    datasets
        Tuple of :class:`probdeconv.forward.Dataset` (fitted jointly).
    config
        :class:`SkyModelConfig` from :func:`make_config`.

    Notes
    -----
    ``numpyro.infer.util.log_density`` of this model at ``(image, bkg_norm)`` equals
    ``log_posterior(datasets, image, bkg_norm, config) + C`` with

    - ``C_obs = −Σ_datasets Σ_i log(d_i!)`` (Poisson normalisation; :mod:`forward` drops it);
    - gamma image prior with finite ``θ`` (a proper ``dist.Gamma`` site over the free pixels):
      ``N_free (−log Γ(k) − k log θ) − (k−1) N_masked log ε_m
      + (k−1) Σ_free [log λ − log(λ + ε_m)]`` where ``ε_m`` is float64 machine epsilon
      (MAP-RL's ``log(λ + eps)``, summed over *all* pixels; the last term is not constant
      but below ``(k−1) N ε_m / min λ``, i.e. rounding for ``λ ≫ 1e-16``);
    - lognormal image prior: ``−Σ_free [log scale + ½ log 2π]``;
    - free backgrounds with ``bkg_prior = "uniform"`` and finite bounds:
      ``−Σ_k log(hi_k − lo_k)``.

    Everything else enters both identically: the flat prior, the gamma prior with
    ``θ = ∞`` (improper site + factor), TSV / entropy factors, the truncated background gamma
    prior and an unbounded uniform background prior add no constant.
    """
    _check_backgrounds(datasets, config)
    mask = config.mask
    raw = numpyro.sample("image", _image_distribution(config))
    image = jnp.where(mask, raw, 0.0)
    if config.image_prior == "gamma" and not config.gamma_proper:
        numpyro.factor("gamma_model", config.image_gamma.log_prob(image))
    for name, prior in config.priors.items():
        numpyro.factor(name, prior.log_prob(image))
    if config.bkg_free:
        lo, hi = config.bkg_range[:, 0], config.bkg_range[:, 1]
        if config.bkg_prior == "uniform" and config.bkg_bounded:
            bdist = dist.Uniform(lo, hi).to_event(1)
        else:
            bdist = dist.ImproperUniform(bkg_support(config), (), (config.n_bkg,))
        bkg_norm = numpyro.sample("bkg_norm", bdist)
        if config.bkg_prior == "gamma":
            numpyro.factor("gamma_bkg", config.bkg_gamma.log_prob(bkg_norm))
    else:
        bkg_norm = config.bkg_fixed
    for i, ds in enumerate(datasets):
        expected = fm.expected_counts(ds, image, bkg_norm)  # [t, i]
        numpyro.sample(f"obs_{i}", dist.Poisson(expected).to_event(2), obs=ds.counts)


class PosteriorTerms(NamedTuple):
    """The parts of the log-posterior: one log-likelihood per dataset and each log-prior."""

    log_likelihood: jax.Array  # [n_datasets]
    log_prior: dict  # {"gamma_model" | "lognormal_model", "gamma_bkg", prior names: scalar}

    @property
    def total(self) -> jax.Array:
        """``Σ log-likelihood + Σ log-prior``."""
        return jnp.sum(self.log_likelihood) + sum(self.log_prior.values(),
                                                  jnp.zeros((), self.log_likelihood.dtype))


def log_posterior_terms(datasets: Sequence[fm.Dataset], image: jax.Array,
                        bkg_norm: jax.Array | None, config: SkyModelConfig) -> PosteriorTerms:
    """Log-likelihood per dataset and each log-prior term at ``(image, bkg_norm)``.

    ``image`` is masked first (masked pixels count as 0); ``bkg_norm = None`` means
    ``config.bkg_fixed``.  Log-prior keys: ``gamma_model`` (gamma image prior, MAP-RL's
    ``(k−1) Σ log(λ+eps) − Σ λ/θ`` over all pixels), ``lognormal_model`` (unnormalised),
    ``gamma_bkg`` (free backgrounds with the gamma prior), then ``config.priors``' names.

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> from probdeconv.forward import make_dataset
    >>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)))
    >>> cfg = make_config(ds.model_shape, image_prior="gamma", gamma=(2.0, 10.0))
    >>> sorted(log_posterior_terms((ds,), jnp.ones((12, 1)), None, cfg).log_prior)
    ['gamma_model']
    """
    _check_backgrounds(datasets, config)
    image = jnp.where(config.mask, image, 0.0)
    b = config.bkg_fixed if bkg_norm is None else jnp.asarray(bkg_norm)
    loglik = jnp.stack([fm.log_likelihood(ds, fm.expected_counts(ds, image, b))
                        for ds in datasets])
    log_prior = {}
    if config.image_prior == "gamma":
        log_prior["gamma_model"] = config.image_gamma.log_prob(image)
    elif config.image_prior == "lognormal":
        log_prior["lognormal_model"] = config.lognormal.log_prob(image, config.mask)
    if config.bkg_free and config.bkg_prior == "gamma":
        log_prior["gamma_bkg"] = config.bkg_gamma.log_prob(b)
    for name, prior in config.priors.items():
        log_prior[name] = prior.log_prob(image)
    return PosteriorTerms(loglik, log_prior)


def log_posterior(datasets: Sequence[fm.Dataset], image: jax.Array,
                  bkg_norm: jax.Array | None, config: SkyModelConfig) -> jax.Array:
    """MAP-RL's log-posterior (spec §2), ``Σ log L + log P_γ(λ) [+ log P_γ(b)] + Σ_p log P_p``.

    Without ``log d!`` and without the normalising constants of proper priors (see
    :func:`sky_model` for the exact difference to NumPyro's ``log_density``).

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> from probdeconv.forward import make_dataset, total_log_likelihood
    >>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)))
    >>> cfg = make_config(ds.model_shape)  # flat prior: the log-likelihood itself
    >>> img = jnp.full((12, 1), 0.1)
    >>> lp = log_posterior((ds,), img, None, cfg)
    >>> bool(lp == total_log_likelihood((ds,), img, cfg.bkg_fixed))
    True
    """
    return log_posterior_terms(datasets, image, bkg_norm, config).total
