"""The one reader of YAML ``prior:`` sections: checked trees and posterior configurations.

Two layouts share one set of keys:

- cosipy's (``deconvolution:parameter:prior`` of ``MAP_RL`` and ``MAP_gradient``)::

      TSV: {coefficient: 1.0e+6}
      entropy: {coefficient: 1.0, reference: {value: 1.0e-4, unit: "cm-2 s-1 sr-1"}}
      gamma:
        model: {theta: {value: .inf, unit: "cm-2 s-1 sr-1"}, k: {value: 0.999}}
        background: {theta: {value: .inf}, k: {value: 1.0}}

- the sampler files' (the top-level ``prior:`` of ``probdeconv sample``, ``models/nuts.yml``),
  which may also use ``gamma:`` as above instead of the two kinds::

      image: {kind: flat | gamma | lognormal, k: 1.0, theta: .inf, loc: 0.0, scale: 1.0}
      image: {kind: field, lmax: 11, offset: {flux: 1.0e-4, scale: 3.0},
              amplitude: {median: 1.0, scale: 1.0}, slope: {mean: 3.0, scale: 1.5}}
      background: {free: true, kind: uniform | gamma, k: 1.0, theta: .inf,
                   range: {bkg: [0.01, 10.0]}, norm: {bkg: 1.0},
                   nodes: 10, smoothness: 0.05}    # time nodes (shell.bkg_nodes)
      TSV: {coefficient: 1.0e+6}

A number may be written bare or as ``{value, unit}``; ``theta`` and ``loc`` of the image and
the entropy reference are converted to ``cm-2 s-1 sr-1`` (an entropy reference without a
unit is in the model's unit).  :func:`check_prior_section` validates a section and returns a
normalised copy in the same layout (run-file validation); :func:`prior_options` turns it
into the options of :func:`probdeconv.forward.posterior.make_config`, with the prior objects
of :mod:`probdeconv.priors`.

Examples
--------
>>> opts = prior_options({"TSV": {"coefficient": 2.0},
...                       "gamma": {"model": {"k": {"value": 0.999}}}},
...                      bkg_names=["bkg"], nside=1, keys=MAP_KEYS)
>>> opts["image_prior"], opts["gamma"], list(opts["priors"])
('gamma', (0.999, inf), ['TSV'])
>>> opts = prior_options({"image": {"kind": "gamma", "k": 2, "theta": 1e-3}},
...                      bkg_names=["bkg"], nside=2)
>>> opts["image_prior"], opts["gamma"], opts["bkg_free"]
('gamma', (2.0, 0.001), True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import astropy.units as u
import jax.numpy as jnp

from ..errors import ParameterError
from ..forward.field import build_field
from ..priors import EntropyPrior, TSVPrior
from .parameters import FLUX_UNIT, join_path, plain_value, show_value

__all__ = ["MAP_KEYS", "SAMPLER_KEYS", "check_prior_section", "prior_options"]

MAP_KEYS = ("TSV", "entropy", "gamma")
"""Keys of ``deconvolution:parameter:prior`` (MAP_RL, MAP_gradient)."""
SAMPLER_KEYS = ("image", "background", "TSV", "entropy", "gamma")
"""Keys of the sampler files' ``prior:``."""

_INF_WORDS = ("inf", "+inf", ".inf", "infinity")
_KINDS = {"image": ("flat", "gamma", "lognormal", "field"), "background": ("uniform", "gamma")}
_FIELD_KEYS = {"offset": ("flux", "scale"), "amplitude": ("median", "scale"),
               "slope": ("mean", "scale")}
_FIELD_DEFAULTS = {"offset": {"flux": 1.0e-4, "scale": 3.0},
                   "amplitude": {"median": 1.0, "scale": 1.0},
                   "slope": {"mean": 3.0, "scale": 1.5}}
_IMAGE_KEYS = {"flat": ("kind",), "gamma": ("kind", "k", "theta"),
               "lognormal": ("kind", "loc", "scale"), "field": ("kind", "lmax", *_FIELD_KEYS)}
