"""Binned data containers compatible with the histograms cosipy users already have.

The classes here mirror the parts of ``histpy`` that cosipy scripts touch (axes with
bin edges and units, HEALPix axes, dense or sparse contents with a physical unit,
projection and arithmetic) and read and write histpy's HDF5 layout through
:mod:`probdeconv.io.histpy_h5`.  They are an independent implementation with no
dependency on histpy, numba or pydata ``sparse``.

Differences from histpy worth knowing:

* ``Axis.__eq__`` compares edge values and unit only (labels and scale are ignored).
* Under/overflow bins are not kept: contents given with ``nbins + 2`` bins on an axis
  have the outer bins removed and the axis remembered as overflow-tracked, so that
  writing pads it with zero-filled under/overflow bins again.
* ``h[...]`` is the same as ``h[:]`` (in-range bins only).
* Arithmetic results carry no ``sumw2``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np

from probdeconv.axes import Axes, Axis, HealpixAxis, _as_unit
from probdeconv.coo import CooContents, _coalesce, _is_coo_like, _to_coo
from probdeconv.errors import DataError, ParameterError
from probdeconv.histogram_arithmetic import HistogramArithmetic

__all__ = ["Axis", "HealpixAxis", "Axes", "CooContents", "Histogram", "as_histogram"]

logger = logging.getLogger(__name__)

_SAME = object()  # sentinel: keep the unit of the histogram

def _make_axes(spec: Any, labels: Any, axis_scale: Any) -> Axes:
    if isinstance(spec, Axes):
        items = list(spec)
    elif isinstance(spec, Axis):
        items = [spec]
    elif isinstance(spec, u.Quantity) or (
            isinstance(spec, (list, tuple, np.ndarray)) and len(spec) > 0
            and np.ndim(spec[0]) == 0 and not isinstance(spec[0], Axis)):
        items = [spec]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise DataError(f"Histogram axes: cannot build axes from a {type(spec).__name__}; "
                        "pass Axes, a list of Axis, or bin edges")
    n = len(items)
    labels = [None] * n if labels is None else (
        [labels] if isinstance(labels, str) else list(labels))
    scales = [axis_scale] * n if axis_scale is None or isinstance(axis_scale, str) else list(
        axis_scale)
    if len(labels) != n or len(scales) != n:
        raise DataError(f"Histogram axes: {n} axes but {len(labels)} labels and "
                        f"{len(scales)} axis_scale entries were given")
    out = []
    for item, lb, sc in zip(items, labels, scales):
        ax = item.copy() if isinstance(item, Axis) else Axis(item)
        if lb is not None:
            ax.label = lb
        if sc is not None:
            ax.scale = sc
        out.append(ax)
    return Axes(out)


class Histogram(HistogramArithmetic):
    """N-dimensional histogram with optional physical unit and sparse storage.

    Parameters
    ----------
    edges_or_axes : Axes, list of Axis, Axis, list of edge arrays, or edges
        Binning.  Axes are copied.
    contents : ndarray, Quantity, CooContents, optional
        Bin values, shape ``axes.nbins`` (or ``nbins + 2`` on every axis, including
        under/overflow bins, which are dropped).  Default zeros.
    unit : str or Unit, optional
        Unit of the contents; a Quantity ``contents`` is converted to it.
    labels, axis_scale : optional
        Override labels / scales of the axes (one per axis).
    sparse : bool, optional
        Force sparse (True) or dense (False) storage; default keeps the given format.
    sumw2 : ndarray, CooContents, True, optional
        Sum of squared weights, same shape as ``contents`` (unit is ``unit**2``);
        ``True`` starts it at zero.
    track_overflow : bool or sequence of bool, optional
        Which axes of ``contents`` include under/overflow bins; default: none, or all
        when the shape is ``nbins + 2`` everywhere.
    copy : bool
        Copy ``contents`` (default True).
    """

    __array_ufunc__ = None  # numpy defers to our reflected operators

    def __init__(self, edges_or_axes: Any, contents: Any = None, unit: Any = None,
                 labels: Any = None, axis_scale: Any = None, sparse: bool | None = None,
                 sumw2: Any = None, *, track_overflow: Any = None, copy: bool = True) -> None:
        self._axes = _make_axes(edges_or_axes, labels, axis_scale)
        nbins = self._axes.nbins
        unit = _as_unit(unit, "Histogram unit")
        if contents is None:
            track_overflow = False if track_overflow is None else track_overflow
            pad = np.broadcast_to(np.asarray(track_overflow, dtype=np.int64), (len(nbins),))
            contents = np.zeros(tuple(int(b + 2 * t) for b, t in zip(nbins, pad)))
        if isinstance(contents, u.Quantity):
            if unit is None:
                unit = contents.unit
            try:
                contents = contents.to_value(unit)
            except u.UnitsError as err:
                raise DataError(f"Histogram contents in {contents.unit} cannot be converted "
                                f"to the requested unit {unit}") from err
        if _is_coo_like(contents):
            contents = _to_coo(contents)
            if copy:
                contents = contents.copy()
        else:
            contents = np.array(contents, copy=copy or None)
            if contents.dtype.kind not in "biuf":
                raise DataError(f"Histogram contents must be numeric or bool, got dtype "
                                f"{contents.dtype}")
        shape = tuple(contents.shape)
        track = self._resolve_overflow(shape, nbins, track_overflow)
        self._track_overflow = track
        self._unit = unit
        self._values: np.ndarray | None = None
        self._coo: CooContents | None = None
        store = _strip(contents, track)
        if sparse is True and isinstance(store, np.ndarray):
            store = CooContents.from_dense(store)
        elif sparse is False and isinstance(store, CooContents):
            store = store.todense()
        self._set_store(store)
        self._sumw2: np.ndarray | CooContents | None = None
        if sumw2 is True:
            sumw2 = np.zeros(nbins) if not self.is_sparse else CooContents(
                np.zeros((len(nbins), 0)), np.zeros(0), nbins)
        if sumw2 is not None and sumw2 is not False:
            w2 = _to_coo(sumw2) if _is_coo_like(sumw2) else np.array(sumw2, copy=copy or None)
            if tuple(w2.shape) != shape and tuple(w2.shape) != nbins:
                raise DataError(f"Histogram sumw2 has shape {tuple(w2.shape)}, expected the "
                                f"contents shape {shape}")
            w2 = _strip(w2, track if tuple(w2.shape) == shape else (False,) * len(nbins))
            if self.is_sparse and isinstance(w2, np.ndarray):
                w2 = CooContents.from_dense(w2)
            elif not self.is_sparse and isinstance(w2, CooContents):
                w2 = w2.todense()
            self._sumw2 = w2

    @staticmethod
    def _resolve_overflow(shape: tuple, nbins: tuple, track: Any) -> tuple[bool, ...]:
        n = len(nbins)
        if track is None:
            if shape == nbins:
                return (False,) * n
            if len(shape) == n and all(s == b + 2 for s, b in zip(shape, nbins)):
                return (True,) * n
            raise DataError(f"Histogram contents have shape {shape}, expected {nbins} "
                            f"(the axes' nbins) or {tuple(b + 2 for b in nbins)} including "
                            "under/overflow bins; check the axes or the contents")
        t = (bool(track),) * n if np.ndim(track) == 0 else tuple(bool(x) for x in track)
        expect = tuple(b + 2 * x for b, x in zip(nbins, t))
        if len(t) != n or shape != expect:
            raise DataError(f"Histogram contents have shape {shape}, expected {expect} for "
                            f"nbins {nbins} with track_overflow={t}")
        return t

    def _set_store(self, store: np.ndarray | CooContents) -> None:
        if isinstance(store, CooContents):
            self._coo, self._values = store, None
        else:
            self._values, self._coo = store, None

    # ----------------------------------------------------------------- properties
    @property
    def axes(self) -> Axes:
        """The axes."""
        return self._axes

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return self._axes.ndim

    @property
    def nbins(self) -> tuple[int, ...]:
        """Bins per axis."""
        return self._axes.nbins

    shape = nbins

    @property
    def unit(self) -> u.UnitBase | None:
        """Unit of the contents, or None."""
        return self._unit

    @property
    def is_sparse(self) -> bool:
        """True when stored as :class:`CooContents`."""
        return self._coo is not None

    @property
    def track_overflow(self) -> tuple[bool, ...]:
        """Axes written with (zero) under/overflow bins."""
        return self._track_overflow

    @property
    def sumw2(self) -> np.ndarray | CooContents | None:
        """Sum of squared weights (unit ``unit**2``), or None."""
        return self._sumw2

    @property
    def dtype(self) -> np.dtype:
        """Data type of the contents."""
        return self._coo.dtype if self._coo is not None else self._values.dtype

    def _dense(self) -> np.ndarray:
        return self._values if self._coo is None else self._coo.todense()

    def _wrap(self, values: Any) -> Any:
        if self._unit is None:
            return values
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            return u.Quantity(values, self._unit, copy=False)  # a view: writes go through
        return u.Quantity(values, self._unit)

    @property
    def contents(self) -> Any:
        """Dense values (Quantity when a unit is set; a view), or the CooContents if sparse."""
        return self._coo if self._coo is not None else self._wrap(self._values)

    # ------------------------------------------------------------- conversions
    def _new(self, store: Any, unit: Any = _SAME, sumw2: Any = None,
             axes: Axes | None = None, track: tuple[bool, ...] | None = None) -> Histogram:
        new = Histogram(self._axes if axes is None else axes, store,
                        unit=self._unit if unit is _SAME else unit, sumw2=sumw2, copy=False)
        new._track_overflow = self._track_overflow if track is None else track
        return new

    def copy(self) -> Histogram:
        """Deep copy."""
        store = self._coo.copy() if self._coo is not None else self._values.copy()
        w2 = None if self._sumw2 is None else self._sumw2.copy()
        return self._new(store, sumw2=w2)

    def to_dense(self) -> Histogram:
        """Dense copy."""
        w2 = self._sumw2.todense() if isinstance(self._sumw2, CooContents) else self._sumw2
        return self._new(self._dense().copy(), sumw2=None if w2 is None else w2.copy())

    def to_sparse(self) -> Histogram:
        """Sparse copy."""
        if self._coo is not None:
            return self.copy()
        w2 = None if self._sumw2 is None else CooContents.from_dense(self._sumw2)
        return self._new(CooContents.from_dense(self._values), sumw2=w2)

    def to(self, unit: Any) -> Histogram:
        """Copy with contents (and sumw2) converted to ``unit``."""
        target = _as_unit(unit, "Histogram.to")
        try:
            f = (self._unit or u.dimensionless_unscaled).to(target)
        except u.UnitsError as err:
            raise DataError(f"Histogram in {self._unit} cannot be converted to {unit}; "
                            "the units are not equivalent") from err

        def scale(s: Any, k: float) -> Any:
            if isinstance(s, CooContents):
                return CooContents(s.coords.copy(), s.data * k, s.shape, s.fill_value * k)
            return None if s is None else s * k

        store = self._coo if self._coo is not None else self._values
        return self._new(scale(store, f), unit=target, sumw2=scale(self._sumw2, f * f))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self._dense()
        if dtype is not None:
            return a.astype(dtype, copy=bool(copy))
        return a.copy() if copy else a

    # ---------------------------------------------------------------- reductions
    def sum(self, axis: Any = None, dtype: Any = None, out: None = None,
            keepdims: bool = False) -> Any:
        """Sum of the bin values (Quantity when a unit is set).

        Parameters
        ----------
        axis : int, str or sequence of those, optional
            Axes (indices or labels) to sum over; default all.  Use :meth:`project`
            to keep the result a Histogram.
        dtype, out, keepdims
            As for :func:`numpy.sum` (``out`` is not supported), so ``np.sum(h)`` works.
        """
        if out is not None:
            raise ParameterError("Histogram.sum(out=...) is not supported; use the result")
        if axis is None and dtype is None and not keepdims:
            total = self._coo.sum() if self._coo is not None else self._values.sum()
            return self._wrap(total)
        idx = None if axis is None else self._axes.label_to_index(
            list(axis) if isinstance(axis, (list, tuple)) else axis)
        return self._wrap(np.sum(self._dense(), axis=idx, dtype=dtype, keepdims=keepdims))

    def project(self, *labels: Any) -> Histogram:
        """Sum over all axes except ``labels``; the result axes follow the given order."""
        if len(labels) == 1 and isinstance(labels[0], (list, tuple)):
            labels = tuple(labels[0])
        if not labels:
            raise ParameterError(f"project() needs at least one axis label out of "
                                 f"{list(self._axes.labels)}")
        keep = self._axes.label_to_index(list(labels))
        if len(set(keep)) != len(keep):
            raise ParameterError(f"project({list(labels)}): an axis is named twice")
        axes = Axes([self._axes[i].copy() for i in keep])

        def reduce(store: Any) -> Any:
            if isinstance(store, CooContents) and store.fill_value == 0:
                shape = tuple(store.shape[i] for i in keep)
                flat = np.ravel_multi_index(tuple(store.coords[list(keep)]), shape)
                uniq, data = _coalesce(flat, store.data)
                return CooContents(np.array(np.unravel_index(uniq, shape)).reshape(
                    len(keep), -1), data, shape)
            dense = store.todense() if isinstance(store, CooContents) else store
            others = tuple(i for i in range(self.ndim) if i not in keep)
            summed = dense.sum(axis=others) if others else dense
            order = sorted(keep)
            return np.transpose(summed, [order.index(i) for i in keep])

        store = self._coo if self._coo is not None else self._values
        w2 = None if self._sumw2 is None else reduce(self._sumw2)
        return self._new(reduce(store), sumw2=w2, axes=axes,
                         track=tuple(self._track_overflow[i] for i in keep))

    # ------------------------------------------------------------------ indexing
    def __getitem__(self, key: Any) -> Any:
        return self._wrap(self._dense()[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._coo is not None:
            raise DataError("cannot assign into a sparse Histogram; call h = h.to_dense() first")
        if isinstance(value, Histogram):
            value = value[:]
        if isinstance(value, u.Quantity):
            target = self._unit or u.dimensionless_unscaled
            try:
                value = value.to_value(target)
            except u.UnitsError as err:
                raise DataError(f"cannot assign a value in {value.unit} to a Histogram in "
                                f"{self._unit}; convert it first") from err
        self._values[key] = value

    # ------------------------------------------------------------------------ io
    def write(self, path: str | Path, name: str = "hist", overwrite: bool = False) -> None:
        """Write to group ``name`` of an HDF5 file in histpy's layout."""
        from probdeconv.io.histpy_h5 import write_histogram

        write_histogram(self, path, name=name, overwrite=overwrite)

    @classmethod
    def open(cls, path: str | Path, name: str = "hist") -> Histogram:
        """Read group ``name`` of an HDF5 file written by histpy, cosipy or probdeconv."""
        from probdeconv.io.histpy_h5 import read_histogram

        return read_histogram(path, name=name)

    def __repr__(self) -> str:
        axes = ", ".join(f"{a.label}({a.nbins})" for a in self._axes)
        fmt = f"sparse nnz={self._coo.nnz}" if self._coo is not None else "dense"
        unit = None if self._unit is None else str(self._unit)
        return f"Histogram(axes=[{axes}], unit={unit!r}, {fmt}, dtype={self.dtype})"


def _strip(store: Any, track: tuple[bool, ...]) -> Any:
    """Remove under/overflow bins from the tracked axes of dense or COO contents."""
    if not any(track):
        return store
    if isinstance(store, CooContents):
        c = store.coords
        lim = np.array([s - 2 if t else s for s, t in zip(store.shape, track)])
        shift = np.array(track, dtype=np.int64)[:, None]
        inner = np.all((c - shift >= 0) & (c - shift < lim[:, None]), axis=0)
        if not np.all(inner):
            logger.warning("dropping %d under/overflow entries (sum %s) of sparse contents",
                           int((~inner).sum()), store.data[~inner].sum())
        return CooContents(c[:, inner] - shift, store.data[inner], tuple(lim.tolist()),
                           store.fill_value)
    inner = store[tuple(slice(1, -1) if t else slice(None) for t in track)]
    dropped = np.count_nonzero(store) - np.count_nonzero(inner)
    if dropped:
        logger.warning("dropping %d non-zero under/overflow bins of dense contents", dropped)
    return np.ascontiguousarray(inner)


from probdeconv.histpy_compat import as_histogram  # noqa: E402

