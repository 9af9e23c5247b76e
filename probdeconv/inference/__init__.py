"""Bayesian inference over the forward model: the NumPyro model and gradient MAP.

- :mod:`.model`: :func:`~.model.sky_model` (NumPyro model), :class:`~.model.SkyModelConfig`,
  :func:`~.model.make_config`, :func:`~.model.log_posterior` (the MAP-RL log-posterior).
- :mod:`.map`: gradient MAP (L-BFGS, Adam, AutoDelta SVI) as pure ``map_init`` /
  ``map_step`` / ``map_run``.
"""

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

__all__ = [
    "LogNormalPrior",
    "MAPInfo",
    "MAPOptions",
    "MAPResult",
    "MAPState",
    "PosteriorTerms",
    "SkyModelConfig",
    "bkg_support",
    "log_posterior",
    "log_posterior_terms",
    "make_config",
    "map_init",
    "map_run",
    "map_step",
    "map_values",
    "sky_model",
]
