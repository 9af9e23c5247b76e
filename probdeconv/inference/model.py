"""The NumPyro model of the sky: a thin wrapper over :mod:`probdeconv.forward.posterior`.

One model, :func:`sky_model`, describes every dataset of a fit jointly; its priors are the
:class:`~probdeconv.forward.posterior.SkyModelConfig` and its log-density is
:func:`~probdeconv.forward.posterior.log_posterior` (the one MAP-RL uses) plus the constants
listed in :func:`sky_model`:

- ``"image"`` (sample site, ``[lb, Ei]``, positive, flux ``cm-2 s-1 sr-1``): prior chosen by
  ``config.image_prior`` — ``flat`` (improper uniform on the positive reals), ``gamma``
  (shape ``k``, scale ``θ``; ``θ = ∞`` gives the improper gamma of MAP-RL, written as an
  improper uniform site plus a ``numpyro.factor``), ``lognormal`` (``loc``, ``scale`` per
  pixel); with ``field`` (:mod:`probdeconv.forward.field`) ``"image"`` is deterministic,
  ``field_image(field_x)``, and the sample site is ``"field_x"``, the standardised field
  coordinates with an ``N(0, I)`` prior (amplitude, slope and offsets included);
- further priors as factors, one site per prior named as in ``config.priors``
  (``numpyro.factor("TSV", prior.log_prob(image))``, :mod:`probdeconv.priors`);
- ``"bkg_norm"`` (``[K]``, only when the background normalisations are free): uniform on
  its range, or the (truncated, unnormalised) gamma prior of MAP-RL (``"gamma_bkg"``
  factor); otherwise the fixed vector ``config.bkg_fixed`` is used and there is no site;
- ``"obs_<i>"``: the Poisson log-likelihood of dataset ``i`` as a factor,
  ``Σ d log E − Σ E − Σ log d!`` over its observed bins and totals
  (:func:`probdeconv.forward.observed_log_likelihood`, never re-derived here): the value of
  ``Poisson(E).to_event(2)`` at the counts, without forming ``E`` on the empty bins.

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
>>> from probdeconv.forward.posterior import log_posterior, make_config
>>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)))
>>> cfg = make_config(ds.model_shape)
>>> img = jnp.full(ds.model_shape, 0.01)
>>> lp, _ = log_density(sky_model, ((ds,), cfg), {}, {"image": img})
>>> bool(jnp.isclose(lp, log_posterior((ds,), img, None, cfg)))  # flat prior, d! = 1
True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from numpyro.distributions import constraints

from .. import forward as fm
from ..forward.field import field_image
from ..forward.posterior import SkyModelConfig, check_backgrounds, log_prior_terms

__all__ = ["sky_model", "bkg_support"]

logger = logging.getLogger(__name__)

_IN_SITES = {  # (image_prior, gamma_proper): log-prior terms held by the "image" site itself
    ("flat", False): (), ("gamma", False): (), ("gamma", True): ("gamma_model",),
    ("lognormal", False): ("lognormal_model",), ("field", False): ()}


def bkg_support(config: SkyModelConfig) -> constraints.Constraint:
    """Support of ``"bkg_norm"``: ``interval(lo, hi)``, or ``greater_than(lo)`` when unbounded."""
    lo, hi = config.bkg_range[:, 0], config.bkg_range[:, 1]
    return constraints.interval(lo, hi) if config.bkg_bounded else constraints.greater_than(lo)


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
        :class:`~probdeconv.forward.posterior.SkyModelConfig` from
        :func:`~probdeconv.forward.posterior.make_config`.

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
    check_backgrounds(datasets, config)
    if config.image_prior == "field":  # standardised field coordinates, N(0, I) a priori
        zeros = jnp.zeros(config.field.size, dtype=config.bkg_range.dtype)
        x = numpyro.sample("field_x", dist.Normal(zeros, 1.0).to_event(1))
        raw = numpyro.deterministic("image", field_image(x, config.field))
    else:
        raw = numpyro.sample("image", _image_distribution(config))
    image = jnp.where(config.mask, raw, 0.0)
    if config.bkg_free:
        lo, hi = config.bkg_range[:, 0], config.bkg_range[:, 1]
        if config.bkg_prior == "uniform" and config.bkg_bounded:
            bdist = dist.Uniform(lo, hi).to_event(1)
        else:
            bdist = dist.ImproperUniform(bkg_support(config), (), (config.n_bkg,))
        bkg_norm = numpyro.sample("bkg_norm", bdist)
    else:
        bkg_norm = config.bkg_fixed
    # The one set of log-prior terms; those a proper sample site already holds are skipped.
    for name, value in log_prior_terms(image, bkg_norm, config).items():
        if name not in _IN_SITES[config.image_prior, config.gamma_proper]:
            numpyro.factor(name, value)
    for i, ds in enumerate(datasets):
        d = fm.observed_counts(ds)  # [n_obs]
        log_d_factorial = jnp.sum(gammaln(d + 1.0))
        numpyro.factor(f"obs_{i}", fm.observed_log_likelihood(ds, image, bkg_norm)
                       - log_d_factorial)
