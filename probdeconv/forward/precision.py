"""Precision as a choice: switch a built :class:`~probdeconv.forward.dataset.Dataset`
between the full float64 form and the mixed form (float32 response, float64 everything
else; see :mod:`probdeconv.forward.blocks`).

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset, precision_of
>>> ds = with_precision(make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12))), "mixed")
>>> str(ds.response.dtype), str(ds.counts.dtype), precision_of(ds)
('float32', 'float64', 'mixed')
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..errors import DataError
from .blocks import TriangularResponse
from .dataset import PRECISIONS, Dataset

__all__ = ["with_precision"]


def with_precision(ds: Dataset, precision: str) -> Dataset:
    """The dataset with its response stored for ``precision``.

    ``"mixed"``: a float32 response in a float64 dataset (products return float64);
    ``"full"``: the response in the dataset's dtype.  The response totals, counts,
    backgrounds and CCM are kept as they are (float64 sums of the original response).

    Raises
    ------
    DataError
        For an unknown precision, or ``"mixed"`` on a float32 dataset.
    """
    if precision not in PRECISIONS:
        raise DataError(f"precision={precision!r}; expected one of {PRECISIONS}.")
    data_dtype = np.dtype(ds.counts.dtype)
    if precision == "mixed" and data_dtype != np.float64:
        raise DataError(f"precision='mixed' needs a float64 dataset; this one is {data_dtype}. "
                        "Build it with make_dataset(..., dtype='float64', precision='mixed').")
    want = np.float32 if precision == "mixed" else data_dtype
    if np.dtype(ds.response.dtype) == want:
        return ds
    r = ds.response
    r = r.astype(want) if isinstance(r, TriangularResponse) else jnp.asarray(r, want)
    return dataclasses.replace(ds, response=r)
