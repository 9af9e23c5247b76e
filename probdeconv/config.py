"""Parameter files: a colon-path wrapper of nested dicts and validation of cosipy run files.

:class:`Parameters` reads the YAML parameter files that cosipy users already have and gives
access to nested keys through colon paths (``"deconvolution:parameter:iteration_max"``).
:func:`validate_run_parameters` checks a whole run file once (``model_definition`` and
``deconvolution``) and fills in defaults; :func:`validate_algorithm_parameters` does the
same for one algorithm's ``deconvolution:parameter`` sub-tree.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from probdeconv.errors import FileFormatError, ParameterError

__all__ = [
    "FLUX_UNIT",
    "KNOWN_ALGORITHMS",
    "KNOWN_MODEL_CLASSES",
    "MissingParameterError",
    "Parameters",
    "validate_algorithm_parameters",
    "validate_run_parameters",
]

logger = logging.getLogger(__name__)

FLUX_UNIT = "cm-2 s-1 sr-1"
KNOWN_ALGORITHMS = ("RL", "RLsimple", "MAP_RL")
KNOWN_MODEL_CLASSES = ("AllSkyImage",)
_EXAMPLE_KEY = "deconvolution:parameter:iteration_max"


class MissingParameterError(ParameterError, KeyError):
    """A colon path names a parameter that does not exist (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _show(value: Any) -> str:
    text = repr(value)
    return f"{text[:77] + '...' if len(text) > 80 else text} ({type(value).__name__})"


def _join(path: str, key: Any) -> str:
    return f"{path}:{key}" if path else str(key)


def _plain(value: Any) -> Any:
    """Deep copy into plain YAML-able Python (dict, list, scalars)."""
    if isinstance(value, Parameters):
        return _plain(value._data)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return copy.deepcopy(value)


def _as_dict(obj: Any, path: str) -> dict:
    """Accept None, a Mapping, a Parameters or a ``yayc.Configurator`` as a plain dict."""
    if obj is None:
        return {}
    if not isinstance(obj, Mapping | Parameters) and hasattr(obj, "_config"):
        obj = obj._config  # yayc.Configurator keeps its nested dict here
        if obj is None:
            return {}
    if not isinstance(obj, Mapping | Parameters):
        raise ParameterError(
            f"{path}: got {_show(obj)}; expected a mapping (dict, Parameters or "
            "yayc.Configurator) of parameters."
        )
    return _plain(obj)


def _split(key: Any) -> list[str]:
    parts = [p.strip() for p in key.split(":")] if isinstance(key, str) else []
    if not parts or not all(parts):
        raise ParameterError(
            f"parameter key: got {_show(key)}; expected non-empty names joined by ':', "
            f"e.g. '{_EXAMPLE_KEY}'."
        )
    return parts


class Parameters:
    """Nested parameters with colon-path access, like cosipy's ``yayc.Configurator``.

    Parameters
    ----------
    data : Mapping, Parameters, yayc.Configurator or None
        The nested parameters; deep-copied. ``None`` gives an empty set.

    Examples
    --------
    >>> p = Parameters({"deconvolution": {"parameter": {"iteration_max": 10}}})
    >>> p["deconvolution:parameter:iteration_max"]
    10
    >>> p.override("deconvolution:parameter:iteration_max = 30")
    >>> p.get("deconvolution:parameter:iteration_max"), p.get("no:such:key", 1)
    (30, 1)
    """

    def __init__(self, data: Any = None) -> None:
        self._data: dict = _as_dict(data, "Parameters(...)")
        self.path: Path | None = getattr(data, "path", None) or getattr(data, "config_path", None)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Parameters:
        """Read a YAML parameter file.

        Raises
        ------
        FileFormatError
            If the file is missing or unreadable, is not valid YAML (the message gives
            the line), or its top level is not a mapping.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileFormatError(
                f"{path}: parameter file not found; expected an existing YAML file "
                "(e.g. imagedeconvolution_parfile.yml)."
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise FileFormatError(f"{path}: cannot read ({exc}); expected UTF-8 YAML.") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = ""
            if mark is not None:
                lines = text.splitlines()
                line = lines[mark.line].strip() if mark.line < len(lines) else ""
                where = f" at line {mark.line + 1}, column {mark.column + 1} ({line!r})"
            problem = getattr(exc, "problem", None) or str(exc)
            raise FileFormatError(
                f"{path}: invalid YAML{where}: {problem}; expected a YAML mapping of parameters."
            ) from exc
        if data is not None and not isinstance(data, dict):
            raise FileFormatError(
                f"{path}: top level is {_show(data)}; expected a YAML mapping such as "
                "'deconvolution: {algorithm: RL}'."
            )
        new = cls(data)
        new.path = path
        logger.info("Using parameter file %s", path)
        return new

    def _lookup(self, key: str) -> Any:
        parts = _split(key)
        node: Any = self._data
        for n, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                here = ":".join(parts[:n]) or "the top level"
                if isinstance(node, dict):
                    valid = ", ".join(map(str, node)) or "(none)"
                    hint = f"valid keys at {here}: {valid}"
                else:
                    hint = f"{here} holds {_show(node)}, not a mapping"
                raise MissingParameterError(
                    f"{':'.join(parts[: n + 1])}: no such parameter (key {part!r}); {hint}."
                )
            node = node[part]
        return node

    def __getitem__(self, key: str) -> Any:
        value = self._lookup(key)
        return Parameters(value) if isinstance(value, dict) else _plain(value)

    def get(self, key: str, default: Any = None) -> Any:
        """Value at colon path ``key``, or ``default`` when any part of it is missing."""
        try:
            return self[key]
        except MissingParameterError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        """Set the value at colon path ``key``, creating missing intermediate mappings."""
        parts = _split(key)
        node = self._data
        for n, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParameterError(
                    f"{':'.join(parts[: n + 1])}: got {_show(node)}; expected a mapping "
                    f"to hold '{key}'."
                )
        node[parts[-1]] = _plain(value)

    def __contains__(self, key: object) -> bool:
        try:
            self._lookup(key)  # type: ignore[arg-type]
        except ParameterError:
            return False
        return True

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> Any:
        """Top-level keys."""
        return self._data.keys()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Parameters | Mapping):
            return self._data == _plain(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def override(self, *args: str | Iterable[str]) -> None:
        """Set parameters from strings ``"a:b:c = value"``; the value is parsed as YAML.

        Arguments may also be iterables of such strings (e.g. from a command line).

        Examples
        --------
        >>> p = Parameters()
        >>> p.override("a:b = [1, 2.5]", ["a:c = true", "d = 'text'"])
        >>> p.to_dict()
        {'a': {'b': [1, 2.5], 'c': True}, 'd': 'text'}
        """
        for arg in args:
            if not isinstance(arg, str):
                if not isinstance(arg, Iterable):
                    raise ParameterError(
                        f"override: got {_show(arg)}; expected strings like '{_EXAMPLE_KEY} = 30'."
                    )
                self.override(*arg)
                continue
            key, sep, text = arg.partition("=")
            if not sep:
                raise ParameterError(
                    f"override: got {arg!r}; expected 'key:path = value', "
                    f"e.g. '{_EXAMPLE_KEY} = 30'."
                )
            try:
                value = yaml.safe_load(text.strip())
            except yaml.YAMLError as exc:
                raise ParameterError(
                    f"{key.strip()}: override value {text.strip()!r} is not valid YAML ({exc}); "
                    "expected a YAML scalar, list or mapping (quote strings with '=' or ':')."
                ) from exc
            self[key.strip()] = value

    def to_dict(self) -> dict:
        """Deep copy of the parameters as a plain nested dict."""
        return _plain(self._data)

    def dump(self, path: str | os.PathLike) -> Path:
        """Write the parameters as YAML, atomically (temporary file + ``os.replace``).

        Returns
        -------
        pathlib.Path
            The path written.
        """
        path = Path(path).expanduser()
        try:
            text = yaml.safe_dump(self._data, sort_keys=False, default_flow_style=None)
        except yaml.YAMLError as exc:
            raise ParameterError(
                f"dump to {path}: a value cannot be written as YAML ({exc}); expected "
                "numbers, strings, booleans, lists and mappings only."
            ) from exc
        if not path.parent.is_dir():
            raise FileFormatError(f"{path}: directory {path.parent} does not exist.")
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"Parameters({self._data!r}{where})"


# ----------------------------------------------------------------------------- validation
_REQUIRED, _OMIT = object(), object()


class _Check(NamedTuple):
    what: str  # what is expected, for messages
    fn: Callable[[Any, str], Any]  # (value, key path) -> normalised value


class _Field(NamedTuple):
    check: _Check
    default: Any = _REQUIRED  # _REQUIRED, _OMIT (left out when absent) or a default value


def _bad(path: str, value: Any, what: str, choices: Iterable[Any] | None = None) -> ParameterError:
    msg = f"{path}: got {_show(value)}; expected {what}"
    if choices is not None:
        msg += "; valid choices: " + ", ".join(map(str, choices))
    return ParameterError(msg + ".")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _int(minimum: int, power_of_two: bool = False) -> _Check:
    what = f"an integer >= {minimum}" + (" that is a power of 2" if power_of_two else "")

    def fn(value: Any, path: str) -> int:
        ok = _is_real(value) and isinstance(value, numbers.Integral) and value >= minimum
        if not ok or (power_of_two and int(value) & (int(value) - 1)):
            raise _bad(path, value, what)
        return int(value)

    return _Check(what, fn)


def _real(minimum: float | None = None, finite: bool = True, inf_text: bool = False) -> _Check:
    what = "a number" + (f" >= {minimum}" if minimum is not None else "")
    what += "" if finite else " (inf allowed)"

    def fn(value: Any, path: str) -> float:
        if inf_text and isinstance(value, str) and value.strip().lower() in _INF_WORDS:
            value = math.inf
        if not _is_real(value) or math.isnan(value) or (finite and math.isinf(value)):
            raise _bad(path, value, what)
        if minimum is not None and value < minimum:
            raise _bad(path, value, what)
        return float(value)

    return _Check(what, fn)


_INF_WORDS = ("inf", "+inf", ".inf", "infinity")


def _bool_fn(value: Any, path: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise _bad(path, value, "a boolean (YAML true/false)")
    return bool(value)


_BOOL = _Check("a boolean (YAML true/false)", _bool_fn)


def _choice(choices: Iterable[str]) -> _Check:
    options = tuple(choices)

    def fn(value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in options:
            raise _bad(path, value, "one of the listed names", options)
        return value

    return _Check(f"one of {', '.join(options)}", fn)


def _text_fn(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(path, value, "a non-empty string")
    return value


_TEXT = _Check("a non-empty string", _text_fn)


def _unit(equivalent: str | None = None) -> _Check:
    what = "an astropy unit string" + (f" convertible to {equivalent}" if equivalent else "")

    def fn(value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _bad(path, value, what)
        from astropy import units as u  # lazy: astropy is slow to import

        try:
            unit = u.Unit(value)
        except (ValueError, TypeError) as exc:
            raise _bad(path, value, f"{what} (astropy says: {exc})") from exc
        if equivalent is not None and not unit.is_equivalent(u.Unit(equivalent)):
            raise _bad(path, value, what)
        return value

    return _Check(what, fn)


def _numbers(minimum: float | None = None, increasing: bool = False) -> _Check:
    what = "a list of finite numbers" + (f" >= {minimum}" if minimum is not None else "")
    what += ", at least two, strictly increasing" if increasing else ""
    element = _real(minimum)

    def fn(value: Any, path: str) -> list[float]:
        if not isinstance(value, list | tuple) or not value or (increasing and len(value) < 2):
            raise _bad(path, value, what)
        out = [element.fn(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if increasing and any(b <= a for a, b in zip(out[:-1], out[1:])):
            raise _bad(path, value, what)
        return out

    return _Check(what, fn)


def _ranges_fn(value: Any, path: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad(path, value, "a mapping of background name to [lower, upper], e.g. "
                   "{albedo: [0.9, 1.1]}, or nothing for [0.0, 100.0] each")
    out = {}
    bound = _real(0.0, finite=False)
    for name, pair in value.items():
        sub = _join(path, name)
        what = "a list [lower, upper] of two numbers >= 0 with lower <= upper"
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise _bad(sub, pair, what)
        lo, hi = (bound.fn(v, sub) for v in pair)
        if lo > hi:
            raise _bad(sub, pair, what)
        out[name] = [lo, hi]
    return out


def _unknown_key(path: str, key: Any, value: Any, valid: Iterable[Any]) -> ParameterError:
    return ParameterError(
        f"{_join(path, key)}: unknown key (value {_show(value)}); expected one of the valid "
        f"keys at {path or 'the top level'}: {', '.join(map(str, valid))}."
    )


def _section(
    fields: Mapping[str, _Field], post: Callable[[dict, str], None] | None = None
) -> _Check:
    what = "a mapping with keys " + ", ".join(fields)

    def fn(value: Any, path: str) -> dict:
        value = {} if value is None else value
        if not isinstance(value, Mapping):
            raise _bad(path, value, what)
        for key in value:
            if key not in fields:
                raise _unknown_key(path, key, value[key], fields)
        out = {}
        for name, field in fields.items():
            sub = _join(path, name)
            if name in value:
                out[name] = field.check.fn(value[name], sub)
            elif field.default is _REQUIRED:
                raise ParameterError(f"{sub}: missing required key; expected {field.check.what}.")
            elif field.default is not _OMIT:
                out[name] = field.check.fn(copy.deepcopy(field.default), sub)
        if post is not None:
            post(out, path)
        return out

    return _Check(what, fn)


def _loose_tree(node: Any, path: str) -> Any:
    """Copy a loosely checked prior sub-tree, normalising numbers, 'inf' and units."""
    if not isinstance(node, Mapping):
        return _plain(node)
    out = {}
    for key, value in node.items():
        sub = _join(path, key)
        if key in ("value", "coefficient") and not isinstance(value, Mapping | list):
            out[key] = _real(finite=False, inf_text=True).fn(value, sub)
        elif key == "unit":
            out[key] = _unit().fn(value, sub)
        else:
            out[key] = _loose_tree(value, sub)
    return out


_PRIOR_NAMES = ("TSV", "entropy", "gamma")


def _prior_fn(value: Any, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(path, value, "a mapping of prior name to its settings", _PRIOR_NAMES)
    out = {}
    for name, sub in value.items():
        if name not in _PRIOR_NAMES:
            raise _unknown_key(path, name, sub, _PRIOR_NAMES)
        if not isinstance(sub, Mapping):
            raise _bad(_join(path, name), sub, "a mapping, e.g. {coefficient: 1.0}")
        out[name] = _loose_tree(sub, _join(path, name))
    return out


def _ignored_by(algorithm: str) -> _Check:
    def fn(value: Any, path: str) -> Any:
        logger.warning("%s: ignored by %s (it always runs iteration_max iterations)", path, algorithm)
        return _plain(value)

    return _Check("anything (ignored)", fn)


def _need_fwhm(out: dict, path: str) -> None:
    if out["activate"] and "FWHM" not in out:
        raise ParameterError(
            f"{path}:FWHM: missing although {path}:activate is true; expected "
            "{value: number >= 0, unit: angle unit such as deg}."
        )


def _stopping(statistics: tuple[str, ...]) -> _Field:
    fields = {"statistics": _Field(_choice(statistics), statistics[0]),
              "threshold": _Field(_real(), 1.0e-2)}
    return _Field(_section(fields), {})


def _activate(**fields: _Field) -> _Field:
    return _Field(_section({"activate": _Field(_BOOL, False), **fields}), {})


_COMMON = {
    "iteration_max": _Field(_int(1), 1),
    "minimum_flux": _Field(
        _section({"value": _Field(_real(0.0), 0.0), "unit": _Field(_unit(), FLUX_UNIT)}), {}
    ),
    "background_normalization_optimization": _activate(range=_Field(_Check("", _ranges_fn), None)),
    "save_results": _activate(
        directory=_Field(_TEXT, "./results"), only_final_result=_Field(_BOOL, False)
    ),
}
_WEIGHTING = _activate(index=_Field(_real(), 0.5))
_ACCELERATION = _activate(
    alpha_max=_Field(_real(1.0), 1.0),
    algorithm=_Field(_choice(("MaxStep", "LineSearch", "SQUAREM")), "MaxStep"),
)
_FWHM = _section({"value": _Field(_real(0.0)), "unit": _Field(_unit("deg"))})
_SCHEMAS: dict[str, _Check] = {
    "RLsimple": _section({**_COMMON, "stopping_criteria": _Field(_ignored_by("RLsimple"), _OMIT)}),
    "RL": _section({
        **_COMMON,
        "response_weighting": _WEIGHTING,
        "acceleration": _ACCELERATION,
        "smoothing": _Field(_section({"activate": _Field(_BOOL, False),
                                      "FWHM": _Field(_FWHM, _OMIT)}, post=_need_fwhm), {}),
        "stopping_criteria": _stopping(("log-likelihood",)),
    }),
    "MAP_RL": _section({
        **_COMMON,
        "response_weighting": _WEIGHTING,
        "acceleration": _ACCELERATION,
        "stopping_criteria": _stopping(("log-posterior", "log-likelihood")),
        "prior": _Field(_Check("a mapping of priors", _prior_fn), {}),
    }),
}


def validate_algorithm_parameters(algorithm: str, parameter: Any = None) -> dict:
    """Validate one algorithm's ``deconvolution:parameter`` sub-tree and fill defaults.

    Parameters
    ----------
    algorithm : str
        One of :data:`KNOWN_ALGORITHMS` (``RL``, ``RLsimple``, ``MAP_RL``).
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
    ({'activate': True, 'alpha_max': 1.0, 'algorithm': 'MaxStep'}, 1)
    """
    path = "deconvolution:parameter"
    if not isinstance(algorithm, str) or algorithm not in _SCHEMAS:
        raise _bad("deconvolution:algorithm", algorithm, "an algorithm name", KNOWN_ALGORITHMS)
    return _SCHEMAS[algorithm].fn(_as_dict(parameter, path), path)


def _model_section(model_classes: tuple[str, ...]) -> _Check:
    prop = _section({
        "coordinate": _Field(_TEXT, "galactic"),
        "nside": _Field(_int(1, power_of_two=True)),
        "scheme": _Field(_choice(("ring", "nested")), "ring"),
        "energy_edges": _Field(_section({"value": _Field(_numbers(increasing=True)),
                                         "unit": _Field(_unit("keV"))})),
        "unit": _Field(_unit(), FLUX_UNIT),
    })
    init = _section({
        "algorithm": _Field(_choice(("flat",)), "flat"),
        "parameter": _Field(_section({"value": _Field(_numbers(0.0)),
                                      "unit": _Field(_unit(), FLUX_UNIT)})),
    })

    def one_value_per_bin(out: dict, path: str) -> None:
        n_bins = len(out["property"]["energy_edges"]["value"]) - 1
        values = out["initialization"]["parameter"]["value"]
        if len(values) != n_bins:
            raise _bad(f"{path}:initialization:parameter:value", values,
                       f"{n_bins} numbers, one per energy bin (len(energy_edges:value) - 1)")

    fields = {"class": _Field(_choice(model_classes)), "property": _Field(prop),
              "initialization": _Field(init)}
    return _section(fields, post=one_value_per_bin)


def _deconvolution_section(algorithms: Mapping[str, str]) -> _Check:
    def by_algorithm(out: dict, path: str) -> None:
        name = out["algorithm"]
        schema = algorithms[name] if algorithms[name] in _SCHEMAS else name
        sub = f"{path}:parameter"
        if schema in _SCHEMAS:
            out["parameter"] = _SCHEMAS[schema].fn(out["parameter"], sub)
        else:
            out["parameter"] = _as_dict(out["parameter"], sub)
            logger.debug("%s: no built-in schema for %r; left to the algorithm", sub, name)

    loose = _Check("a mapping", lambda value, path: value)
    fields = {"algorithm": _Field(_choice(algorithms)), "parameter": _Field(loose, {})}
    return _section(fields, post=by_algorithm)


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
        (``RL``, ``RLsimple``, ``MAP_RL``) that checks its parameters. When neither the
        value nor the key names a built-in schema, the parameters are only checked to be a
        mapping. Default: the built-in algorithms.

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
    >>> v = validate_run_parameters(run, model_classes=["AllSkyImage"], algorithms={"RLsimple": "RLsimple"})
    >>> v["model_definition:property:scheme"], v["deconvolution:parameter:iteration_max"]
    ('ring', 1)
    """
    classes = (model_classes,) if isinstance(model_classes, str) else tuple(model_classes)
    algos = dict(algorithms) if algorithms is not None else {n: n for n in KNOWN_ALGORITHMS}
    data = _as_dict(params, "parameters")
    for key, check in (("model_definition", _model_section(classes)),
                       ("deconvolution", _deconvolution_section(algos))):
        if key not in data:
            raise ParameterError(f"{key}: missing required top-level key; expected {check.what}.")
        data[key] = check.fn(data[key], key)
    out = Parameters(data)
    out.path = getattr(params, "path", None) or getattr(params, "config_path", None)
    return out
