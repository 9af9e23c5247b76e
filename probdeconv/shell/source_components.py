"""Point-source fluxes as linear components of the data interfaces and of the posterior.

:func:`point_source_components` turns point sources (:mod:`probdeconv.shell.point_sources`)
into one template per (source, ``Ei`` bin) of a dataset, keyed ``name@E<bin>``, with an
initial flux and a default range; the data interface appends them after its backgrounds
(:meth:`~probdeconv.shell.dataif.DataIF_COSI_DC2.with_point_sources`).  The EM family
fits them with the background normalisations (the multiplicative EM update, each with its
own exposure ``Σ_i T_i``), and the NumPyro model samples them in the ``bkg_norm`` site with
a flat prior on their range (:func:`source_options`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import forward as fm
from ..errors import DataError, ParameterError
from ..forward.point_sources import add_components, point_source_templates
from ..io.memory import require_memory
from .point_sources import (
    KEY_SEPARATOR,
    PointSourceSpec,
    component_keys,
    parse_point_sources,
    source_weights,
)

__all__ = ["SourceComponents", "point_source_components", "source_component_keys",
           "component_start", "component_range", "components_free", "source_options"]


class SourceComponents(NamedTuple):
    """What :func:`point_source_components` adds to a dataset."""

    sources: tuple[PointSourceSpec, ...]
    keys: tuple[str, ...]  # source-major, one per (source, Ei bin)
    templates: np.ndarray  # [S * Ei, t, i] expected counts per unit flux
    forward: fm.Dataset  # the dataset with the templates after its components
    defaults: dict  # {key: (initial flux, [low, high])} in ph cm-2 s-1


def point_source_components(point_sources: Any, forward: fm.Dataset, *,
                            keys: Sequence[str], local_axis: Any, model_axis: Any,
                            ccm: tuple[np.ndarray, np.ndarray] | None = None,
                            attitudes: Any = None, name: str = "dataset") -> SourceComponents:
    """Templates, keys and defaults of point sources for one dataset.

    The initial flux of a source's energy bin is its catalogue value, else the flux that
    makes a hundredth of the counts shared by all sources (EM raises a flux the data ask
    for quickly, and lowers a too high one slowly); its default range is ``[0, 10 F]`` with
    ``F`` the flux that alone would give every count (a flat prior on that range in the
    samplers).

    Raises
    ------
    ParameterError
        Bad positions or fluxes, names that clash with existing components.
    DataError
        A source the data never see (its template is zero).
    """
    sources = tuple(parse_point_sources(point_sources))
    if not sources:
        raise ParameterError(f"dataset {name!r}: no point source given.")
    n_e = forward.n_energies
    new_keys = component_keys(sources, n_e)
    clash = sorted(set(new_keys) & set(keys))
    if clash:
        raise ParameterError(f"dataset {name!r}: point-source components {clash} exist "
                             "already; add each source once, or rename it.")
    n_t, n_i = forward.counts.shape
    size = len(new_keys) * n_t * n_i * np.dtype(forward.counts.dtype).itemsize
    require_memory(3 * size + forward.backgrounds.nbytes,
                   f"dataset {name!r}: {len(sources)} point source(s) x {n_e} Ei bin(s) of "
                   f"templates [t {n_t}, i {n_i}] (dense, held by the data interface and "
                   "the forward dataset)",
                   "fit fewer sources or energy bins at once, or bin the data coarser")
    w = source_weights(sources, n_bins=forward.n_time, local_nside=int(local_axis.nside),
                       local_nest=bool(local_axis.is_nested), ccm=ccm,
                       model_nside=getattr(model_axis, "nside", None),
                       model_nest=bool(getattr(model_axis, "is_nested", False)),
                       attitudes=attitudes)
    t = point_source_templates(forward, w)  # [S, Ei, t, i]
    flat = t.reshape(len(new_keys), *forward.counts.shape)
    totals = np.asarray(flat.sum(axis=(1, 2)), dtype=np.float64)
    blind = [k for k, s in zip(new_keys, totals) if not s > 0]
    if blind:
        raise DataError(f"dataset {name!r}: point-source components {blind} expect no count "
                        "at all (the source is never in view in that Ei bin); remove them.")
    n_counts = max(float(np.sum(forward.counts)), 1.0)
    defaults = {}
    for j, key in enumerate(new_keys):
        s, e = divmod(j, n_e)
        full = n_counts / totals[j]
        given = sources[s].flux
        if given is not None and len(given) not in (1, n_e):
            raise ParameterError(f"point source {sources[s].name!r}: {len(given)} initial "
                                 f"fluxes for {n_e} Ei bins; give one per bin or one for all.")
        start = 0.01 * full / len(new_keys) if given is None else given[min(e, len(given) - 1)]
        defaults[key] = (float(start), [0.0, max(10.0 * full, 10.0 * float(start))])
    return SourceComponents(sources, tuple(new_keys), np.asarray(flat),
                            add_components(forward, flat, len(keys)), defaults)


def source_component_keys(datasets: Sequence[Any]) -> list[str]:
    """Keys of the point-source flux components of data interfaces, in order."""
    keys: list[str] = []
    for d in datasets:
        for s in getattr(d, "point_sources", ()):
            keys += [k for k in d.keys_bkg_models() if k.startswith(s.name + KEY_SEPARATOR)
                     and k not in keys]
    return keys


def component_start(datasets: Sequence[Any], key: str) -> float:
    """Initial value of component ``key``: the first data interface that has it decides."""
    for d in datasets:
        if key in d.keys_bkg_models() and hasattr(d, "default_norm"):
            return float(d.default_norm(key))
    return 1.0


def component_range(datasets: Sequence[Any], key: str) -> list[float]:
    """Default range of component ``key`` (``[0, 100]`` for a background)."""
    for d in datasets:
        if key in d.keys_bkg_models() and hasattr(d, "default_norm_range"):
            return [float(x) for x in d.default_norm_range(key)]
    return [0.0, 100.0]


def components_free(datasets: Sequence[Any], backgrounds_free: bool, where: str) -> bool:
    """Whether the linear components are fitted: always with point sources (their fluxes
    are free), which then needs the backgrounds free too (one switch fits them all).

    Raises
    ------
    ParameterError
        Point sources with fixed background normalisations.
    """
    ps = set(source_component_keys(datasets))
    if not ps or backgrounds_free:
        return bool(backgrounds_free)
    bkgs = sorted({k for d in datasets for k in d.keys_bkg_models()} - ps)
    if bkgs:
        raise ParameterError(f"{where}: the data have point sources, whose fluxes are fitted "
                             f"with the background normalisations {bkgs}, but these are "
                             "fixed; activate their fitting (give a narrow range to keep one "
                             "nearly fixed).")
    return True


def source_options(datasets: Sequence[Any], options: Mapping[str, Any],
                   backgrounds: Sequence[str] | None = None) -> dict:
    """``make_config`` options with the point sources' defaults filled in.

    ``bkg_free`` becomes True (:func:`components_free`); ``bkg_range`` / ``bkg_norm``
    become lists over every component of the data (in order of appearance), a source's
    component taking its default range and initial flux unless given by name.  A list
    given for ``backgrounds`` (the components other than point sources, as
    :func:`probdeconv.config.priors.prior_options` returns them) is read in that order;
    a list over every component is kept as given.
    """
    ps = source_component_keys(datasets)
    out = dict(options)
    if not ps:
        return out
    keys: list[str] = []
    for d in datasets:
        keys += [k for k in d.keys_bkg_models() if k not in keys]
    if backgrounds is None:
        backgrounds = [k for k in keys if k not in ps]
    out["bkg_free"] = components_free(datasets, bool(out.get("bkg_free", False)),
                                      "prior:background:free (bkg_free)")
    for key, default, fixed in (("bkg_range", component_range, [0.0, 100.0]),
                                ("bkg_norm", component_start, 1.0)):
        value = out.get(key)
        if value is not None and not isinstance(value, Mapping):
            if len(value) != len(backgrounds):
                continue  # one value per component, point sources included: as given
            value = dict(zip(backgrounds, value))
        value = dict(value or {})
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise ParameterError(f"{key}: unknown component(s) {unknown}; the data have "
                                 f"{keys}.")
        out[key] = [value.get(k, default(datasets, k) if k in ps else fixed) for k in keys]
    return out
