"""Time nodes of the backgrounds, from parameters and data interfaces to forward datasets.

A parameter file asks for them beside cosipy's background keys::

    background_normalization_optimization:
      activate: true
      range: {bkg: [0.5, 2.0]}     # a background's range applies to each of its nodes
      nodes: 10                    # every background: 10 groups of consecutive time bins
      smoothness: 0.05             # MAP_RL, MAP_gradient: random walk on log b, 5 % per node

``nodes`` is a count, bin edges in time-bin index (``[0, 5, 20, 40]``), ``{time: [t0, ...,
tn]}`` (edges in the unit of the data's ``Time`` axis, moved to the nearest bin edge), or a
mapping from background name to one of those; ``smoothness`` is a number or a mapping
from background name to a number.  A background with ``n > 1`` nodes becomes ``n``
normalisations named ``"<bkg>:node<j>"`` (:func:`probdeconv.forward.nodes.node_names`).

:class:`BackgroundNodes` holds the resolved plan: the global names, the node of every
time bin per dataset and background, and the smoothness per background.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import astropy.units as u
import jax.numpy as jnp
import numpy as np
from histpy import Histogram

from ..errors import ParameterError
from ..forward import Dataset, expected_counts
from ..forward.nodes import NodeWalkPrior, node_names, node_of_time, walk_prior, with_time_nodes

__all__ = ["BackgroundNodes", "run_expectation"]

logger = logging.getLogger(__name__)


def _per_background(value: Any, keys: Sequence[str], path: str) -> dict[str, Any]:
    """A setting for every background: one value for all, or a mapping by name."""
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping) and set(value) - {"time", "unit"}:
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise ParameterError(f"{path}: names background(s) {unknown}, which no dataset "
                                 f"has; the backgrounds are {list(keys)}.")
        return dict(value)
    return {k: value for k in keys}


def _backgrounds_only(data: Sequence[Any], keys: Sequence[str]) -> list[str]:
    """The keys that are backgrounds, not the flux components of point sources (data
    interfaces with ``point_sources`` name those components after each source)."""
    sources = [str(s.name) for d in data for s in getattr(d, "point_sources", ())]
    return [k for k in keys if not any(k.startswith(name) for name in sources)]


def _time_edges(data: Any) -> tuple[int, np.ndarray | None]:
    """Number of time bins of a data interface and, for a ``Time`` axis, its edges."""
    axes = data.data_axes
    if len(axes) != 4:  # galactic data space: one time bin
        return 1, None
    axis = axes[0]
    edges = axis.edges
    edges = np.asarray(getattr(edges, "value", edges), dtype=np.float64)
    return int(axis.nbins), (edges if str(axis.label) == "Time" else None)


@dataclasses.dataclass(frozen=True)
class BackgroundNodes:
    """The resolved time nodes of a fit's backgrounds.

    Attributes
    ----------
    templates : tuple of str
        The background names of the data interfaces.
    names : tuple of str
        The global normalisations: each template's node names, in template order.
    groups : dict
        Template name -> its node names.
    maps : tuple of dict
        Per dataset: template name -> ``[n_time]`` node of each time bin.
    smoothness : dict
        Template name -> relative random-walk step (only those given).
    """

    templates: tuple[str, ...]
    names: tuple[str, ...]
    groups: dict
    maps: tuple
    smoothness: dict

    @classmethod
    def build(cls, data: Sequence[Any], keys: Sequence[str], nodes: Any = None,
              smoothness: Any = None, *, path: str = "nodes") -> BackgroundNodes:
        """Resolve ``nodes`` / ``smoothness`` settings against the data interfaces.

        Raises
        ------
        ParameterError
            A bad count or edges (see :func:`~probdeconv.forward.nodes.node_of_time`),
            unknown background names, a non-positive smoothness, or a background whose
            datasets give it different numbers of nodes.
        """
        keys = list(keys)
        spec = _per_background(nodes, _backgrounds_only(data, keys), f"{path}:nodes")
        smooth = {}
        for k, s in _per_background(smoothness, keys, f"{path}:smoothness").items():
            if s is None:
                continue
            ok = isinstance(s, numbers.Real) and not isinstance(s, bool) and np.isfinite(s)
            if not ok or s <= 0:
                raise ParameterError(f"{path}:smoothness:{k}: got {s!r}; expected a finite "
                                     "relative step > 0 between neighbouring nodes (e.g. 0.05).")
            smooth[k] = float(s)
        maps = []
        count: dict[str, int] = {}
        for d in data if spec else ():  # (no nodes asked: the data are not looked at)
            n_time, edges = _time_edges(d)
            per = {}
            for k in d.keys_bkg_models():
                if k not in spec:
                    continue
                where = f"{path}:nodes" + (f":{k}" if isinstance(nodes, Mapping) and k in
                                           nodes else "") + f" (dataset {d.name!r})"
                per[k] = node_of_time(n_time, spec[k], time_edges=edges, what=where)
                n = int(per[k].max()) + 1
                if count.setdefault(k, n) != n:
                    raise ParameterError(f"{where}: gives background {k!r} {n} node(s), another "
                                         f"dataset {count[k]}; give node edges in time so that "
                                         "every dataset has the same nodes.")
            maps.append(per)
        maps = maps or [{} for _ in data]
        groups = {k: node_names(k, count.get(k, 1)) for k in keys}
        names = tuple(n for k in keys for n in groups[k])
        nodes_used = {k: c for k, c in count.items() if c > 1}
        if nodes_used:
            logger.info("background time nodes: %s", nodes_used)
        for k in smooth:
            if count.get(k, 1) == 1:
                logger.warning("%s:smoothness:%s: background %r has one node; the smoothness "
                               "prior has no effect.", path, k, k)
        return cls(tuple(keys), names, groups, tuple(maps), smooth)

    @property
    def has_nodes(self) -> bool:
        """True when some background has more than one node."""
        return len(self.names) > len(self.templates)

    def template_of(self, name: str) -> str:
        """The background (template) name of a global normalisation name."""
        for k, group in self.groups.items():
            if name in group:
                return k
        raise ParameterError(f"{name!r} is not a background normalisation; known: "
                             f"{list(self.names)}.")

    def per_node(self, values: Mapping[str, Any], default: Any) -> dict[str, Any]:
        """A setting keyed by background or node name, for every node (node name first)."""
        return {n: values.get(n, values.get(self.template_of(n), default)) for n in self.names}

    def forward(self, data: Any, index: int) -> Dataset:
        """Dataset ``index``'s forward arrays with its backgrounds split into their nodes."""
        if not self.has_nodes:
            return data.to_forward(list(self.names))
        keys = data.keys_bkg_models()
        glob = [[self.names.index(n) for n in self.groups[k]] for k in keys]
        return with_time_nodes(data.forward_dataset, [self.maps[index].get(k) for k in keys],
                               glob)

    def walk(self, dtype: Any = "float64") -> NodeWalkPrior | None:
        """The random-walk prior between neighbouring nodes (``None`` without one)."""
        groups = [[self.names.index(n) for n in self.groups[k]] for k in self.templates]
        return walk_prior(groups, [self.smoothness.get(k) for k in self.templates], dtype)

    def expectation(self, data: Any, index: int, model: Any, dict_bkg_norm: Mapping
                    ) -> Histogram:
        """``data.calc_expectation(model, dict_bkg_norm)`` with the normalisations named per
        node (:attr:`names`), on the data axes of dataset ``index``."""
        if not self.has_nodes:
            return data.calc_expectation(model, dict(dict_bkg_norm))
        ds = self.forward(data, index)
        values = model.contents
        if isinstance(values, u.Quantity):
            values = values.to_value(u.Unit("cm-2 s-1 sr-1"))
        b = jnp.asarray([float(dict_bkg_norm[n]) for n in self.names], ds.counts.dtype)
        e = expected_counts(ds, jnp.asarray(np.asarray(values), ds.counts.dtype), b)
        return Histogram(data.data_axes, contents=np.array(e).reshape(data.data_axes.shape),
                         copy_contents=False)


def run_expectation(data: Any, model: Any, dict_bkg_norm: Mapping, nodes: Any = None
                    ) -> Histogram:
    """Expected counts of one data interface at a run's result: ``model`` and the fitted
    normalisations (named per node when the run's ``nodes`` setting made nodes)."""
    plan = BackgroundNodes.build([data], data.keys_bkg_models(), nodes)
    return plan.expectation(data, 0, model, dict_bkg_norm)
