"""Run configuration: YAML parameter files as validated dictionaries.

- :mod:`.parameters`: :class:`Parameters` (colon paths, overrides, YAML in and out).
- :mod:`.schema`: one-time validation of run files (keys, types, defaults).
"""

from .parameters import (
    FLUX_UNIT,
    KNOWN_ALGORITHMS,
    KNOWN_MODEL_CLASSES,
    MissingParameterError,
    Parameters,
)
from .schema import validate_algorithm_parameters, validate_run_parameters

__all__ = [
    "FLUX_UNIT",
    "KNOWN_ALGORITHMS",
    "KNOWN_MODEL_CLASSES",
    "MissingParameterError",
    "Parameters",
    "validate_algorithm_parameters",
    "validate_run_parameters",
]
