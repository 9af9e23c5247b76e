"""Validation of cosipy run files: the schema of ``model_definition`` and ``deconvolution``.

:func:`validate_run_parameters` checks a whole run file once and fills in defaults;
:func:`validate_algorithm_parameters` does the same for one ``deconvolution:parameter``
tree. Errors name the colon key path, the value, what was expected and the valid choices.
Both are re-exported by :mod:`probdeconv.config.parameters`.

Files cosipy reads are accepted as cosipy reads them:

- a number written as a YAML string (PyYAML reads ``1e-4``, without a decimal point, as
  the text ``'1e-4'``) is read as the number, with a warning naming the key;
- a key that is not used at its place (``response_weighting`` in an ``RLsimple`` file, a
  key of another cosipy version) is dropped with a warning naming it, as cosipy ignores
  it; an unknown key that looks like a misspelling of a valid one (``iteraton_max``) is
  an error that names the valid key;
- cosipy 0.4's algorithm names ``RLbasic`` (checked as ``RLsimple`` without background
  fitting) and ``RLadvanced`` (``RL`` with cosipy 0.4's ``acceleration: {activate,
  algorithm: MaxStep|LineSearch, accel_factor_max}``; ``MaxStep`` is probdeconv's
  ``classic`` step) are known, and ``accel_factor_max`` is understood wherever
  ``alpha_max`` is.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from probdeconv.algorithms.accelerate import accelerator_names
from probdeconv.config.cosipy_compat import (
    accel_bkg_norm_off,
    acceleration_form,
    number_in_text,
    unexpected_key,
)
from probdeconv.config.parameters import (
    FLUX_UNIT,
    KNOWN_ALGORITHMS,
    KNOWN_MODEL_CLASSES,
    Parameters,
    as_dict,
    join_path,
    plain_value,
    show_value,
)
from probdeconv.config.priors import MAP_KEYS, check_prior_section
from probdeconv.errors import ParameterError

__all__ = ["validate_algorithm_parameters", "validate_run_parameters"]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- validation
_REQ, _OMIT = object(), object()  # "required" and "left out when absent" defaults
_INF_WORDS = ("inf", "+inf", ".inf", "infinity")
_WHAT = {
    "bool": "a boolean (YAML true/false)",
    "int": "an integer >= 1",
    "nside": "an integer >= 1 that is a power of 2",
    "real": "a finite number",
    "real>=0": "a finite number >= 0",
    "real>=1": "a finite number >= 1",
    "real>0": "a finite number > 0",
    "real|inf": "a number or 'inf'",
    "str": "a non-empty string",
    "unit": "an astropy unit string",
    "unit:deg": "an astropy angle unit string (e.g. deg)",
    "unit:keV": "an astropy energy unit string (e.g. keV)",
    "edges": "a list of at least two finite numbers, strictly increasing",
    "fluxes": "a list of finite numbers >= 0",
    "widths": "a finite number >= 0 or a list of them (one per energy bin, or per energy of "
    "FWHM:energy)",
    "ranges": "a mapping of background name to [lower, upper] (numbers >= 0, lower <= upper), "
    "e.g. {albedo: [0.9, 1.1]}, or nothing for [0.0, 100.0] each",
    "prior": "a mapping of prior name to its settings",
    "mapping": "a mapping",
    "accel_bkg_norm": "false (or {activate: false})",
    "nodes": "a number of time nodes (integer >= 1), bin edges [0, ..., n_time] (integers), "
    "{time: [t0, ..., tn]} or a mapping of background name to one of those",
    "smoothness": "a relative step > 0 between neighbouring time nodes (e.g. 0.05) or a "
    "mapping of background name to one",
    "point_sources": "a list of point sources ((l, b), (l, b, flux) or {name, l, b[, flux]}) "
    "or a catalogue file (.yml, .csv, .ecsv)",
}


def _bad(path: str, value: Any, what: str, choices: Iterable[Any] | None = None) -> ParameterError:
    tail = "" if choices is None else "; valid choices: " + ", ".join(map(str, choices))
    return ParameterError(f"{path}: got {show_value(value)}; expected {what}{tail}.")


def _what(spec: Any) -> str:
    if isinstance(spec, dict | tuple):
        return ("a mapping with keys " if isinstance(spec, dict) else "one of ") + ", ".join(spec)
    return _WHAT[spec]


def _real(value: Any, path: str, kind: str = "real") -> float:
    if kind == "real|inf" and isinstance(value, str) and value.strip().lower() in _INF_WORDS:
        value = math.inf
    elif isinstance(value, str):
        value = number_in_text(value, path)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    ok = ok and not math.isnan(value) and (kind == "real|inf" or not math.isinf(value))
    if not ok or value < {"real>=0": 0.0, "real>=1": 1.0}.get(kind, -math.inf) or (
            kind == "real>0" and value <= 0):
        raise _bad(path, value, _WHAT[kind])
    return float(value)


def _unit(value: Any, path: str, kind: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(path, value, _WHAT[kind])
    from astropy import units as u  # lazy: astropy is slow to import

    try:
        unit = u.Unit(value)
    except (ValueError, TypeError) as exc:
        reason = str(exc).split(". ")[0]  # astropy appends long advice after the first sentence
        raise _bad(path, value, f"{_WHAT[kind]} (astropy: {reason})") from exc
    if kind != "unit" and not unit.is_equivalent(u.Unit(kind[5:])):
        raise _bad(path, value, _WHAT[kind])
    return value


def _leaf(kind: Any, value: Any, path: str) -> Any:
    """Check one value against ``kind`` (a name in ``_WHAT`` or a tuple of choices)."""
    if isinstance(kind, tuple):
        if not isinstance(value, str) or value not in kind:
            raise _bad(path, value, "one of the listed names", kind)
        return value
    if kind == "bool" and isinstance(value, bool | np.bool_):
        return bool(value)
    if kind in ("int", "nside"):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
        if ok and value >= 1 and (kind == "int" or not int(value) & (int(value) - 1)):
            return int(value)
    elif kind.startswith("real"):
        return _real(value, path, kind)
    elif kind == "str" and isinstance(value, str) and value.strip():
        return value
    elif kind.startswith("unit"):
        return _unit(value, path, kind)
    elif kind in ("edges", "fluxes") and isinstance(value, list | tuple):
        out = [_real(v, f"{path}[{i}]", "real>=0" if kind == "fluxes" else "real")
               for i, v in enumerate(value)]
        if out if kind == "fluxes" else len(out) >= 2 and all(np.diff(out) > 0):
            return out
    elif kind == "ranges":
        return _ranges(value, path)
    elif kind == "fwhm":  # {value, unit[, energy]}; Quantities from Python: shell.smoothing
        return _check(_FWHM, value, path) if isinstance(value, Mapping) else value
    elif kind == "widths":
        if isinstance(value, list | tuple) and value:
            return [_real(v, f"{path}[{i}]", "real>=0") for i, v in enumerate(value)]
        if not isinstance(value, list | tuple):
            return _real(value, path, "real>=0")
    elif kind in ("nodes", "smoothness"):  # checked against the data: shell.bkg_nodes
        return plain_value(value)
    elif kind == "point_sources":  # shape only: probdeconv.shell.point_sources reads them
        value = plain_value(value)
        if isinstance(value, str) or (isinstance(value, list | tuple) and value):
            return list(value) if not isinstance(value, str) else value
        raise _bad(path, value, _WHAT[kind])
    elif kind == "prior":  # the one prior-section reader, cosipy's layout
        return check_prior_section(value, path, keys=MAP_KEYS)
    elif kind == "mapping":
        return as_dict(value, path)
    elif kind == "accel_bkg_norm":  # cosipy 0.4: bool (MaxStep) or {activate, ...}
        if accel_bkg_norm_off(value, path):
            return False
    elif kind == "ignored":
        logger.warning("%s: ignored by RLsimple (it always runs iteration_max iterations)", path)
        return plain_value(value)
    raise _bad(path, value, _WHAT[kind])


def _ranges(value: Any, path: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad(path, value, _WHAT["ranges"])
    out = {}
    for name, pair in value.items():
        sub = join_path(path, name)
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise _bad(sub, pair, "a list [lower, upper] of two numbers >= 0, lower <= upper")
        lo, hi = (_real(v, sub, "real|inf") for v in pair)
        if not 0.0 <= lo <= hi:
            raise _bad(sub, pair, "a list [lower, upper] of two numbers >= 0, lower <= upper")
        out[name] = [lo, hi]
    return out


def _check(spec: Any, value: Any, path: str) -> Any:
    """Validate ``value`` against ``spec``: a section (dict of (spec, default)) or a leaf."""
    if not isinstance(spec, dict):
        return _leaf(spec, value, path)
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise _bad(path, value, _what(spec))
    for key in value:
        if key not in spec:
            unexpected_key(path, key, value[key], spec, _KNOWN_KEYS)
    out = {}
    for name, (sub_spec, default) in spec.items():
        sub = join_path(path, name)
        if name in value:
            out[name] = _check(sub_spec, value[name], sub)
        elif default is _REQ:
            raise ParameterError(f"{sub}: missing required key; expected {_what(sub_spec)}.")
        elif default is not _OMIT:
            out[name] = _check(sub_spec, copy.deepcopy(default), sub)
    return out


_OFF = ("bool", False)
_COMMON = {  # key: (spec, default); a spec is a section dict, a _WHAT name or choices
    "iteration_max": ("int", 1),
    "minimum_flux": ({"value": ("real>=0", 0.0), "unit": ("unit", FLUX_UNIT)}, {}),
    "background_normalization_optimization": ({"activate": _OFF, "range": ("ranges", None),
                                               "nodes": ("nodes", _OMIT),
                                               "smoothness": ("smoothness", _OMIT)}, {}),
    "save_results": ({"activate": _OFF, "directory": ("str", "./results"),
                      "only_final_result": _OFF}, {}),
}


def _em_filters(algorithm: str, names: tuple[str, ...] = (), default: str = "classic") -> dict:
    """Response weighting and acceleration (the accelerators from the one registry).

    ``alpha_max`` (cosipy <= 0.3) and ``accel_factor_max`` (cosipy 0.4) are one setting;
    ``names`` are accepted besides the registry's (:func:`acceleration_form` maps them).
    """
    return {
        "response_weighting": ({"activate": _OFF, "index": ("real", 0.5)}, {}),
        "acceleration": ({"activate": _OFF, "alpha_max": ("real>=1", _OMIT),
                          "accel_factor_max": ("real>=1", _OMIT),
                          "algorithm": (names + accelerator_names(algorithm), default),
                          "accel_bkg_norm": ("accel_bkg_norm", _OMIT)}, {}),
    }


_FWHM = {"value": ("widths", _REQ), "unit": ("unit:deg", _REQ),  # one, one per Ei, a table
         "energy": ({"value": ("edges", _REQ), "unit": ("unit:keV", _REQ)}, _OMIT)}
_THRESHOLD = ("real", 1.0e-2)
_OPTIMIZER = {  # MAP_gradient's optimiser (probdeconv.inference.map)
    "name": (("lbfgs", "adam", "autodelta"), "lbfgs"),
    "learning_rate": ("real>0", 0.05),  # adam / autodelta; L-BFGS uses its line search
    "tolerance": ("real>=0", 1.0e-10),  # relative change of the log-posterior per step
    "steps_per_iteration": ("int", 1),  # optimiser steps per registered result
    "memory_size": ("int", 10),  # L-BFGS history
}
_SCHEMAS: dict[str, dict] = {
    "RLsimple": {**_COMMON, "stopping_criteria": ("ignored", _OMIT)},
    "RL": {**_COMMON, **_em_filters("RL"),
           "smoothing": ({"activate": _OFF, "FWHM": ("fwhm", _OMIT)}, {}),
           "stopping_criteria": ({"statistics": (("log-likelihood",), "log-likelihood"),
                                  "threshold": _THRESHOLD, "relative": _OFF}, {})},
    # cosipy 0.4: RLbasic = plain EM (no background fitting), RLadvanced = RL
    "RLbasic": {k: _COMMON[k] for k in ("iteration_max", "minimum_flux", "save_results")},
    "MAP_RL": {**_COMMON, **_em_filters("MAP_RL"), "prior": ("prior", {}),
               "stopping_criteria": ({"statistics": (("log-posterior", "log-likelihood"),
                                                     "log-posterior"),
                                      "threshold": _THRESHOLD, "relative": _OFF}, {})},
    "MAP_gradient": {**_COMMON, "prior": ("prior", {}), "optimizer": (_OPTIMIZER, {})},
}
_SCHEMAS["RLadvanced"] = {**_SCHEMAS["RL"], **_em_filters("RL", ("MaxStep",), "MaxStep")}
_MODEL_PROPERTY = {
    "coordinate": ("str", "galactic"), "nside": ("nside", _REQ),
    "scheme": (("ring", "nested"), "ring"), "unit": ("unit", FLUX_UNIT),
    "energy_edges": ({"value": ("edges", _REQ), "unit": ("unit:keV", _REQ)}, _REQ),
}
_MODEL_INIT = {
    "algorithm": (("flat",), "flat"),
    "parameter": ({"value": ("fluxes", _REQ), "unit": ("unit", FLUX_UNIT)}, _REQ),
}


def _known_keys(spec: Any, out: set) -> set:
    if isinstance(spec, dict):
        for key, (sub, _) in spec.items():
            out.add(key)
            _known_keys(sub, out)
    return out


# every key some schema knows, and cosipy 0.4's LineSearch settings: never taken as typos
_KNOWN_KEYS = _known_keys({"model_definition": ({"class": (0, 0), "property": (_MODEL_PROPERTY, 0),
                                                 "initialization": (_MODEL_INIT, 0),
                                                 "point_sources": (0, 0)}, 0),
                           "deconvolution": ({"algorithm": (0, 0), "parameter": (0, 0)}, 0),
                           **{k: (v, 0) for k, v in _SCHEMAS.items()}},
                          {"independent", "max", "search_method", "grid_n"})


def _algorithm_parameters(schema: str, parameter: Any, path: str) -> dict:
    out = _check(_SCHEMAS[schema], as_dict(parameter, path), path)
    if "acceleration" in out:
        out["acceleration"] = acceleration_form(schema, out["acceleration"],
                                               f"{path}:acceleration")
    smoothing = out.get("smoothing", {})
    if smoothing.get("activate") and "FWHM" not in smoothing:
        raise ParameterError(
            f"{path}:smoothing:FWHM: missing although {path}:smoothing:activate is true; "
            f"expected {_what(_FWHM)} (e.g. {{value: 2.0, unit: deg}})."
        )
    return out


def validate_algorithm_parameters(algorithm: str, parameter: Any = None) -> dict:
    """Validate one algorithm's ``deconvolution:parameter`` sub-tree and fill defaults.

    Parameters
    ----------
    algorithm : str
        One of :data:`KNOWN_ALGORITHMS` (``RL``, ``RLsimple``, ``MAP_RL``,
        ``MAP_gradient``).
    parameter : Mapping, Parameters, yayc.Configurator or None
        The sub-tree; ``None`` means all defaults.

    Returns
    -------
    dict
        Plain nested dict with every default filled in.

    Raises
    ------
    ParameterError
        Unknown algorithm or key, wrong type or out-of-range value.

    Examples
    --------
    >>> p = validate_algorithm_parameters("RL", {"acceleration": {"activate": True}})
    >>> p["acceleration"], p["iteration_max"]
    ({'activate': True, 'alpha_max': 1.0, 'algorithm': 'classic'}, 1)
    """
    if not isinstance(algorithm, str) or algorithm not in _SCHEMAS:
        raise _bad("deconvolution:algorithm", algorithm, "an algorithm name", KNOWN_ALGORITHMS)
    return _algorithm_parameters(algorithm, parameter, "deconvolution:parameter")


def validate_run_parameters(
    params: Any,
    *,
    model_classes: Iterable[str] = KNOWN_MODEL_CLASSES,
    algorithms: Mapping[str, str] | None = None,
) -> Parameters:
    """Validate a whole run file (``model_definition`` and ``deconvolution``) once.

    Other top-level keys (``author``, ``date``, ...) are kept unchecked.

    Parameters
    ----------
    params : Parameters, Mapping or yayc.Configurator
        The parsed run file.
    model_classes : iterable of str
        Accepted ``model_definition:class`` names.
    algorithms : Mapping[str, str], optional
        Accepted ``deconvolution:algorithm`` names, each mapped to the built-in schema
        (``RL``, ``RLsimple``, ``MAP_RL`` or ``MAP_gradient``) that checks its parameters;
        when neither the value nor the key names one, the parameters are only checked to be
        a mapping.
        Default: the built-in algorithms.

    Returns
    -------
    Parameters
        A new object with every default filled in.

    Raises
    ------
    ParameterError
        Missing or unknown key, wrong type, unknown class or algorithm (with the choices).

    Examples
    --------
    >>> run = {"model_definition": {"class": "AllSkyImage",
    ...        "property": {"nside": 4, "energy_edges": {"value": [100, 200], "unit": "keV"}},
    ...        "initialization": {"parameter": {"value": [1e-4]}}},
    ...        "deconvolution": {"algorithm": "RLsimple"}}
    >>> v = validate_run_parameters(run, model_classes=["AllSkyImage"],
    ...                             algorithms={"RLsimple": "RLsimple"})
    >>> v["model_definition:property:scheme"], v["deconvolution:parameter:iteration_max"]
    ('ring', 1)
    """
    classes = (model_classes,) if isinstance(model_classes, str) else tuple(model_classes)
    algos = dict(algorithms) if algorithms is not None else {n: n for n in KNOWN_ALGORITHMS}
    data = as_dict(params, "parameters")
    model_spec = {"class": (classes, _REQ), "property": (_MODEL_PROPERTY, _REQ),
                  "initialization": (_MODEL_INIT, _REQ),
                  "point_sources": ("point_sources", _OMIT)}
    deconv_spec = {"algorithm": (tuple(algos), _REQ), "parameter": ("mapping", {})}
    for key, spec in (("model_definition", model_spec), ("deconvolution", deconv_spec)):
        if key not in data:
            raise ParameterError(f"{key}: missing required top-level key; expected {_what(spec)}.")
        data[key] = _check(spec, data[key], key)

    model = data["model_definition"]
    n_bins = len(model["property"]["energy_edges"]["value"]) - 1
    values = model["initialization"]["parameter"]["value"]
    if len(values) != n_bins:
        raise _bad("model_definition:initialization:parameter:value", values,
                   f"{n_bins} numbers, one per energy bin (len(energy_edges:value) - 1)")

    deconv = data["deconvolution"]
    name = deconv["algorithm"]
    schema = name if name in _SCHEMAS else algos[name]  # RLadvanced: its own schema
    if schema in _SCHEMAS:
        deconv["parameter"] = _algorithm_parameters(schema, deconv["parameter"],
                                                    "deconvolution:parameter")
    else:
        logger.debug("deconvolution:parameter: no built-in schema for %r; not checked", name)
    out = Parameters(data)
    out.path = getattr(params, "path", None) or getattr(params, "config_path", None)
    return out
