"""probdeconv: Bayesian and MAP all-sky image reconstruction for Compton telescopes."""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
