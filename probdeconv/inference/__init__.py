"""Bayesian inference over the forward model: the NumPyro model, gradient MAP and samplers.

Everything here works on arrays (a :class:`~probdeconv.forward.problem.Problem`) and returns
plain data; maps, intervals and files are :mod:`probdeconv.results`' business.

- :mod:`.model`: :func:`~.model.sky_model`, the NumPyro model over the one posterior of
  :mod:`probdeconv.forward.posterior` (:class:`SkyModelConfig`, :func:`make_config`,
  :func:`log_posterior`, re-exported here).
- :mod:`.map`: gradient MAP (L-BFGS, Adam, AutoDelta SVI) as pure ``map_init`` /
  ``map_step`` / ``map_run``.
- :mod:`.sampling` (:func:`~.sampling.sample_draws`: NUTS/HMC :mod:`.mcmc`, SVI :mod:`.svi`,
  Laplace :mod:`.laplace` with :mod:`.fisher`, bootstrap :mod:`.bootstrap`), each returning
  a :class:`~.draws.Draws` record; the sampled parameterisation is :mod:`.latent`, the
  common start :mod:`.start`.

``probdeconv.sample(problem, method=...)`` (:mod:`probdeconv.results.sampling`) wraps
:func:`~.sampling.sample_draws` and returns a :class:`~probdeconv.results.posterior.Posterior`.
"""

from ..forward.posterior import (
    PosteriorTerms,
    SkyModelConfig,
    log_posterior,
    log_posterior_terms,
    make_config,
)
from ..forward.problem import Problem
from .draws import Draws, DrawStore
from .map import MAPInfo, MAPOptions, MAPResult, MAPState, map_init, map_run, map_step, map_values
from .model import bkg_support, sky_model
from .sampling import SAMPLING_METHODS, sample_draws

__all__ = [
    "DrawStore",
    "Draws",
    "MAPInfo",
    "MAPOptions",
    "MAPResult",
    "MAPState",
    "PosteriorTerms",
    "Problem",
    "SAMPLING_METHODS",
    "SkyModelConfig",
    "bkg_support",
    "log_posterior",
    "log_posterior_terms",
    "make_config",
    "map_init",
    "map_run",
    "map_step",
    "map_values",
    "sample_draws",
    "sky_model",
]