_BKG_KEYS = ("free", "kind", "k", "theta", "range", "norm", "nodes", "smoothness")


def _bad(path: str, value: Any, what: str) -> ParameterError:
    return ParameterError(f"{path}: got {show_value(value)}; expected {what}.")


def _mapping(node: Any, path: str, valid: Sequence[str], what: str) -> dict:
    if not isinstance(node, Mapping):
        raise _bad(path, node, f"{what}; valid keys: {', '.join(valid)}")
    for key, value in node.items():
        if key not in valid:
            raise ParameterError(
                f"{join_path(path, key)}: unknown key (value {show_value(value)}); expected one "
                f"of the valid keys at {path}: {', '.join(valid)}.")
    return dict(node)


def _real(value: Any, path: str, low: float = -math.inf, inf: bool = False,
          strict: bool = False) -> float:
    if inf and isinstance(value, str) and value.strip().lower() in _INF_WORDS:
        value = math.inf
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and not math.isnan(value) and (inf or not math.isinf(value))
    if not ok or value < low or (strict and value <= low):
        what = "a number" + ("" if not inf else " or inf")
        if low > -math.inf:
            what += f" {'>' if strict else '>='} {low:g}"
        raise _bad(path, value, what)
    return float(value)


def _unit(value: Any, path: str, target: str | None) -> u.UnitBase:
    try:
        unit = u.Unit(value) if isinstance(value, str) and value.strip() else None
    except (ValueError, TypeError):
        unit = None
    if unit is None or (target is not None and not unit.is_equivalent(u.Unit(target))):
        raise _bad(path, value, "an astropy unit string" + (
            f" convertible to {target}" if target else ""))
    return unit


def _quantity(node: Any, path: str, *, target: str | None = None, low: float = -math.inf,
              inf: bool = False, strict: bool = False) -> tuple[Any, float]:
    """``(normalised node, value in target)`` of ``x`` or ``{value[, unit]}``."""
    if not isinstance(node, Mapping):
        value = _real(node, path, low, inf, strict)
        return value, value
    node = _mapping(node, path, ("value", "unit"), "a number or {value, unit}")
    if "value" not in node:
        raise ParameterError(f"{join_path(path, 'value')}: missing required key; expected a "
                             "number.")
    value = _real(node["value"], join_path(path, "value"), low, inf, strict)
    out = {"value": value}
    if "unit" in node:
        unit = _unit(node["unit"], join_path(path, "unit"), target)
        out["unit"] = node["unit"]
        if target is not None and math.isfinite(value):
            value = float((value * unit).to_value(target))
    return out, value


def _coefficient(node: Any, path: str, extra: Sequence[str] = ()) -> dict:
    node = _mapping(node, path, ("coefficient", *extra), "a mapping, e.g. {coefficient: 1.0}")
    if "coefficient" not in node:
        raise ParameterError(f"{join_path(path, 'coefficient')}: missing required key; "
                             "expected a number >= 0, e.g. coefficient: 1.0e+6.")
    node["coefficient"] = _real(node["coefficient"], join_path(path, "coefficient"), 0.0)
    return node


def _gamma_pair(node: Any, path: str, target: str | None) -> tuple[Any, tuple[float, float]]:
    node = _mapping(node or {}, path, ("k", "theta"), "a mapping {k, theta}")
    out, pair = {}, [1.0, math.inf]
    for i, key in enumerate(("k", "theta")):
        if key in node:
            out[key], pair[i] = _quantity(node[key], join_path(path, key), low=0.0,
                                          strict=True, inf=key == "theta",
                                          target=target if key == "theta" else None)
    return out, tuple(pair)


