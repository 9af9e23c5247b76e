"""Bayesian inference over the forward model: the NumPyro model, gradient MAP and samplers.

- :mod:`.model`: :func:`~.model.sky_model` (NumPyro model), :class:`~.model.SkyModelConfig`,
  :func:`~.model.make_config`, :func:`~.model.log_posterior` (the MAP-RL log-posterior).
- :mod:`.map`: gradient MAP (L-BFGS, Adam, AutoDelta SVI) as pure ``map_init`` /
  ``map_step`` / ``map_run``.
- :mod:`.problem` (:class:`~.problem.Problem`), :mod:`.sampling` (:func:`~.sampling.sample`:
  NUTS/HMC :mod:`.mcmc`, SVI :mod:`.svi`, Laplace :mod:`.laplace`, bootstrap
  :mod:`.bootstrap`), :mod:`.posterior` (:class:`~.posterior.Posterior`), :mod:`.arviz`
  (DataTree, diagnostics); the sampled parameterisation is in :mod:`.latent`.
"""

from ..results.posterior import Posterior, RegionFlux
from .map import MAPInfo, MAPOptions, MAPResult, MAPState, map_init, map_run, map_step, map_values
from .model import (
    LogNormalPrior,
    PosteriorTerms,
    SkyModelConfig,
    bkg_support,
    log_posterior,
    log_posterior_terms,
    make_config,
    sky_model,
)
from .problem import Problem
from .sampling import SAMPLING_METHODS, sample

__all__ = [
    "LogNormalPrior",
    "MAPInfo",
    "MAPOptions",
    "MAPResult",
    "MAPState",
    "Posterior",
    "PosteriorTerms",
    "Problem",
    "RegionFlux",
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
    "sample",
    "sky_model",
]
