"""Histogram axes: bin edges with units and labels, HEALPix axes, and collections of axes.

Mirrors the parts of ``histpy``'s axes that cosipy scripts touch.  ``Axis.__eq__``
compares edge values and unit only (labels and scale are ignored).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import astropy.units as u
import healpy as hp
import numpy as np

from probdeconv.errors import AxisMismatchError, DataError, ParameterError

__all__ = ["Axis", "HealpixAxis", "Axes", "normalize_scheme"]

logger = logging.getLogger(__name__)

_SCALES = ("linear", "log", "symmetric")


def _short(a: Any) -> str:
    """Abbreviated text of an array for error messages."""
    return np.array2string(np.asarray(a), threshold=12, edgeitems=3, precision=6)


def _as_unit(unit: Any, what: str) -> u.UnitBase | None:
    if unit is None:
        return None
    try:
        return u.Unit(unit)
    except (ValueError, TypeError) as err:
        raise DataError(f"{what}: {unit!r} is not a unit astropy understands ({err}); "
                        "pass e.g. 'keV', 'cm2 s' or an astropy Unit") from err


class Axis:
    """One histogram axis defined by its bin edges.

    Parameters
    ----------
    edges : array_like or astropy.units.Quantity
        Strictly increasing 1-D bin edges (at least two).  A Quantity supplies the
        unit, or is converted to ``unit`` when that is given as well.
    label : str, optional
        Axis name, e.g. ``'Em'``.
    scale : {'linear', 'log', 'symmetric'}
        How bin centres are computed (arithmetic midpoint, geometric midpoint, or
        midpoint except the first centre which is the lower edge).
    unit : str or astropy.units.UnitBase, optional
        Unit of the edges.

    Notes
    -----
    Two axes are equal when their edge values and units are equal; label and scale
    are ignored.
    """

    def __init__(self, edges: Any, label: str | None = None, scale: str = "linear",
                 unit: Any = None) -> None:
        where = f"Axis {label!r}"
        unit = _as_unit(unit, where)
        if isinstance(edges, u.Quantity):
            if unit is None:
                unit = edges.unit
            try:
                edges = edges.to_value(unit)
            except u.UnitsError as err:
                raise DataError(f"{where}: edges in {edges.unit} cannot be expressed in "
                                f"{unit}; give edges and unit that agree") from err
        arr = np.array(edges, copy=True)
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float64)
        else:
            raise DataError(f"{where}: edges must be numbers, got dtype {arr.dtype}; "
                            "pass a 1-D array of increasing numbers")
        if arr.ndim != 1 or arr.size < 2:
            raise DataError(f"{where}: edges must be a 1-D array with at least 2 entries, "
                            f"got shape {arr.shape}")
        if not np.all(np.isfinite(arr)) or np.any(np.diff(arr) <= 0):
            raise DataError(f"{where}: edges must be finite and strictly increasing, got "
                            f"{_short(arr)}; sort them and remove duplicates")
        self._edges = arr
        self._unit = unit
        self.label = label
        self.scale = scale

    @property
    def label(self) -> str | None:
        """Axis name (settable)."""
        return self._label

    @label.setter
    def label(self, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise DataError(f"Axis label must be a string or None, got {value!r}")
        self._label = value

    @property
    def scale(self) -> str:
        """Bin-centre mode: 'linear', 'log' or 'symmetric' (settable)."""
        return self._scale

    @scale.setter
    def scale(self, value: str) -> None:
        if value not in _SCALES:
            raise ParameterError(f"Axis {self._label!r}: scale {value!r} is not one of "
                                 f"{_SCALES}")
        if value == "log" and self._edges[0] <= 0:
            raise ParameterError(f"Axis {self._label!r}: scale 'log' needs positive edges, "
                                 f"but the first edge is {self._edges[0]}; use 'linear'")
        self._scale = value

    @property
    def unit(self) -> u.UnitBase | None:
        """Unit of the edges, or None."""
        return self._unit

    def _q(self, values: np.ndarray) -> Any:
        return values if self._unit is None else u.Quantity(values, self._unit)

    @property
    def edges(self) -> Any:
        """Bin edges (read-only view; a Quantity when the axis has a unit)."""
        view = self._edges.view()
        view.flags.writeable = False
        return self._q(view)

    @property
    def lower_bounds(self) -> Any:
        """Lower edge of each bin."""
        return self._q(self._edges[:-1].copy())

    @property
    def upper_bounds(self) -> Any:
        """Upper edge of each bin."""
        return self._q(self._edges[1:].copy())

    @property
    def lo_lim(self) -> Any:
        """Lowest edge."""
        return self._q(self._edges[0])

    @property
    def hi_lim(self) -> Any:
        """Highest edge."""
        return self._q(self._edges[-1])

    @property
    def centers(self) -> Any:
        """Bin centres according to :attr:`scale`."""
        e = self._edges.astype(np.float64)
        if self._scale == "log":
            c = np.sqrt(e[1:] * e[:-1])
        else:
            c = 0.5 * (e[1:] + e[:-1])
            if self._scale == "symmetric":
                c[0] = e[0]
        return self._q(c)

    @property
    def widths(self) -> Any:
        """Bin widths."""
        return self._q(np.diff(self._edges))

    @property
    def nbins(self) -> int:
        """Number of bins."""
        return int(self._edges.size - 1)

    def __len__(self) -> int:
        return self.nbins

    def find_bin(self, value: Any) -> Any:
        """Bin index of ``value``: -1 below the first edge, ``nbins`` at or above the last.

        A plain number is taken to be in the axis unit; a Quantity is converted.
        """
        if isinstance(value, u.Quantity):
            try:
                value = value.to_value(self._unit or u.dimensionless_unscaled)
            except u.UnitsError as err:
                raise DataError(f"Axis {self._label!r}: value {value} cannot be expressed in "
                                f"the axis unit {self._unit}") from err
        return np.searchsorted(self._edges, value, side="right") - 1

    def copy(self) -> Axis:
        """Independent copy."""
        return Axis(self._edges, label=self._label, scale=self._scale, unit=self._unit)

    def _key(self) -> tuple:
        return ("axis",)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Axis):
            return NotImplemented
        return (self._key() == other._key() and self._unit == other._unit
                and self._edges.size == other._edges.size
                and bool(np.all(self._edges == other._edges)))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        unit = f", unit='{self._unit}'" if self._unit is not None else ""
        return f"{type(self).__name__}({_short(self._edges)}, label={self._label!r}{unit})"


def _describe(a: Axis) -> str:
    """One-line description of an axis for error messages."""
    unit = f" {a.unit}" if a.unit is not None else ""
    extra = f", nside={a.nside}, {a.scheme}" if isinstance(a, HealpixAxis) else ""
    return f"{type(a).__name__} {a.label!r} (edges {_short(a._edges)}{unit}{extra})"


def normalize_scheme(scheme: str) -> str:
    """``'RING'`` or ``'NESTED'`` for any spelling of a HEALPix scheme (``nest`` too)."""
    s = str(scheme).strip().upper()
    if s == "RING":
        return "RING"
    if s in ("NEST", "NESTED"):
        return "NESTED"
    raise ParameterError(f"HEALPix scheme {scheme!r} is not 'RING' or 'NESTED' (any case)")


class HealpixAxis(Axis):
    """Axis whose bins are HEALPix pixels (integer edges ``0..npix`` or a subset).

    Parameters
    ----------
    nside : int, optional
        HEALPix NSIDE.  If omitted, ``edges`` must be ``0, 1, ..., npix``.
    scheme : str
        'ring' or 'nested' ('nest'), any case; stored as 'RING' / 'NESTED'.
    edges : array_like of int, optional
        Pixel edges; default one bin per pixel.
    label : str, optional
        Axis name.
    coordsys : str, optional
        Coordinate frame name, e.g. 'galactic' or 'spacecraftframe'.

    Notes
    -----
    Equality also requires the same ``nside`` and ``scheme``; ``coordsys`` is ignored.
    """

    def __init__(self, nside: int | None = None, scheme: str = "ring", edges: Any = None,
                 label: str | None = None, coordsys: Any = None) -> None:
        where = f"HealpixAxis {label!r}"
        self._scheme = normalize_scheme(scheme)
        if edges is not None:
            e = np.asarray(edges)
            if e.dtype.kind == "f" and np.all(np.isfinite(e)) and np.all(e == np.round(e)):
                e = e.astype(np.int64)
            if e.dtype.kind not in "iu":
                raise DataError(f"{where}: edges must be integer pixel indices, got "
                                f"{_short(e)} (dtype {e.dtype})")
            edges = e
        if nside is None:
            if edges is None:
                raise ParameterError(f"{where}: give nside or edges (0..npix)")
            npix = edges.size - 1
            if not np.array_equal(edges, np.arange(npix + 1)):
                raise DataError(f"{where}: without nside the edges must be 0..npix, got "
                                f"{_short(edges)}; pass nside")
            try:
                nside = hp.npix2nside(npix)
            except ValueError as err:
                raise DataError(f"{where}: {npix} pixels is not 12*nside**2 for any "
                                "nside; pass nside") from err
        nside = int(nside)
        if not hp.isnsideok(nside, nest=self._scheme == "NESTED"):
            raise ParameterError(f"{where}: nside={nside} is not valid for scheme "
                                 f"{self._scheme} (NESTED needs a power of 2)")
        self._nside = nside
        if edges is None:
            edges = np.arange(self.npix + 1, dtype=np.int64)
        super().__init__(edges, label=label)
        if self._edges[0] < 0 or self._edges[-1] > self.npix:
            raise DataError(f"{where}: edges must lie in 0..{self.npix} for nside={nside}, "
                            f"got {_short(self._edges)}")
        if coordsys is not None and not isinstance(coordsys, str):
            coordsys = getattr(coordsys, "name", None) or str(coordsys)
        self.coordsys: str | None = coordsys

    @property
    def nside(self) -> int:
        """HEALPix NSIDE."""
        return self._nside

    @property
    def npix(self) -> int:
        """Number of pixels of the full sphere, ``12 * nside**2``."""
        return 12 * self._nside**2

    @property
    def scheme(self) -> str:
        """'RING' or 'NESTED'."""
        return self._scheme

    @property
    def nest(self) -> bool:
        """True for the NESTED scheme."""
        return self._scheme == "NESTED"

    def pixarea(self) -> u.Quantity:
        """Area of one pixel, ``4 pi / npix`` sr."""
        return u.Quantity(4 * np.pi / self.npix, u.sr)

    def pix2ang(self, pix: Any, lonlat: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centre directions via :func:`healpy.pix2ang` (degrees when ``lonlat``)."""
        return hp.pix2ang(self._nside, pix, nest=self.nest, lonlat=lonlat)

    def copy(self) -> HealpixAxis:
        """Independent copy."""
        return HealpixAxis(self._nside, self._scheme, self._edges, self._label, self.coordsys)

    def _key(self) -> tuple:
        return ("healpix", self._nside, self._scheme)

    def __repr__(self) -> str:
        return (f"HealpixAxis(nside={self._nside}, scheme='{self._scheme}', "
                f"nbins={self.nbins}, label={self._label!r}, coordsys={self.coordsys!r})")


