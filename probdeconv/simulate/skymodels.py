"""Sky models for simulations: point sources, Gaussian diffuse components, isotropic flux.

A component is a small frozen dataclass with a total ``flux`` (ph cm-2 s-1, summed over
the ``Ei`` axis) and a spectrum: a ``line`` energy (keV; all flux in the ``Ei`` bin
holding it) or, without a line, a power law of photon ``index`` spread over the ``Ei``
bins.  :func:`sky_image` renders components on the HEALPix grid (galactic, ring) as an
:class:`~probdeconv.shell.allsky_image.AllSkyImageModel` in cm-2 s-1 sr-1:

- :class:`PointSource`: all its flux in the pixel holding ``(l, b)``;
- :class:`GaussianSource`: ``exp(-Δl²/2σ_l² − (b−b0)²/2σ_b²)`` (Δl wrapped to ±180
  deg), integrated over each pixel on a grid 8 times finer — a bulge (equal widths) or
  a disk (wide in longitude, narrow in latitude);
- :class:`IsotropicSource`: flux / 4π everywhere.

Presets (:data:`PRESETS`): ``bulge511`` (511 keV bulge and disk, three point sources)
and ``points`` (four point sources).

Examples
--------
>>> import astropy.units as u
>>> img = sky_image(preset("points"), nside=4, energy_edges=[509.0, 513.0])
>>> img.axes.labels.tolist(), img.unit == u.Unit("cm-2 s-1 sr-1")
(['lb', 'Ei'], True)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import astropy.units as u
import healpy as hp
import numpy as np

from probdeconv.errors import ParameterError
from probdeconv.shell.allsky_image import AllSkyImageModel

__all__ = [
    "PointSource",
    "GaussianSource",
    "IsotropicSource",
    "SkyComponent",
    "PRESETS",
    "preset",
    "components_from_config",
    "component_images",
    "sky_image",
]

logger = logging.getLogger(__name__)

_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
_OVERSAMPLE = 8


@dataclasses.dataclass(frozen=True)
class _Component:
    kind: ClassVar[str] = ""
    name: str
    flux: float  # ph cm-2 s-1 over the Ei axis
    line: float | None = None  # keV
    index: float = 2.0

    def spectrum(self, energy_edges: np.ndarray) -> np.ndarray:
        """Fraction of the flux in each ``Ei`` bin (sums to 1)."""
        e = np.asarray(energy_edges, dtype=np.float64)
        if self.line is not None:
            k = np.searchsorted(e, self.line, side="right") - 1
            if not 0 <= k < e.size - 1:
                raise ParameterError(
                    f"sky component {self.name!r}: line at {self.line} keV lies outside the "
                    f"Ei axis [{e[0]}, {e[-1]}] keV; widen energy_edges or drop 'line'.")
            out = np.zeros(e.size - 1)
            out[k] = 1.0
            return out
        if np.isclose(self.index, 1.0):
            part = np.diff(np.log(e))
        else:
            part = np.diff(e ** (1.0 - self.index)) / (1.0 - self.index)
        return part / part.sum()

    def shape(self, nside: int) -> np.ndarray:
        """Fraction of the flux in each HEALPix pixel (ring scheme, sums to 1)."""
        raise NotImplementedError(f"{type(self).__name__} must define shape")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class PointSource(_Component):
    """A point source at galactic ``(l, b)`` (deg).

    Examples
    --------
    >>> src = PointSource("crab", flux=1e-3, l=184.56, b=-5.78)
    >>> int(np.argmax(src.shape(1))), float(src.shape(1).sum())
    (6, 1.0)
    """

    kind: ClassVar[str] = "point"
    l: float = 0.0
    b: float = 0.0

    def shape(self, nside: int) -> np.ndarray:
        out = np.zeros(hp.nside2npix(nside))
        out[hp.ang2pix(nside, self.l, self.b, lonlat=True)] = 1.0
        return out


@dataclasses.dataclass(frozen=True)
class GaussianSource(_Component):
    """A 2-D Gaussian in galactic longitude and latitude, FWHMs in deg.

    Examples
    --------
    >>> bulge = GaussianSource("bulge", flux=1e-3, line=511.0, fwhm_l=8.0, fwhm_b=8.0)
    >>> s = bulge.shape(4)
    >>> lon, lat = hp.pix2ang(4, int(np.argmax(s)), lonlat=True)
    >>> bool(abs(lat) < 15 and min(lon, 360 - lon) < 15), round(float(s.sum()), 12)
    (True, 1.0)
    """

    kind: ClassVar[str] = "gaussian"
    l: float = 0.0
    b: float = 0.0
    fwhm_l: float = 8.0
    fwhm_b: float = 8.0

    def shape(self, nside: int) -> np.ndarray:
        fine = nside * _OVERSAMPLE
        lon, lat = hp.pix2ang(fine, np.arange(hp.nside2npix(fine)), nest=True, lonlat=True)
        dl = (lon - self.l + 180.0) % 360.0 - 180.0
        z = (dl / (self.fwhm_l / _FWHM)) ** 2 + ((lat - self.b) / (self.fwhm_b / _FWHM)) ** 2
        per_nest = np.exp(-0.5 * z).reshape(-1, _OVERSAMPLE**2).sum(axis=1)
        out = per_nest[hp.ring2nest(nside, np.arange(hp.nside2npix(nside)))]
        return out / out.sum()


@dataclasses.dataclass(frozen=True)
class IsotropicSource(_Component):
    """The same intensity from every direction.

    Examples
    --------
    >>> float(IsotropicSource("iso", flux=1.0).shape(1)[0]) == 1 / 12
    True
    """

    kind: ClassVar[str] = "isotropic"

    def shape(self, nside: int) -> np.ndarray:
        npix = hp.nside2npix(nside)
        return np.full(npix, 1.0 / npix)


SkyComponent = PointSource | GaussianSource | IsotropicSource
_KINDS = {cls.kind: cls for cls in (PointSource, GaussianSource, IsotropicSource)}

PRESETS: dict[str, tuple[dict[str, Any], ...]] = {
    "bulge511": (
        {"kind": "gaussian", "name": "bulge", "flux": 1.0e-3, "line": 511.0,
         "l": 0.0, "b": 0.0, "fwhm_l": 8.0, "fwhm_b": 8.0},
        {"kind": "gaussian", "name": "disk", "flux": 1.7e-3, "line": 511.0,
         "l": 0.0, "b": 0.0, "fwhm_l": 120.0, "fwhm_b": 6.0},
        {"kind": "point", "name": "crab_like", "flux": 1.5e-4, "l": 184.56, "b": -5.78},
        {"kind": "point", "name": "cygx1_like", "flux": 1.5e-4, "l": 71.33, "b": 3.07},
        {"kind": "point", "name": "cena_like", "flux": 1.5e-4, "l": 309.52, "b": 19.42},
    ),
    "points": (
        {"kind": "point", "name": "crab_like", "flux": 3.0e-4, "l": 184.56, "b": -5.78},
        {"kind": "point", "name": "cygx1_like", "flux": 3.0e-4, "l": 71.33, "b": 3.07},
        {"kind": "point", "name": "cena_like", "flux": 3.0e-4, "l": 309.52, "b": 19.42},
        {"kind": "point", "name": "vela_like", "flux": 3.0e-4, "l": 263.55, "b": -2.79},
    ),
}
"""Named skies; fluxes in ph cm-2 s-1 over the Ei axis (see the module docstring)."""


def _component(spec: Mapping[str, Any] | SkyComponent, default_name: str) -> SkyComponent:
    if isinstance(spec, (PointSource, GaussianSource, IsotropicSource)):
        return spec
    if not isinstance(spec, Mapping):
        raise ParameterError(f"sky component: got {spec!r}; expected a dict with 'kind' "
                             f"({sorted(_KINDS)}), 'name', 'flux' and the shape parameters.")
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in _KINDS:
        raise ParameterError(f"sky component {spec.get('name')!r}: kind {kind!r} is not one "
                             f"of {sorted(_KINDS)}.")
    cls = _KINDS[kind]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(spec) - set(fields))
    if unknown or "flux" not in spec:
        raise ParameterError(f"sky component {spec.get('name')!r} ({kind}): unknown keys "
                             f"{unknown} or no 'flux'; valid keys: {fields}.")
    spec.setdefault("name", default_name)
    comp = cls(**spec)
    if not (np.isfinite(comp.flux) and comp.flux >= 0):
        raise ParameterError(f"sky component {comp.name!r}: flux {comp.flux!r} must be a "
                             "finite number >= 0 (ph cm-2 s-1).")
    return comp


def preset(name: str) -> tuple[SkyComponent, ...]:
    """Components of a named sky (:data:`PRESETS`)."""
    if name not in PRESETS:
        raise ParameterError(f"sky preset {name!r} is not known; choose one of "
                             f"{sorted(PRESETS)} or pass a list of component dicts.")
    return tuple(_component(c, f"{name}{i}") for i, c in enumerate(PRESETS[name]))


def components_from_config(sky: str | Sequence[Mapping[str, Any] | SkyComponent],
                           flux_scale: float = 1.0) -> tuple[SkyComponent, ...]:
    """Resolve a preset name or a list of component dicts, fluxes scaled by ``flux_scale``."""
    if isinstance(sky, str):
        comps = preset(sky)
    else:
        comps = tuple(_component(c, f"component{i}") for i, c in enumerate(sky))
    names = [c.name for c in comps]
    if len(set(names)) != len(names):
        raise ParameterError(f"sky components need unique names; got {names}.")
    return tuple(dataclasses.replace(c, flux=c.flux * flux_scale) for c in comps)


def component_images(components: Sequence[SkyComponent], nside: int,
                     energy_edges: Sequence[float]) -> dict[str, np.ndarray]:
    """Intensity ``[lb, Ei]`` (cm-2 s-1 sr-1) of each component, by name."""
    pixel_area = 4 * np.pi / hp.nside2npix(nside)
    return {c.name: c.flux * np.outer(c.shape(nside), c.spectrum(np.asarray(energy_edges)))
            / pixel_area for c in components}


def sky_image(components: Sequence[SkyComponent], nside: int,
              energy_edges: Sequence[float]) -> AllSkyImageModel:
    """Sum of the components as an :class:`AllSkyImageModel` (galactic, ring)."""
    image = AllSkyImageModel(nside, np.asarray(energy_edges, dtype=np.float64) * u.keV)
    total = sum(component_images(components, nside, energy_edges).values())
    image[:] = np.asarray(total) * image.unit
    return image
