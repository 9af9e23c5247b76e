"""How the schema reads parameter files written for cosipy: the lenient parts, in one place.

cosipy reads its parameters with ``parameter.get(...)`` and checks nothing; probdeconv
validates (:mod:`probdeconv.config.schema`) but accepts what cosipy accepts:

- :func:`number_in_text`: a number written as a YAML string (PyYAML reads ``1e-4``, which
  has no decimal point, as the text ``'1e-4'``) is the number, with a warning;
- :func:`unexpected_key`: a key not used at its place is dropped with a warning, unless
  no schema knows it and it looks like a misspelling of a valid key (then an error);
- :func:`acceleration_form`: the ``acceleration`` section of cosipy <= 0.3
  (``alpha_max``) and of cosipy 0.4 (``accel_factor_max``, ``algorithm: MaxStep``) as the
  one form the algorithms read;
- :func:`accel_bkg_norm_off`: cosipy 0.4's ``accel_bkg_norm`` may only be off.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Container, Iterable, Mapping
from typing import Any

import numpy as np

from probdeconv.config.parameters import join_path, show_value
from probdeconv.errors import ParameterError

__all__ = ["number_in_text", "unexpected_key", "acceleration_form", "accel_bkg_norm_off",
           "ALPHA_MAX_DEFAULT", "ACCELERATOR_ALIASES"]

logger = logging.getLogger(__name__)

ALPHA_MAX_DEFAULT = {"RLadvanced": 10.0}
"""Default largest acceleration per schema (cosipy 0.4's ``accel_factor_max``); else 1.0."""

ACCELERATOR_ALIASES = {"RLadvanced": {"MaxStep": "classic"}}
"""cosipy 0.4's accelerator names per schema: its default ``MaxStep`` is probdeconv's
``classic`` step (probdeconv's own ``MaxStep`` is a variant along the masked direction)."""


def number_in_text(text: str, path: str) -> Any:
    """The number a YAML string spells, with a warning naming ``path``; else ``text``.

    Examples
    --------
    >>> number_in_text("1e-4", "minimum_flux:value"), number_in_text("many", "x")
    (0.0001, 'many')
    """
    try:
        number = float(text.strip())
    except ValueError:
        return text
    logger.warning("%s: the number %r is written as text (YAML reads 1e-4 without a decimal "
                   "point as a string; write 1.0e-4); read as %r, as cosipy does", path, text,
                   number)
    return number


def unexpected_key(path: str, key: Any, value: Any, valid: Iterable[Any],
                   known: Container[str]) -> None:
    """A key not used at ``path``: dropped with a warning (as cosipy ignores it), or an error.

    Parameters
    ----------
    path : str
        Colon path of the section.
    key, value
        The key and its value.
    valid : iterable of str
        The keys used at ``path``.
    known : container of str
        Every key some schema knows: never taken for a misspelling.

    Raises
    ------
    ParameterError
        ``key`` is not ``known`` and looks like a misspelling of a valid key.

    Examples
    --------
    >>> unexpected_key("p", "response_weighting", {}, ["iteration_max"], {"response_weighting"})
    >>> unexpected_key("p", "iteraton_max", 3, ["iteration_max"], set())
    Traceback (most recent call last):
    ...
    probdeconv.errors.ParameterError: p:iteraton_max: unknown key (value 3 (int)); did you mean 'iteration_max'? Expected one of the valid keys at p: iteration_max.
    """  # noqa: E501
    valid = [str(v) for v in valid]
    where = path or "the top level"
    close = [] if str(key) in known else difflib.get_close_matches(str(key), valid, 1)
    if close:
        raise ParameterError(
            f"{join_path(path, key)}: unknown key (value {show_value(value)}); did you mean "
            f"{close[0]!r}? Expected one of the valid keys at {where}: {', '.join(valid)}.")
    logger.warning("%s: not used here (valid keys at %s: %s); ignored, as cosipy ignores it",
                   join_path(path, key), where, ", ".join(valid))


def acceleration_form(schema: str, acc: Mapping, path: str) -> dict:
    """The one ``acceleration`` form the algorithms read: ``{activate, alpha_max, algorithm}``.

    ``alpha_max`` (cosipy <= 0.3) and ``accel_factor_max`` (cosipy 0.4) are one setting;
    accelerator names are mapped by :data:`ACCELERATOR_ALIASES`.  Applying it twice gives
    the same result.

    Raises
    ------
    ParameterError
        ``alpha_max`` and ``accel_factor_max`` both given, with different values.

    Examples
    --------
    >>> acceleration_form("RLadvanced", {"activate": True, "algorithm": "MaxStep"}, "a")
    {'activate': True, 'alpha_max': 10.0, 'algorithm': 'classic'}
    """
    a, b = acc.get("alpha_max"), acc.get("accel_factor_max")
    if a is not None and b is not None and a != b:
        raise ParameterError(f"{path}:accel_factor_max: got {b!r} but alpha_max {a!r}; they "
                             "are one setting (cosipy 0.4's and 0.3's name); give one of them.")
    alpha = b if b is not None else a if a is not None else ALPHA_MAX_DEFAULT.get(schema, 1.0)
    name = ACCELERATOR_ALIASES.get(schema, {}).get(acc["algorithm"], acc["algorithm"])
    return {"activate": acc["activate"], "alpha_max": alpha, "algorithm": name}


def accel_bkg_norm_off(value: Any, path: str) -> bool:
    """True when cosipy 0.4's ``accel_bkg_norm`` (bool or ``{activate, ...}``) is off.

    Returns False for a value that is not a switch (the schema then reports it).

    Raises
    ------
    ParameterError
        It is on: probdeconv's accelerated step keeps the EM step's background norms.
    """
    on = value.get("activate", False) if isinstance(value, Mapping) else value
    if on is None or isinstance(on, bool | np.bool_) and not on:
        return True
    if isinstance(on, bool | np.bool_):
        raise ParameterError(
            f"{path}: got {show_value(value)}; cosipy 0.4's extrapolation of the background "
            "normalisations is not supported (probdeconv's accelerated step keeps the EM "
            "step's normalisations, as cosipy's default). Set it to false or leave it out.")
    return False