def _read(prior: Any, path: str, keys: Sequence[str]) -> tuple[dict, dict]:
    """``(normalised section, parsed values)`` of a ``prior:`` section."""
    prior = _mapping(plain_value(prior) if prior is not None else {}, path, keys,
                     "a mapping of prior name to its settings")
    tree: dict[str, Any] = {}
    # cosipy's layout always has MAP-RL's gamma priors (flat by default: k = 1, θ = ∞)
    # the sampler files' backgrounds are free unless background: {free: false}
    spec: dict[str, Any] = ({"image_prior": "flat", "bkg_free": True} if "image" in keys else
                            {"image_prior": "gamma", "bkg_prior": "gamma"})
    spec["others"] = {}
    for name, node in prior.items():
        sub = join_path(path, name)
        if name == "TSV":
            tree[name] = _coefficient(node, sub)
            spec["others"][name] = tree[name]["coefficient"]
        elif name == "entropy":
            tree[name] = node = _coefficient(node, sub, ("reference",))
            ref = node.get("reference", 1.0)
            tree[name]["reference"], value = _quantity(ref, join_path(sub, "reference"),
                                                       target=FLUX_UNIT, low=0.0, strict=True)
            has_unit = isinstance(ref, Mapping) and "unit" in ref
            spec["others"][name] = (node["coefficient"], value, has_unit)
        elif name == "gamma":
            node = _mapping(node or {}, sub, ("model", "background"),
                            "a mapping {model, background}")
            tree[name] = {}
            for part, target in (("model", FLUX_UNIT), ("background", "")):
                tree[name][part], pair = _gamma_pair(node.get(part), join_path(sub, part),
                                                     target)
                spec["gamma" if part == "model" else "bkg_gamma"] = pair
                if part not in node:
                    del tree[name][part]
            spec["image_prior"], spec["bkg_prior"] = "gamma", "gamma"
        elif name == "image":
            tree[name] = _image(node, sub, spec)
        else:
            tree[name] = _background(node, sub, spec)
    if "gamma" in prior and ("image" in prior or "kind" in (prior.get("background") or {})):
        raise ParameterError(f"{path}: gives both gamma and image / background kinds; use "
                             "either gamma: {model, background} or image: {kind} and "
                             "background: {kind}.")
    return tree, spec


def _image(node: Any, path: str, spec: dict) -> dict:
    node = _mapping(node or {}, path, ("kind", "k", "theta", "loc", "scale", "lmax",
                                       *_FIELD_KEYS),
                    "a mapping {kind, k, theta, loc, scale} or {kind: field, lmax, offset, "
                    "amplitude, slope}")
    kind = node.get("kind", "flat")
    if kind not in _KINDS["image"]:
        raise _bad(join_path(path, "kind"), kind, "one of " + ", ".join(_KINDS["image"]))
    _mapping(node, path, _IMAGE_KEYS[kind], f"the keys of kind {kind!r}")
    out = {"kind": kind}
    spec["image_prior"] = kind
    if kind == "gamma":
        pair = _gamma_pair({k: node[k] for k in ("k", "theta") if k in node}, path, FLUX_UNIT)
        out.update(pair[0])
        spec["gamma"] = pair[1]
    elif kind == "lognormal":
        loc = _quantity(node.get("loc", 0.0), join_path(path, "loc"))
        scale = _quantity(node.get("scale", 1.0), join_path(path, "scale"), low=0.0,
                          strict=True)
        out.update({k: v[0] for k, v in (("loc", loc), ("scale", scale)) if k in node})
        spec["lognormal"] = (loc[1], scale[1])
    elif kind == "field":
        out.update(_field(node, path, spec))
    return out


