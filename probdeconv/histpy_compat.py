"""Objects of the ``histpy`` package accepted wherever a probdeconv Histogram is.

:func:`as_histogram` converts a histpy Histogram (duck-typed: no histpy import needed)
into :class:`probdeconv.histogram.Histogram`, reading its full contents directly so that
histpy's sparse accessors (numba) are not triggered.
"""

from __future__ import annotations

from typing import Any

import astropy.units as u
import numpy as np

from probdeconv.axes import Axes, Axis, HealpixAxis
from probdeconv.coo import _is_coo_like, _to_coo
from probdeconv.errors import DataError
from probdeconv.histogram import Histogram

__all__ = ["as_histogram"]


def _looks_like_histpy(obj: Any) -> bool:
    if isinstance(obj, Histogram) or isinstance(obj, np.ndarray):
        return False
    # look the names up without evaluating properties (histpy's sparse ``contents``
    # slices and compiles numba code)
    names = set(dir(type(obj))) | set(getattr(obj, "__dict__", {}))
    if not {"axes", "contents", "unit"} <= names:
        return False
    try:
        return all(hasattr(a, "edges") for a in obj.axes)
    except TypeError:
        return False


def as_histogram(obj: Any) -> Histogram:
    """Return ``obj`` as a probdeconv :class:`Histogram`.

    Parameters
    ----------
    obj : Histogram or histpy.Histogram
        A probdeconv histogram (returned unchanged) or a histpy one (converted;
        sparse pydata contents become :class:`CooContents`).

    Raises
    ------
    DataError
        When ``obj`` is neither.
    """
    if isinstance(obj, Histogram):
        return obj
    if not _looks_like_histpy(obj):
        raise DataError(f"expected a Histogram (probdeconv or histpy), got a "
                        f"{type(obj).__module__}.{type(obj).__name__}")
    axes = []
    for a in obj.axes:
        label = getattr(a, "label", None)
        label = None if label is None else str(label)
        if hasattr(a, "nside"):
            axes.append(HealpixAxis(int(a.nside), str(a.scheme), np.asarray(a.edges), label,
                                    getattr(a, "coordsys", None)))
        else:
            scale = getattr(a, "axis_scale", None) or getattr(a, "scale", "linear")
            axes.append(Axis(a.edges, label=label, scale=scale, unit=getattr(a, "unit", None)))
    unit = obj.unit

    def values(c: Any, un: Any) -> Any:
        if _is_coo_like(c):
            return _to_coo(c)
        if isinstance(c, u.Quantity):
            return c.to_value(un) if un is not None else c.value
        return np.asarray(c)

    # histpy keeps under/overflow bins in ``full_contents``; taking those and stripping
    # them here avoids histpy's (numba-compiled, slow) sparse slicing behind ``contents``.
    track = getattr(obj, "track_overflow", None)
    full = callable(track) and hasattr(obj, "full_contents")
    track = tuple(bool(t) for t in track()) if full else None

    def raw(h: Any) -> Any:
        return h.full_contents if full else h.contents

    w2 = getattr(obj, "sumw2", None)
    if w2 is not None:
        w2 = values(raw(w2) if hasattr(w2, "contents") else w2,
                    None if unit is None else unit**2)
    return Histogram(Axes(axes), values(raw(obj), unit), unit=unit, sumw2=w2,
                     track_overflow=track)
