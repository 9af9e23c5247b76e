"""Sky models: :class:`ModelBase` and the HEALPix × energy :class:`AllSkyImageModel`.

Both are ``histpy.Histogram`` subclasses, as cosipy's: a cosipy user's histograms and
ours combine both ways (``Histogram(model.axes, contents=...)``, ``model + h``,
``model == model.copy()``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import astropy.units as u
import healpy as hp
import numpy as np
from histpy import Axes, Axis, HealpixAxis, Histogram

from ..config.parameters import Parameters
from ..errors import DataError, ParameterError
from ..io.histpy_h5 import read_histogram
from ..units import FLUX_UNIT, FLUX_UNIT_NAME

__all__ = ["ModelBase", "AllSkyImageModel"]

logger = logging.getLogger(__name__)



def _param(parameter: Any) -> Parameters:
    return parameter if isinstance(parameter, Parameters) else Parameters(parameter)


class ModelBase(Histogram, ABC):
    """Base of sky models: a ``histpy.Histogram`` that can be built and filled from parameters.

    Parameters are those of ``histpy.Histogram``.
    """

    def __init__(self, edges, contents=None, sumw2=None, labels=None, axis_scale=None,
                 sparse=None, unit=None):
        super().__init__(edges, contents=contents, sumw2=sumw2, labels=labels,
                         axis_scale=axis_scale, sparse=sparse, unit=unit)

    @classmethod
    def _from_histogram(cls, h: Histogram):
        """An instance of ``cls`` holding the (dense) contents of ``h``, not copied."""
        new = cls.__new__(cls)
        h = h.to_dense() if h.is_sparse else h
        Histogram.__init__(new, h.axes, contents=h.full_contents, sumw2=h.sumw2, unit=h.unit,
                           copy_contents=False)
        return new

    @classmethod
    @abstractmethod
    def instantiate_from_parameters(cls, parameter) -> ModelBase:
        """Build an empty model from the ``model_definition:property`` parameters."""
        raise NotImplementedError(f"{cls.__name__} must define instantiate_from_parameters")

    @abstractmethod
    def set_values_from_parameters(self, parameter) -> None:
        """Fill the model from the ``model_definition:initialization`` parameters."""
        raise NotImplementedError(f"{type(self).__name__} must define "
                                  "set_values_from_parameters")

    def mask_pixels(self, mask, fill_value=0):
        """A copy with the pixels where ``mask`` is False set to ``fill_value``.

        Parameters
        ----------
        mask : histpy.Histogram or array of bool
            Same shape as the model; True keeps a pixel.
        fill_value : float or Quantity
        """
        if isinstance(mask, Histogram):
            mask = mask.to_dense() if mask.is_sparse else mask
            m = np.asarray(getattr(mask.contents, "value", mask.contents), dtype=bool)
        else:
            m = np.asarray(mask, dtype=bool)
        if m.shape != self.axes.shape:
            raise DataError(f"mask has shape {m.shape}; expected {self.axes.shape} "
                            f"(the model axes {self.axes.labels.tolist()}).")
        if isinstance(fill_value, u.Quantity):
            fill_value = fill_value.to_value(self.unit) if self.unit is not None else \
                fill_value.value
        new = self.copy()
        values = np.where(m, np.asarray(self), fill_value)
        new[:] = values * self.unit if self.unit is not None else values
        return new


class AllSkyImageModel(ModelBase):
    """Photon flux maps ``[lb, Ei]`` in energy bands: a HEALPix axis times an energy axis.

    Parameters
    ----------
    nside : int
        HEALPix NSIDE.
    energy_edges : Quantity
        Energy bin edges (converted to keV).
    scheme : {"ring", "nested"}
    coordsys : str
        Frame of the map (default ``"galactic"``).
    label_image, label_energy : str
        Axis labels (``"lb"``, ``"Ei"``).
    unit : str or Unit
        Flux unit, default ``cm-2 s-1 sr-1``.

    Examples
    --------
    >>> import astropy.units as u
    >>> m = AllSkyImageModel(1, [100, 1000] * u.keV)
    >>> m[:] = 1.0 * m.unit
    >>> m.axes.shape, type(m.copy()).__name__
    ((12, 1), 'AllSkyImageModel')
    """

    def __init__(self, nside, energy_edges, scheme="ring", coordsys="galactic",
                 label_image="lb", label_energy="Ei", unit="1/(s*cm*cm*sr)"):
        if not isinstance(energy_edges, u.Quantity):
            raise DataError(f"energy_edges: got {energy_edges!r} without a unit; give a "
                            "Quantity, e.g. [100, 1000] * u.keV.")
        if energy_edges.unit != u.keV:
            energy_edges = energy_edges.to(u.keV)
        axes = Axes([HealpixAxis(nside=int(nside), scheme=scheme, coordsys=coordsys,
                                 label=label_image),
                     Axis(energy_edges, label=label_energy, scale="log")], copy_axes=False)
        super().__init__(axes, sparse=False, unit=unit)

    @property
    def nside(self) -> int:
        """HEALPix NSIDE of the image axis."""
        return int(self.axes[0].nside)

    @property
    def energy_edges(self) -> u.Quantity:
        """Energy bin edges (keV)."""
        return self.axes[1].edges

    @classmethod
    def from_histogram(cls, h) -> AllSkyImageModel:
        """An :class:`AllSkyImageModel` holding the contents of a ``[HEALPix, energy]`` histogram.

        Raises
        ------
        DataError
            ``h`` is not a histpy Histogram with a HEALPix first axis and two axes.
        """
        if not isinstance(h, Histogram):
            raise DataError(f"an all-sky image is a histpy Histogram [HEALPix, energy]; got a "
                            f"{type(h).__name__}.")
        if h.ndim != 2 or not isinstance(h.axes[0], HealpixAxis):
            raise DataError(f"an all-sky image has axes [HEALPix, energy]; got "
                            f"{h.axes.labels.tolist()}.")
        return h if type(h) is cls and not h.is_sparse else cls._from_histogram(h)

    @classmethod
    def open(cls, filename: str | Path, name: str = "hist") -> AllSkyImageModel:
        """Read an image written by cosipy or probdeconv (group ``name``).

        Raises
        ------
        FileFormatError
            Missing or unreadable file or group (the message names them).
        DataError
            The histogram is not ``[HEALPix, energy]``.
        """
        return cls.from_histogram(read_histogram(filename, name=name))

    @classmethod
    def instantiate_from_parameters(cls, parameter) -> AllSkyImageModel:
        """Build from ``{nside, energy_edges: {value, unit}, scheme, coordinate, unit}``."""
        p = _param(parameter)
        try:
            edges = np.asarray(p["energy_edges:value"], dtype=float) * u.Unit(
                p["energy_edges:unit"])
            return cls(nside=p["nside"], energy_edges=edges, scheme=p.get("scheme", "ring"),
                       coordsys=p.get("coordinate", "galactic"),
                       unit=u.Unit(p.get("unit", FLUX_UNIT_NAME)))
        except (KeyError, TypeError) as exc:
            raise ParameterError(f"model_definition:property: {exc}; expected nside, "
                                 "energy_edges {value, unit}, scheme, coordinate, unit.") from exc

    def set_values_from_parameters(self, parameter) -> None:
        """Fill per energy bin; ``algorithm: flat`` with ``parameter: {value: [...], unit}``."""
        p = _param(parameter)
        algorithm = p.get("algorithm")
        if algorithm != "flat":
            raise ParameterError(f"model_definition:initialization:algorithm: {algorithm!r} is "
                                 "not known; valid choices: ['flat'].")
        values = list(p["parameter:value"])
        unit = u.Unit(p.get("parameter:unit", str(self.unit)))
        n = self.axes[1].nbins
        if len(values) != n:
            raise ParameterError(
                f"model_definition:initialization:parameter:value: {len(values)} value(s) for "
                f"{n} energy bin(s); give one flat value per energy bin.")
        for idx, value in enumerate(values):
            self[:, idx] = value * unit

    def set_values_from_extendedmodel(self, extendedmodel) -> None:
        """Fill from an ``astromodels`` extended source (spatial shape × integrated spectrum)."""
        try:
            import astromodels  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "set_values_from_extendedmodel needs astromodels, which is not installed; "
                "`pip install astromodels`, or fill the image directly (model[:] = ...)."
            ) from exc
        from scipy.integrate import quad

        ebins = self.axes[1]
        lo, hi = ebins.lower_bounds.to_value(u.keV), ebins.upper_bounds.to_value(u.keV)
        spectrum = extendedmodel.spectrum.main.shape
        flux = np.array([quad(lambda e: float(spectrum(e)), a, b)[0] for a, b in zip(lo, hi)])
        lon, lat = self.axes[0].pix2ang(np.arange(self.axes[0].npix), lonlat=True)
        shape = np.asarray(extendedmodel.spatial_shape(lon, lat), dtype=float)  # 1/sr
        self[:] = np.outer(shape, flux) * FLUX_UNIT

    def smoothing(self, fwhm=None, sigma=None) -> AllSkyImageModel:
        """Gaussian smoothing of each energy bin on the sphere (healpy).

        Parameters
        ----------
        fwhm : Quantity (angle), default 0 deg
        sigma : Quantity (angle), overrides ``fwhm`` (``fwhm = 2.354820 σ``)
        """
        if fwhm is None:
            fwhm = 0.0 * u.deg
        if sigma is not None:
            fwhm = 2.354820 * sigma
        if not isinstance(fwhm, u.Quantity) or not fwhm.unit.is_equivalent(u.rad):
            raise DataError(f"smoothing: fwhm/sigma must be an angle Quantity (e.g. 2 * u.deg); "
                            f"got {fwhm!r}.")
        new = self.copy()
        values = np.asarray(self)
        out = np.empty_like(values)
        nest = bool(self.axes[0].is_nested)
        for i in range(values.shape[1]):
            m = values[:, i]
            if nest:
                m = hp.reorder(m, n2r=True)
            s = hp.smoothing(m, fwhm=fwhm.to_value(u.rad))
            out[:, i] = hp.reorder(s, r2n=True) if nest else s
        new[:] = out * self.unit if self.unit is not None else out
        return new