def _field(node: Mapping, path: str, spec: dict) -> dict:
    """The ``image: {kind: field, ...}`` options (module docstring), checked."""
    out, values = {}, {}
    if node.get("lmax") is not None:  # null: 3 NSIDE - 1
        lmax = node["lmax"]
        if isinstance(lmax, bool) or not isinstance(lmax, numbers.Integral) or lmax < 1:
            raise _bad(join_path(path, "lmax"), lmax, "an integer >= 1 (default 3 NSIDE - 1)")
        out["lmax"] = values["lmax"] = int(lmax)
    for part, keys in _FIELD_KEYS.items():
        sub = join_path(path, part)
        given = _mapping(node.get(part) or {}, sub, keys, f"a mapping {{{', '.join(keys)}}}")
        out[part] = {}
        for key in keys:
            where = join_path(sub, key)
            raw = given.get(key, _FIELD_DEFAULTS[part][key])
            if part == "offset" and key == "flux":
                node_out, value = _quantity(raw, where, target=FLUX_UNIT, low=0.0, strict=True)
            else:
                strict = key != "mean"
                node_out, value = _quantity(raw, where, low=0.0 if strict else -math.inf,
                                            strict=strict)
            out[part][key] = node_out
            values[f"{part}_{key}"] = value
    spec["field"] = values
    return out


def _background(node: Any, path: str, spec: dict) -> dict:
    node = _mapping(node or {}, path, _BKG_KEYS, "a mapping {free, kind, range, norm, ...}")
    out = dict(node)
    free = node.get("free", True)
    if not isinstance(free, bool):
        raise _bad(join_path(path, "free"), free, "a boolean (YAML true/false)")
    spec["bkg_free"] = free
    kind = node.get("kind", "uniform")
    if kind not in _KINDS["background"]:
        raise _bad(join_path(path, "kind"), kind, "one of " + ", ".join(_KINDS["background"]))
    spec["bkg_prior"] = kind
    if kind == "gamma":
        pair = _gamma_pair({k: node[k] for k in ("k", "theta") if k in node}, path, "")
        out.update(pair[0])
        spec["bkg_gamma"] = pair[1]
    elif "k" in node or "theta" in node:
        raise ParameterError(f"{path}: k and theta need kind: gamma (the uniform prior has "
                             "only a range).")
    for key, low in (("range", 0.0), ("norm", 0.0)):
        if node.get(key) is not None:
            spec[key] = out[key] = _named_values(node[key], join_path(path, key), low,
                                                 pair=key == "range")
    for key in ("nodes", "smoothness"):  # time nodes (checked against the data later)
        if node.get(key) is not None:
            spec[key] = out[key] = plain_value(node[key])
    return out


def _named_values(value: Any, path: str, low: float, pair: bool) -> Any:
    """``{name: [lo, hi]}`` / ``[lo, hi]`` (ranges) or ``{name: x}`` / ``x`` (norms), checked."""
    def one(v, sub):
        if not pair:
            return _real(v, sub, low)
        if not isinstance(v, Sequence) or isinstance(v, str) or len(v) != 2:
            raise _bad(sub, v, "a list [lower, upper] of two numbers, lower < upper")
        lo, hi = _real(v[0], sub, low), _real(v[1], sub, low, inf=True)
        if not lo < hi:
            raise _bad(sub, v, "a list [lower, upper] of two numbers, lower < upper")
        return [lo, hi]

    if isinstance(value, Mapping):
        return {str(k): one(v, join_path(path, k)) for k, v in value.items()}
    return one(value, path)


def check_prior_section(prior: Any, path: str = "prior", *,
                        keys: Sequence[str] = SAMPLER_KEYS) -> dict:
    """Validate a ``prior:`` section; a normalised copy in the same layout (numbers as float).

    Parameters
    ----------
    prior
        The section (mapping, ``Parameters`` or ``None``).
    path
        Its colon path, for the messages (e.g. ``deconvolution:parameter:prior``).
    keys
        :data:`MAP_KEYS` (MAP_RL, MAP_gradient) or :data:`SAMPLER_KEYS` (sampler files).

    Raises
    ------
    ParameterError
        Unknown key, missing coefficient, wrong type or unit; the message names the path.

    Examples
    --------
    >>> check_prior_section({"TSV": {"coefficient": 1}}, keys=MAP_KEYS)
    {'TSV': {'coefficient': 1.0}}
    """
    return _read(prior, path, keys)[0]


