"""A :class:`~probdeconv.forward.problem.Problem` from cosipy-style data interfaces.

The shell knows the data interfaces (:class:`~.dataif.DataIF_COSI_DC2`) and their histogram
axes; it hands the array side over as forward datasets and the image axes as a plain
:class:`~probdeconv.forward.problem.ImageGrid`, so that the samplers see arrays only and
:mod:`probdeconv.results` can draw maps with units again.

- :func:`problem_from_dataif`: data interfaces + :func:`~probdeconv.forward.posterior.make_config`
  options;
- :func:`problem_from_parameters`: data interfaces + a YAML ``prior:`` section
  (:func:`probdeconv.config.priors.prior_options`).

Examples
--------
>>> from probdeconv.simulate import simulate
>>> data = simulate(sky="points", nside=2, seed=1, phi_bins=6).dataif()
>>> p = problem_from_dataif([data], bkg_free=True, bkg_range={"bkg": [0.1, 10]})
>>> p.bkg_names, p.model_shape, p.grid.nside
(('bkg',), (48, 1), 2)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import astropy.units as u
import numpy as np
from histpy import Histogram

from ..config.priors import prior_options
from ..errors import DataError, ParameterError
from ..forward.posterior import make_config
from ..forward.problem import ImageGrid, Problem
from .bkg_nodes import BackgroundNodes
from .source_components import source_component_keys, source_options

__all__ = ["image_grid", "problem_from_dataif", "problem_from_parameters"]

logger = logging.getLogger(__name__)


def image_grid(axes: Any) -> ImageGrid:
    """The plain :class:`ImageGrid` of ``[lb, Ei]`` histogram axes (HEALPix × energy)."""
    lb, energy = axes[0], axes[1]
    nside = getattr(lb, "nside", None)
    frame = getattr(lb, "coordsys", None)
    coordsys = None if frame is None else str(getattr(frame, "name", frame))
    edges = energy.edges
    unit = str(edges.unit) if isinstance(edges, u.Quantity) else ""
    values = edges.value if isinstance(edges, u.Quantity) else np.asarray(edges)
    return ImageGrid(nside=None if nside is None else int(nside),
                     energy_edges=tuple(float(e) for e in values), energy_unit=unit,
                     nest=bool(getattr(lb, "is_nested", getattr(lb, "nest", False))),
                     coordsys=coordsys, labels=(str(lb.label), str(energy.label)),
                     energy_scale=str(getattr(energy, "axis_scale", "linear")))


def _background_keys(data: Sequence[Any]) -> list[str]:
    keys: list[str] = []
    for d in data:
        keys += [k for k in d.keys_bkg_models() if k not in keys]
    return keys


def problem_from_dataif(data: Sequence[Any], *, mask: Any = None, **config_options: Any
                        ) -> Problem:
    """A problem from cosipy-style data interfaces (:class:`DataIF_COSI_DC2`).

    Parameters
    ----------
    data
        List of data interfaces (one dataset each); their background keys are merged in
        order of appearance into the global background list.
    mask
        ``[lb, Ei]`` bool histogram or array, True = free pixel.
    **config_options
        :func:`~probdeconv.forward.posterior.make_config` options (``image_prior``,
        ``gamma``, ``priors``, ``bkg_free``, ``bkg_range``, ...). ``bkg_norm`` and
        ``bkg_range`` may also be dicts keyed by background name.

    Raises
    ------
    DataError
        No data interface, or data interfaces with different model axes.
    ParameterError
        Unknown background names or bad prior options.
    """
    data = list(data) if isinstance(data, Sequence) else [data]
    if not data:
        raise DataError("problem_from_dataif: no data interface given.")
    keys = _background_keys(data)
    config_options = source_options(data, config_options)  # point sources: their defaults
    nodes = BackgroundNodes.build(data, keys, config_options.pop("bkg_nodes", None),
                                  config_options.pop("bkg_smoothness", None),
                                  path="prior:background")
    datasets = tuple(nodes.forward(d, i) for i, d in enumerate(data))
    axes = data[0].model_axes
    shape = tuple(int(n) for n in axes.nbins)
    for i, d in enumerate(data[1:], 1):
        if tuple(int(n) for n in d.model_axes.nbins) != shape:
            raise DataError(f"problem_from_dataif: dataset #{i} ({d.name!r}) has model axes "
                            f"{tuple(d.model_axes.nbins)}, dataset #0 {shape}.")
    for key in ("bkg_norm", "bkg_range"):
        value = config_options.get(key)
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(keys))
            if unknown:
                raise ParameterError(f"{key}: unknown background(s) {unknown}; the data "
                                     f"have {keys}.")
            default = 1.0 if key == "bkg_norm" else [0.0, 100.0]
            config_options[key] = [value.get(k, default) for k in keys]
    if nodes.has_nodes:  # one normalisation per node: a background's values for each node
        for key in ("bkg_norm", "bkg_range"):
            value = config_options.get(key)
            if value is not None and len(value) == len(keys):
                config_options[key] = [value[keys.index(nodes.template_of(n))]
                                       for n in nodes.names]
        keys = list(nodes.names)
    config_options.setdefault("bkg_walk", nodes.walk(datasets[0].counts.dtype))
    if mask is not None:
        if isinstance(mask, Histogram):
            mask = mask.to_dense() if mask.is_sparse else mask
            mask = getattr(mask.contents, "value", mask.contents)
        config_options["mask"] = np.asarray(mask, dtype=bool)
    config_options.setdefault("n_bkg", len(keys))
    config_options.setdefault("dtype", datasets[0].counts.dtype)
    config = make_config(shape, **config_options)
    return Problem(datasets, config, image_grid(axes), bkg_names=tuple(keys),
                   dataset_names=tuple(str(d.name) for d in data))


def problem_from_parameters(data: Sequence[Any], prior: Mapping | None, *, mask: Any = None
                            ) -> Problem:
    """A problem from data interfaces and a YAML ``prior:`` section (either layout of
    :mod:`probdeconv.config.priors`).

    Examples
    --------
    >>> from probdeconv.simulate import simulate
    >>> data = simulate(sky="points", nside=2, seed=1, phi_bins=6).dataif()
    >>> p = problem_from_parameters([data], {"image": {"kind": "gamma", "k": 2.0,
    ...                                                "theta": 1e-3}, "TSV": {"coefficient": 1.0}})
    >>> p.config.image_prior, list(p.config.priors), p.config.bkg_free
    ('gamma', ['TSV'], True)
    """
    data = list(data)
    grid = image_grid(data[0].model_axes)
    bkgs = [k for k in _background_keys(data) if k not in source_component_keys(data)]
    opts = prior_options(prior, bkg_names=bkgs, nside=grid.nside,
                         nest=grid.nest, n_energy=len(grid.energy_edges) - 1)
    return problem_from_dataif(data, mask=mask, **source_options(data, opts, bkgs))
