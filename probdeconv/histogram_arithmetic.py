"""Arithmetic of :class:`~probdeconv.histogram.Histogram` with scalars, arrays, units and
other histograms (identical axes), dense or sparse, with astropy units.

Sparse contents stay sparse where the result is sparse too: products and quotients by a
scalar, products by a finite array (zero fill), sums and differences of two sparse
histograms.  Results carry no ``sumw2``; in-place forms drop it.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

import astropy.units as u
import numpy as np

from probdeconv.coo import CooContents, _coalesce
from probdeconv.errors import AxisMismatchError, DataError, ProbdeconvError

__all__ = ["HistogramArithmetic"]

logger = logging.getLogger(__name__)


class HistogramArithmetic:
    """``+ − × ÷`` (also reflected and in place) and negation for histograms.

    Mixed into :class:`~probdeconv.histogram.Histogram`, whose storage (``_values``,
    ``_coo``, ``_unit``, ``_sumw2``, ``_axes``) and helpers (``_new``, ``_wrap``,
    ``_dense``) it uses.
    """

    def _operand(self, other: Any) -> Any:
        from probdeconv.histpy_compat import _looks_like_histpy, as_histogram

        if isinstance(other, HistogramArithmetic) or _looks_like_histpy(other):
            other = as_histogram(other)
            problem = self._axes.first_mismatch(other._axes)
            if problem:
                raise AxisMismatchError(f"histogram arithmetic needs identical axes, but "
                                        f"{problem}; rebin or project one operand first")
        if isinstance(other, u.UnitBase):
            other = u.Quantity(1.0, other)
        return other

    def _binary(self, other: Any, op: Callable, reflected: bool = False) -> Any:
        other = self._operand(other)
        b = other
        try:
            fast = self._sparse_op(other, op, reflected)
            if fast is not None:
                return fast
            a = self._wrap(self._dense())
            b = other[:] if isinstance(other, HistogramArithmetic) else other
            res = op(b, a) if reflected else op(a, b)
        except ProbdeconvError:
            raise
        except u.UnitsError as err:
            units = getattr(b, "unit", None)
            raise DataError(f"units do not combine: histogram in {self._unit} and operand in "
                            f"{units} ({err})") from err
        except ValueError as err:
            raise DataError(f"operand of shape {np.shape(b)} does not broadcast to the "
                            f"histogram shape {self.nbins} ({err})") from err
        if np.shape(res) != self.nbins:
            raise DataError(f"operand of shape {np.shape(b)} gives a result of shape "
                            f"{np.shape(res)}, expected {self.nbins}")
        return self._new(res, unit=None)

    def _sparse_op(self, other: Any, op: Callable, reflected: bool) -> Any:
        coo = self._coo
        if coo is None:
            return None
        data = self._wrap(coo.data)
        fill: Any = None
        if np.ndim(other) == 0 and not isinstance(other, HistogramArithmetic) and (
                op is operator.mul or (op is operator.truediv and not reflected)):
            res = op(data, other)
            fill = op(self._wrap(coo.fill_value), other)
        elif op is operator.mul and coo.fill_value == 0:
            b = other[:] if isinstance(other, HistogramArithmetic) else other
            if isinstance(other, HistogramArithmetic) and other.is_sparse:
                return None
            try:
                full = np.broadcast_to(b, self.nbins, subok=True)
            except ValueError:
                return None
            if not np.all(np.isfinite(full)):
                return None
            res = data * full[tuple(coo.coords)]
        elif (op in (operator.add, operator.sub) and isinstance(other, HistogramArithmetic)
              and other.is_sparse and coo.fill_value == 0 and other._coo.fill_value == 0):
            sign = -1 if op is operator.sub else 1
            s_self, s_other = (sign, 1) if reflected else (1, sign)
            odata = other._wrap(other._coo.data)
            res = np.concatenate([np.atleast_1d(s_self * data), np.atleast_1d(s_other * odata)])
            flat = np.ravel_multi_index(tuple(np.concatenate(
                [coo.coords, other._coo.coords], axis=1)), self.nbins)
            uniq, vals = _coalesce(flat, getattr(res, "value", res))
            out = CooContents(np.array(np.unravel_index(uniq, self.nbins)).reshape(
                self.ndim, -1), vals, self.nbins)
            return self._new(out, unit=getattr(res, "unit", None))
        else:
            return None
        unit = getattr(res, "unit", None)
        if fill is None:
            fillv: Any = 0
        else:
            fillv = fill.to_value(unit) if unit is not None else getattr(fill, "value", fill)
        vals = getattr(res, "value", res)
        return self._new(CooContents(coo.coords.copy(), vals, self.nbins, fillv), unit=unit)

    def _inplace(self, other: Any, op: Callable) -> Any:
        res = self._binary(other, op)
        if self._sumw2 is not None:
            logger.debug("in-place arithmetic drops the sumw2 of the histogram")
        self._values, self._coo, self._unit, self._sumw2 = (res._values, res._coo, res._unit,
                                                            None)
        return self

    def __add__(self, o: Any) -> Any:
        return self._binary(o, operator.add)

    def __radd__(self, o: Any) -> Any:
        return self._binary(o, operator.add, True)

    def __iadd__(self, o: Any) -> Any:
        return self._inplace(o, operator.add)

    def __sub__(self, o: Any) -> Any:
        return self._binary(o, operator.sub)

    def __rsub__(self, o: Any) -> Any:
        return self._binary(o, operator.sub, True)

    def __isub__(self, o: Any) -> Any:
        return self._inplace(o, operator.sub)

    def __mul__(self, o: Any) -> Any:
        return self._binary(o, operator.mul)

    def __rmul__(self, o: Any) -> Any:
        return self._binary(o, operator.mul, True)

    def __imul__(self, o: Any) -> Any:
        return self._inplace(o, operator.mul)

    def __truediv__(self, o: Any) -> Any:
        return self._binary(o, operator.truediv)

    def __rtruediv__(self, o: Any) -> Any:
        return self._binary(o, operator.truediv, True)

    def __itruediv__(self, o: Any) -> Any:
        return self._inplace(o, operator.truediv)

    def __neg__(self) -> Any:
        return self * -1