def _build_field(values: dict, nside: int | None, nest: bool, n_energy: int | None,
                 path: str):
    if nside is None or n_energy is None:
        raise ParameterError(f"{path}:image: kind field needs a HEALPix image (nside) and its "
                             "number of energy bins; the model axes have none.")
    return build_field(int(nside), int(n_energy), lmax=values.get("lmax"), nest=bool(nest),
                       offset_loc=math.log(values["offset_flux"]),
                       offset_scale=values["offset_scale"],
                       amplitude=values["amplitude_median"],
                       amplitude_scale=values["amplitude_scale"],
                       slope=values["slope_mean"], slope_scale=values["slope_scale"])


def prior_options(prior: Any, *, bkg_names: Sequence[str], nside: int | None,
                  nest: bool = False, model_unit_to_flux: float = 1.0, path: str = "prior",
                  keys: Sequence[str] = SAMPLER_KEYS, n_energy: int | None = None) -> dict:
    """:func:`~probdeconv.forward.posterior.make_config` options of a ``prior:`` section.

    Parameters
    ----------
    prior
        The section (either layout, see the module docstring).
    bkg_names
        The backgrounds of the data, in the order of the configuration (for ``range`` and
        ``norm`` given by name).
    nside, nest
        The image's HEALPix grid (TSV needs its neighbours).
    n_energy
        Energy bins of the image (``kind: field`` needs them).
    model_unit_to_flux
        Factor from the model's unit to ``cm-2 s-1 sr-1`` (an entropy reference without a
        unit is in the model's unit).
    path, keys
        As in :func:`check_prior_section`.

    Returns
    -------
    dict
        ``image_prior``, ``gamma`` / ``lognormal``, ``priors`` (``{"TSV": TSVPrior, ...}``),
        ``bkg_prior``, ``bkg_gamma`` and, from a ``background:`` section, ``bkg_free``,
        ``bkg_range``, ``bkg_norm`` (lists in the order of ``bkg_names``).  With
        :data:`MAP_KEYS` the background set-up other than its gamma prior is the caller's
        (``background_normalization_optimization``).
    """
    _, spec = _read(prior, path, keys)
    names = list(bkg_names)
    opts: dict[str, Any] = {"image_prior": spec["image_prior"]}
    if spec["image_prior"] == "gamma":
        opts["gamma"] = spec.get("gamma", (1.0, math.inf))
    elif spec["image_prior"] == "lognormal":
        opts["lognormal"] = spec["lognormal"]
    elif spec["image_prior"] == "field":
        opts["field"] = _build_field(spec["field"], nside, nest, n_energy, path)
    if "bkg_prior" in spec:
        opts["bkg_prior"] = spec["bkg_prior"]
        if spec["bkg_prior"] == "gamma":
            opts["bkg_gamma"] = spec.get("bkg_gamma", (1.0, math.inf))
    if "bkg_free" in spec:
        opts["bkg_free"] = spec["bkg_free"]
    for key in ("nodes", "smoothness"):  # resolved by shell.problem (needs the data)
        if spec.get(key) is not None:
            opts[f"bkg_{key}"] = spec[key]
    for key, default, opt in (("range", [0.0, 100.0], "bkg_range"), ("norm", 1.0, "bkg_norm")):
        value = spec.get(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise ParameterError(f"{path}:background:{key}: unknown background(s) "
                                     f"{unknown}; the data have {names}.")
            value = [value.get(k, default) for k in names]
        else:
            value = [value] * len(names)
        opts[opt] = value
    priors = {}
    for name, value in spec["others"].items():
        if nside is None:
            raise ParameterError(f"{join_path(path, name)}: needs a HEALPix image (nside); "
                                 "the model axes have none.")
        if name == "TSV":
            priors[name] = TSVPrior.build(int(nside), value, bool(nest))
        else:
            c, ref, has_unit = value
            priors[name] = EntropyPrior(c, jnp.asarray(ref * (1.0 if has_unit else
                                                               model_unit_to_flux)))
    opts["priors"] = priors
    return opts
