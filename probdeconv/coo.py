"""Sparse (COO) contents of histograms: coordinates, values, shape and fill value.

A small container of our own (no pydata ``sparse``), enough for coordinate-conversion
matrices with millions of entries and sparse event histograms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from probdeconv.errors import DataError

__all__ = ["CooContents"]


def _coalesce(flat: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique flat indices and the data summed over duplicates."""
    uniq, inv = np.unique(flat, return_inverse=True)
    out = np.zeros(uniq.size, dtype=data.dtype)
    np.add.at(out, inv, data)
    return uniq, out


class CooContents:
    """Minimal coordinate-format sparse array (not pydata ``sparse``).

    Parameters
    ----------
    coords : array_like of int, shape (ndim, nnz)
        Indices of the stored entries; each position should appear at most once.
    data : array_like, shape (nnz,)
        Stored values.
    shape : tuple of int
        Shape of the full array.
    fill_value : scalar
        Value of every position not stored (default 0).
    """

    def __init__(self, coords: Any, data: Any, shape: Sequence[int], fill_value: Any = 0) -> None:
        self.shape = tuple(int(s) for s in np.asarray(shape).ravel())
        self.data = np.asarray(data).ravel()
        c = np.asarray(coords)
        if c.size == 0:
            c = c.reshape(len(self.shape), 0)
        if c.ndim != 2 or c.shape != (len(self.shape), self.data.size):
            raise DataError(f"CooContents: coords must have shape (ndim, nnz) = "
                            f"({len(self.shape)}, {self.data.size}), got {c.shape}")
        self.coords = c.astype(np.int64, copy=False)
        if self.coords.size and (np.any(self.coords < 0) or np.any(
                self.coords.max(axis=1) >= np.asarray(self.shape))):
            raise DataError(f"CooContents: coords outside the shape {self.shape} "
                            f"(max per axis {self.coords.max(axis=1).tolist()})")
        self.fill_value = np.asarray(fill_value, dtype=self.data.dtype)[()]

    @classmethod
    def from_dense(cls, array: Any, fill_value: Any = 0) -> CooContents:
        """Store the entries of ``array`` that differ from ``fill_value``."""
        a = np.asarray(array)
        coords = np.nonzero(a != fill_value)
        return cls(np.array(coords, dtype=np.int64).reshape(a.ndim, -1), a[coords], a.shape,
                   fill_value)

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.data.size)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        """Data type of the values."""
        return self.data.dtype

    def todense(self) -> np.ndarray:
        """Full ndarray (duplicate entries are summed)."""
        out = np.full(self.shape, self.fill_value, dtype=self.data.dtype)
        if self.nnz:
            flat = np.ravel_multi_index(tuple(self.coords), self.shape)
            if self.fill_value != 0:
                out.flat[flat] = 0
            np.add.at(out.reshape(-1), flat, self.data)
        return out

    def sum(self) -> Any:
        """Sum of all values, fill included (assumes unique coords)."""
        total = self.data.sum()
        if self.fill_value != 0:
            total = total + self.fill_value * (int(np.prod(self.shape)) - self.nnz)
        return total

    def copy(self) -> CooContents:
        """Independent copy."""
        return CooContents(self.coords.copy(), self.data.copy(), self.shape, self.fill_value)

    def __repr__(self) -> str:
        return (f"CooContents(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype}, "
                f"fill_value={self.fill_value!r})")


def _is_coo_like(obj: Any) -> bool:
    return not isinstance(obj, np.ndarray) and all(
        hasattr(obj, k) for k in ("coords", "data", "shape", "fill_value"))


def _to_coo(obj: Any) -> CooContents:
    if isinstance(obj, CooContents):
        return obj
    return CooContents(np.asarray(obj.coords), np.asarray(obj.data), obj.shape,
                       np.asarray(obj.fill_value)[()])
