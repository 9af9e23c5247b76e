"""Parameter files: colon-path access to nested dicts and validation of cosipy run files.

:class:`Parameters` reads the YAML parameter files cosipy users already have and reaches
nested keys through colon paths (``"deconvolution:parameter:iteration_max"``), like
``yayc.Configurator``. :func:`validate_run_parameters` checks a whole run file once
(``model_definition`` and ``deconvolution``) and fills in defaults;
:func:`validate_algorithm_parameters` does the same for one ``deconvolution:parameter``.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from probdeconv.errors import FileFormatError, ParameterError
from probdeconv.io.atomic import atomic_target
from probdeconv.units import FLUX_UNIT_NAME

__all__ = [
    "FLUX_UNIT",
    "KNOWN_ALGORITHMS",
    "KNOWN_MODEL_CLASSES",
    "MissingParameterError",
    "Parameters",
    "as_dict",
    "join_path",
    "plain_value",
    "safe_load_yaml",
    "show_value",
]

logger = logging.getLogger(__name__)

FLUX_UNIT = FLUX_UNIT_NAME  # the spelling in parameter files
KNOWN_ALGORITHMS = ("RL", "RLsimple", "MAP_RL", "MAP_gradient", "RLbasic", "RLadvanced")
KNOWN_MODEL_CLASSES = ("AllSkyImage",)
_EXAMPLE = "'deconvolution:parameter:iteration_max = 30'"
MAX_YAML_ALIASES = 64  # aliases (``*name``) a parameter file or manifest may use
MAX_YAML_NODES = 200_000  # nodes of a document once its aliases are expanded


class YAMLAliasLimitError(yaml.YAMLError):
    """A YAML document uses more aliases, or expands to more nodes, than allowed."""


class _LimitedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses alias bombs (as safe loaders of untrusted files do).

    Counts the aliases while composing and the nodes the document expands to (an alias
    counts its whole subtree each time it is used), before anything is constructed.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self.alias_count = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise YAMLAliasLimitError(
                    f"more than {MAX_YAML_ALIASES} aliases (*name), the {MAX_YAML_ALIASES + 1}"
                    f"th at line {mark.line + 1}; a parameter file needs none: write the "
                    "values out instead of repeating anchors")
        return super().compose_node(parent, index)

    def compose_document(self):
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def size(n) -> int:  # expanded node count; each shared node is measured once
            if id(n) not in sizes:
                sizes[id(n)] = 1  # a recursive alias counts once
                if isinstance(n, yaml.SequenceNode):
                    sizes[id(n)] = 1 + sum(size(c) for c in n.value)
                elif isinstance(n, yaml.MappingNode):
                    sizes[id(n)] = 1 + sum(size(k) + size(v) for k, v in n.value)
            return sizes[id(n)]

        if node is not None and size(node) > MAX_YAML_NODES:
            raise YAMLAliasLimitError(
                f"its aliases expand it to {size(node)} values (more than {MAX_YAML_NODES}); "
                "refusing an alias bomb: write the values out instead of nesting anchors")
        return node


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses alias bombs (more than 64 aliases, or a document
    whose aliases expand it past 200000 values) with a ``yaml.YAMLError``.

    Parameter files, dataset manifests and run records are read with it.

    Examples
    --------
    >>> safe_load_yaml("a: &x [1, 2]\\nb: *x")
    {'a': [1, 2], 'b': [1, 2]}
    >>> bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\\n" + "".join(
    ...     f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\\n" for p, c in zip("abcde", "bcdef"))
    >>> safe_load_yaml(bomb)
    Traceback (most recent call last):
    ...
    probdeconv.config.parameters.YAMLAliasLimitError: its aliases expand it to ...
    """
    loader = _LimitedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class MissingParameterError(ParameterError, KeyError):
    """A colon path names a parameter that does not exist (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def show_value(value: Any) -> str:
    text = repr(value)
    return f"{text[:77] + '...' if len(text) > 80 else text} ({type(value).__name__})"


def join_path(path: str, key: Any) -> str:
    return f"{path}:{key}" if path else str(key)


def plain_value(value: Any) -> Any:
    """Deep copy into plain YAML-able Python (dict, list, scalars)."""
    if isinstance(value, Parameters):
        return plain_value(value._data)
    if isinstance(value, Mapping):
        return {k: plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    if isinstance(value, np.ndarray | np.generic) and not hasattr(value, "unit"):
        return value.tolist()
    return copy.deepcopy(value)  # (an astropy Quantity stays one: e.g. smoothing:FWHM)


def as_dict(obj: Any, path: str) -> dict:
    """A plain dict copy of None, a Mapping, a Parameters or a ``yayc.Configurator``."""
    if not isinstance(obj, Mapping | Parameters) and hasattr(obj, "_config"):
        obj = obj._config  # yayc.Configurator keeps its nested dict here (None when empty)
    if obj is None:
        return {}
    if not isinstance(obj, Mapping | Parameters):
        raise ParameterError(
            f"{path}: got {show_value(obj)}; expected a mapping (dict, Parameters or "
            "yayc.Configurator)."
        )
    return plain_value(obj)


def _split(key: Any) -> list[str]:
    parts = [p.strip() for p in key.split(":")] if isinstance(key, str) else []
    if not parts or not all(parts):
        raise ParameterError(
            f"parameter key: got {show_value(key)}; expected names joined by ':', e.g. 'a:b:c'."
        )
    return parts


class Parameters:
    """Nested parameters with colon-path access, like cosipy's ``yayc.Configurator``.

    Parameters
    ----------
    data : Mapping, Parameters, yayc.Configurator or None
        The nested parameters (deep-copied); ``None`` gives an empty set.

    Notes
    -----
    ``p["a:b"]`` returns a copy (a :class:`Parameters` for a mapping), so changing it
    leaves ``p`` alone; set values with ``p["a:b:c"] = value`` or :meth:`override`.

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
        self._data: dict = as_dict(data, "Parameters(...)")
        self.path: Path | None = getattr(data, "path", None) or getattr(data, "config_path", None)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Parameters:
        """Read a YAML parameter file.

        Raises
        ------
        FileFormatError
            The file is missing or unreadable, is not valid YAML (the message gives the
            line), or its top level is not a mapping.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileFormatError(f"{path}: parameter file not found; expected a YAML file.")
        try:
            text = path.read_text(encoding="utf-8")
            data = safe_load_yaml(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise FileFormatError(f"{path}: cannot read ({exc}); expected UTF-8 YAML.") from exc
        except YAMLAliasLimitError as exc:
            raise FileFormatError(f"{path}: YAML refused: {exc}.") from exc
        except yaml.YAMLError as exc:
            mark, where = getattr(exc, "problem_mark", None), ""
            if mark is not None:
                line = (text.splitlines() + [""])[min(mark.line, len(text.splitlines()))]
                where = f" at line {mark.line + 1}, column {mark.column + 1} ({line.strip()!r})"
            problem = getattr(exc, "problem", None) or exc
            raise FileFormatError(
                f"{path}: invalid YAML{where}: {problem}; expected a YAML mapping of parameters."
            ) from exc
        if data is not None and not isinstance(data, dict):
            raise FileFormatError(
                f"{path}: top level is {show_value(data)}; expected a YAML mapping of parameters."
            )
        new = cls(data)
        new.path = path
        logger.info("Using parameter file %s", path)
        return new

    def _lookup(self, key: str) -> Any:
        parts, node = _split(key), self._data
        for n, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                here = ":".join(parts[:n]) or "the top level"
                hint = (f"valid keys at {here}: {', '.join(map(str, node)) or '(none)'}"
                        if isinstance(node, dict) else f"{here} holds {show_value(node)}")
                raise MissingParameterError(
                    f"{':'.join(parts[: n + 1])}: no such parameter (key {part!r}); {hint}."
                )
            node = node[part]
        return node

    def __getitem__(self, key: str) -> Any:
        value = self._lookup(key)
        return Parameters(value) if isinstance(value, dict) else plain_value(value)

    def get(self, key: str, default: Any = None) -> Any:
        """Value at colon path ``key``, or ``default`` when any part of it is missing."""
        try:
            return self[key]
        except MissingParameterError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        """Set the value at colon path ``key``, creating missing intermediate mappings."""
        parts, node = _split(key), self._data
        for n, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParameterError(
                    f"{':'.join(parts[: n + 1])}: got {show_value(node)}; expected a mapping to "
                    f"hold {key!r}."
                )
        node[parts[-1]] = plain_value(value)

    def __contains__(self, key: object) -> bool:
        try:
            self._lookup(key)  # type: ignore[arg-type]
        except ParameterError:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Parameters | Mapping):
            return self._data == plain_value(other)
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
            if not isinstance(arg, str) and isinstance(arg, Iterable):
                self.override(*arg)
                continue
            key, sep, text = arg.partition("=") if isinstance(arg, str) else ("", "", "")
            if not sep:
                raise ParameterError(
                    f"override: got {show_value(arg)}; expected 'key:path = value', "
                    f"e.g. {_EXAMPLE}."
                )
            try:
                value = safe_load_yaml(text.strip())
            except yaml.YAMLError as exc:
                raise ParameterError(
                    f"{key.strip()}: override value {text.strip()!r} is not valid YAML ({exc}); "
                    "expected a YAML scalar, list or mapping (quote strings containing ':')."
                ) from exc
            self[key.strip()] = value

    def to_dict(self) -> dict:
        """Deep copy of the parameters as a plain nested dict."""
        return plain_value(self._data)

    def dump(self, path: str | os.PathLike) -> Path:
        """Write the parameters as YAML atomically (temporary file, then ``os.replace``).

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
                f"dump to {path}: a value cannot be written as YAML ({exc}); expected numbers, "
                "strings, booleans, dates, lists and mappings only."
            ) from exc
        if not path.parent.is_dir():
            raise FileFormatError(f"{path}: directory {path.parent} does not exist.")
        with atomic_target(path, True, "parameter file") as tmp:  # umask, fsync, rename
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        return path

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"Parameters({self._data!r}{where})"
