"""Simulated point sources at their exact directions (not drawn into a pixel of the truth).

``SimulationConfig.point_sources`` lists sources ``{l, b, flux[, name, line, index]}`` (flux
in ph cm-2 s-1 over the ``Ei`` axis, spread over the bins like a
:class:`~probdeconv.simulate.skymodels.PointSource`'s).  Their expected counts are the
response at the direction in spacecraft coordinates of every ScAtt bin, interpolated over
the four neighbouring ``NuLambda`` pixels and weighted by the bin's dwell time
(:func:`probdeconv.shell.point_sources.attitude_weights`): the model a fit with
``point_sources`` uses, so that the fitted fluxes can be compared with the true ones.

Examples
--------
>>> from probdeconv.simulate import SimulationConfig
>>> cfg = SimulationConfig(point_sources=[{"l": 10.0, "b": 5.0, "flux": 1e-3}])
>>> [(s.name, s.l, s.flux) for s in simulated_point_sources(cfg)]
[('ps0', 10.0, 0.001)]
>>> point_source_truth(cfg)
{'ps0@E0': 0.001}
"""

from __future__ import annotations

from typing import Any

import healpy as hp
import numpy as np

from .. import forward as fm
from ..errors import ParameterError
from ..forward.point_sources import point_source_templates
from ..shell.point_sources import PointSourceSpec, attitude_weights, component_keys
from .config import SimulationConfig
from .skymodels import PointSource
from .survey import ScAttBins

__all__ = ["simulated_point_sources", "scatt_attitudes", "point_source_counts",
           "point_source_truth", "point_source_from_text"]


def simulated_point_sources(cfg: SimulationConfig) -> tuple[PointSource, ...]:
    """The configuration's point sources as :class:`PointSource` (fluxes × ``flux_scale``).

    Raises
    ------
    ParameterError
        Unknown keys, a flux that is not a number >= 0, a position that is not a valid
        galactic coordinate, repeated names.
    """
    out = []
    for i, spec in enumerate(cfg.point_sources):
        spec = {"name": f"ps{i}", **spec}
        try:
            src = PointSource(**spec)
        except TypeError as err:
            raise ParameterError(f"point source #{i} {spec!r}: {err}; valid keys: name, l, b, "
                                 "flux, line, index.") from err
        if not (np.isfinite(src.flux) and src.flux >= 0):
            raise ParameterError(f"point source {src.name!r}: flux {src.flux!r}; expected a "
                                 "number >= 0 (ph cm-2 s-1).")
        if not (np.isfinite(src.l) and np.isfinite(src.b) and abs(src.b) <= 90):
            raise ParameterError(f"point source {src.name!r}: (l, b) = ({src.l}, {src.b}) deg "
                                 "is not a valid galactic coordinate (-90 <= b <= 90).")
        out.append(src)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ParameterError(f"SimulationConfig.point_sources: names {names} repeat.")
    return tuple(src.__class__(**{**src.__dict__, "flux": src.flux * cfg.flux_scale})
                 for src in out)


def scatt_attitudes(bins: ScAttBins) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(matrices, row_bin, row_weight)`` of ScAtt bins: one averaged attitude per bin
    (columns x, y = z × x, z in galactic coordinates) and its dwell time."""
    x, z = np.asarray(bins.x), np.asarray(bins.z)
    m = np.stack([x, np.cross(z, x), z], axis=-1)
    return m, np.arange(bins.n_bins), np.asarray(bins.dwell, dtype=np.float64)


def _fluxes(cfg: SimulationConfig) -> tuple[list[PointSourceSpec], np.ndarray]:
    srcs = simulated_point_sources(cfg)
    edges = np.asarray(cfg.energy_edges, dtype=np.float64)
    specs = [PointSourceSpec(s.name, s.l % 360.0, s.b) for s in srcs]
    flux = np.array([s.flux * s.spectrum(edges) for s in srcs]).reshape(len(srcs), -1)
    return specs, flux  # [S, Ei]


def point_source_counts(cfg: SimulationConfig, ds: fm.Dataset, bins: ScAttBins) -> np.ndarray:
    """Expected counts ``[t, i]`` of the configuration's point sources in ``ds``."""
    specs, flux = _fluxes(cfg)
    if not specs:
        return np.zeros(ds.counts.shape)
    nside_local = hp.npix2nside(ds.n_local_pixels)
    w = attitude_weights(specs, *scatt_attitudes(bins), ds.n_time, nside_local)
    t = np.asarray(point_source_templates(ds, w))  # [S, Ei, t, i]
    return np.einsum("se,seti->ti", flux, t)


def point_source_truth(cfg: SimulationConfig) -> dict[str, Any]:
    """True flux (ph cm-2 s-1) of every point-source component, keyed as a fit names them
    (``name@E<bin>``)."""
    specs, flux = _fluxes(cfg)
    return dict(zip(component_keys(specs, flux.shape[1]), (float(f) for f in flux.ravel())))


def point_source_from_text(text: str) -> dict[str, Any]:
    """``"l,b,flux[,name]"`` (deg, deg, ph cm-2 s-1) as a ``point_sources`` entry.

    Examples
    --------
    >>> point_source_from_text("10,5,1e-3,bright")
    {'l': 10.0, 'b': 5.0, 'flux': 0.001, 'name': 'bright'}
    """
    parts = [p.strip() for p in str(text).split(",")]
    bad = ParameterError(f"--point-source {text!r}: expected l,b,flux[,name] (deg, deg, "
                         "ph cm-2 s-1), e.g. 10,5,1e-3 or 10,5,1e-3,bright.")
    if len(parts) not in (3, 4):
        raise bad
    try:
        out: dict[str, Any] = {"l": float(parts[0]), "b": float(parts[1]),
                               "flux": float(parts[2])}
    except ValueError as err:
        raise bad from err
    if len(parts) == 4:
        out["name"] = parts[3]
    return out
