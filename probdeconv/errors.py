"""Error types of probdeconv.

Every error raised on bad input is a :class:`ProbdeconvError` (a ``ValueError``
subclass, so existing ``except ValueError`` code keeps working).  Messages name
the culprit (file, axis, key or value), what was expected, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ProbdeconvError",
    "AxisMismatchError",
    "ParameterError",
    "DataError",
    "FileFormatError",
    "ModelTypeError",
    "OutputError",
]


class ProbdeconvError(ValueError):
    """Base class of all probdeconv input errors."""


class AxisMismatchError(ProbdeconvError):
    """Two histograms (event, background, response, CCM, model) disagree on an axis."""


class ParameterError(ProbdeconvError):
    """A parameter file or parameter value is invalid (unknown key, wrong type, ...)."""


class DataError(ProbdeconvError):
    """Array contents are invalid (NaN, negative counts, wrong shape, wrong unit)."""


class FileFormatError(ProbdeconvError):
    """A file is missing, truncated, or not in the expected layout."""


class ModelTypeError(ProbdeconvError, TypeError):
    """An object of the wrong class (e.g. a model a prior cannot use); also a ``TypeError``."""


class OutputError(ProbdeconvError, OSError):
    """An output file or directory cannot be written: it exists, lies under a file, is on a
    read-only file system, the disk is full, or another run holds it; also an ``OSError``."""