class Axes:
    """Ordered collection of :class:`Axis` with unique labels.

    Parameters
    ----------
    axes : Axes, Axis or iterable of Axis
        The axes (not copied).
    """

    def __init__(self, axes: Axes | Axis | Iterable[Axis]) -> None:
        if isinstance(axes, Axis):
            axes = [axes]
        items = list(axes)
        if not items:
            raise DataError("Axes needs at least one axis, got an empty list")
        for i, a in enumerate(items):
            if not isinstance(a, Axis):
                raise DataError(f"Axes entry {i} is a {type(a).__name__}, expected an Axis; "
                                "wrap bin edges with Axis(edges, label=...)")
        labels = [a.label for a in items if a.label is not None]
        dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
        if dupes:
            raise DataError(f"Axes labels must be unique, {dupes} repeat in "
                            f"{[a.label for a in items]}; relabel the axes")
        self._axes: list[Axis] = items

    def label_to_index(self, key: Any) -> Any:
        """Index of an axis given its label or index; a list gives a tuple of indices."""
        if isinstance(key, (list, tuple)):
            return tuple(self.label_to_index(k) for k in key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not -self.ndim <= key < self.ndim:
                raise AxisMismatchError(f"axis index {key} is out of range for {self.ndim} "
                                        f"axes {self.labels}")
            return int(key) % self.ndim
        for i, a in enumerate(self._axes):
            if a.label == key:
                return i
        raise AxisMismatchError(f"no axis labelled {key!r}; available labels: "
                                f"{list(self.labels)}")

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return Axes(self._axes[key])
        idx = self.label_to_index(key)
        if isinstance(idx, tuple):
            return Axes([self._axes[i] for i in idx])
        return self._axes[idx]

    def __iter__(self):
        return iter(self._axes)

    def __len__(self) -> int:
        return len(self._axes)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self._axes)

    @property
    def labels(self) -> tuple:
        """Axis labels in order."""
        return tuple(a.label for a in self._axes)

    @property
    def nbins(self) -> tuple[int, ...]:
        """Number of bins of each axis."""
        return tuple(a.nbins for a in self._axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Same as :attr:`nbins`."""
        return self.nbins

    def copy(self) -> Axes:
        """Deep copy."""
        return Axes([a.copy() for a in self._axes])

    def first_mismatch(self, other: Axes) -> str | None:
        """Describe the first axis that differs from ``other``; None when all agree."""
        if self.ndim != other.ndim:
            return (f"{self.ndim} axes {self.labels} vs {other.ndim} axes {other.labels}")
        for i, (a, b) in enumerate(zip(self._axes, other._axes)):
            if a != b:
                return f"axis {i} differs: {_describe(a)} vs {_describe(b)}"
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Axes):
            return NotImplemented
        return self.first_mismatch(other) is None

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Axes([" + ", ".join(repr(a) for a in self._axes) + "])"
