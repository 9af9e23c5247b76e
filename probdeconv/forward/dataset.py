"""The arrays of one dataset of the forward model, checked once: :class:`Dataset`.

:func:`make_dataset` validates counts, response, backgrounds and CCM and records the
observed-bin view (the bins with counts, for the reduced expectation); :func:`with_counts`
swaps the counts and rebuilds that view.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DataError
from .blocks import TriangularResponse, response_row_sums

__all__ = ["ALMOST_ZERO", "OBS_LENGTH_STEPS", "PRECISIONS", "Dataset", "aligned_empty",
           "make_dataset", "with_counts", "check_observed_view", "precision_of"]

logger = logging.getLogger(__name__)

ALMOST_ZERO = 1e-12
"""Offset added to every expected count so that ``log E`` is finite (cosipy's ``almost_zero``)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset of the forward model, as a pytree of arrays.

    Build it with :func:`make_dataset`, which checks shapes and values.  Array fields are
    pytree leaves (traced by ``jit``); ``pixel_area``, ``n_model_pixels`` and
    ``bkg_index`` are static metadata.  ``bkg_index[r]`` is the global normalisation of
    row ``r``: template ``r``, or with time nodes (``bkg_rows``, see
    :mod:`probdeconv.forward.nodes`) one group of time bins of a template.
    """

    counts: jax.Array  # [t, i]
    response: jax.Array | TriangularResponse  # [(v, e), i]; float32 when precision="mixed"
    backgrounds: jax.Array  # [k, t, i]
    ccm_tv: jax.Array | None = None  # [nnz] flat (t, v) index
    ccm_l: jax.Array | None = None  # [nnz] model pixel index
    ccm_values: jax.Array | None = None  # [nnz] dwell time (s)
    # observed-bin view (all three None: the view is every bin, see ``observes_all``)
    obs_index: jax.Array | None = None  # [n_obs] flat (t, i) index of the observed bins
    obs_counts: jax.Array | None = None  # [n_obs] counts there
    obs_backgrounds: jax.Array | None = None  # [k, n_obs] background templates there
    bkg_totals: jax.Array | None = None  # [k] Σ_{t,i} B[k, t, i]
    response_totals: jax.Array | None = None  # [(v, e)] Σ_i R[(v, e), i]
    # time nodes (forward.nodes.with_time_nodes); None: normalisation row k is template k
    bkg_rows: jax.Array | None = None  # [k, t] int: row of template k in time bin t
    bkg_time_totals: jax.Array | None = None  # [k, t] Σ_i B[k, t, i]
    pixel_area: float = dataclasses.field(default=1.0, metadata=dict(static=True))
    n_model_pixels: int = dataclasses.field(default=1, metadata=dict(static=True))
    n_energies: int = dataclasses.field(default=1, metadata=dict(static=True))
    bkg_index: tuple[int, ...] = dataclasses.field(default=(), metadata=dict(static=True))

    @property
    def is_local(self) -> bool:
        """True for the spacecraft frame (a coordinate-conversion matrix is present)."""
        return self.ccm_values is not None

    @property
    def n_time(self) -> int:
        return self.counts.shape[0]

    @property
    def n_local_pixels(self) -> int:
        return self.response.shape[0] // self.n_energies

    @property
    def model_shape(self) -> tuple[int, int]:
        return (self.n_model_pixels, self.n_energies)

    @property
    def observes_all(self) -> bool:
        """True when the observed-bin view is the whole data space (dense or traced counts)."""
        return self.obs_index is None

    @property
    def n_observed(self) -> int:
        """Length of the observed-bin view."""
        return self.n_bins if self.obs_index is None else self.obs_index.shape[0]

    @property
    def n_bins(self) -> int:
        """Number of data bins ``t × i``."""
        return self.counts.shape[0] * self.counts.shape[1]


def _check_finite_nonneg(name: str, a: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(a)):
        n = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise DataError(
            f"{name}: {n} bin(s) are NaN or infinite; {what} must be finite. "
            "Check the file it came from, or replace them (e.g. np.nan_to_num) before loading."
        )
    if np.any(a < 0):
        n = int(np.count_nonzero(a < 0))
        raise DataError(
            f"{name}: {n} bin(s) are negative (smallest {a.min()!r}); {what} must be >= 0. "
            "Negative values usually mean a subtracted background or a wrong file."
        )


def make_dataset(
    counts: np.ndarray,
    response: np.ndarray,
    backgrounds: Sequence[np.ndarray] = (),
    *,
    bkg_index: Sequence[int] | None = None,
    ccm: tuple[np.ndarray, np.ndarray] | None = None,
    n_model_pixels: int | None = None,
    pixel_area: float | None = None,
    dtype: str | np.dtype = "float64",
    name: str = "dataset",
    share_response: bool = False,
    precision: str = "full",
) -> Dataset:
    """Check arrays and build a :class:`Dataset`.

    Parameters
    ----------
    counts
        Observed counts, shape ``(Em, Phi, PsiChi)`` (galactic) or
        ``(T, Em, Phi, PsiChi)`` (spacecraft frame, with ``ccm``).
    response
        ``[NuLambda, Ei, Em, Phi, PsiChi]`` response (cm2 s galactic, cm2 local), or a
        :class:`~probdeconv.forward.blocks.TriangularResponse` (continuum: only the
        ``Em <= Ei`` blocks are stored).
    backgrounds
        Templates shaped like ``counts``.
    bkg_index
        Global index of each background (default ``0, 1, ...``).
    ccm
        ``(coords, values)`` of the coordinate-conversion matrix ``[T, lb, NuLambda]``:
        ``coords`` is ``3 × nnz`` integer, ``values`` the dwell times.  ``None`` for the
        galactic frame.
    n_model_pixels
        Number of model pixels ``lb`` (default: the response's ``NuLambda`` count).
    pixel_area
        Model pixel solid angle in sr (default ``4π / n_model_pixels``).
    dtype
        ``"float64"`` (default; needs ``jax_enable_x64``, set on import of probdeconv) or
        ``"float32"``.
    share_response
        Hand the response array over instead of copying it: when it already has ``dtype``,
        is C-contiguous and 64-byte aligned (see :func:`aligned_empty`), the dataset uses
        its memory directly (one copy of a multi-GB response instead of two).  The caller
        must not modify the array afterwards.  Default ``False`` (copy).
    precision
        ``"full"`` (default): every array in ``dtype``.  ``"mixed"`` (with ``dtype``
        float64): the response is stored in float32 (half the memory and bytes read per
        product) and the response products return float64, so expectations, likelihoods,
        sums, the EM ratio and images stay float64 (see ``benchmarks/README.md`` for the
        differences from float64).

    Raises
    ------
    DataError
        On NaN or negative values, or on shapes that do not fit together.

    Examples
    --------
    >>> import numpy as np
    >>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)))
    >>> ds.counts.shape, ds.response.shape
    ((1, 72), (12, 72))
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float64, np.float32):
        raise DataError(f"dtype: got {dtype}; expected float64 (default) or float32.")
    if precision not in PRECISIONS or (precision == "mixed" and dtype != np.float64):
        raise DataError(f"{name}: precision={precision!r} with dtype {dtype}; expected "
                        "'full' (any dtype) or 'mixed' (dtype float64: float32 response).")
    rdtype = np.dtype(np.float32) if precision == "mixed" else dtype
    counts = np.asarray(counts, dtype=np.float64)
    tri = isinstance(response, TriangularResponse)
    response = response if tri else np.asarray(response)
    shape5 = response.full_shape if tri else response.shape
    if len(shape5) != 5:
        raise DataError(
            f"{name}: response has {len(shape5)} axes (shape {shape5}); expected 5, "
            "[NuLambda, Ei, Em, Phi, PsiChi]. Sum out extra axes (SigmaTau, Dist) first."
        )
    n_v, n_e = shape5[:2]
    data_shape = shape5[2:]
    local = ccm is not None
    expected_counts_shape = ((None,) if local else ()) + tuple(data_shape)
    if counts.ndim != len(expected_counts_shape) or counts.shape[-3:] != tuple(data_shape):
        raise DataError(
            f"{name}: counts have shape {counts.shape}; expected "
            f"{'(T, ' if local else '('}{', '.join(map(str, data_shape))}) to match the "
            "response's [Em, Phi, PsiChi] axes."
        )
    _check_finite_nonneg(f"{name}: counts", counts, "counts")
    if not tri:  # (a TriangularResponse is checked when built)
        _check_finite_nonneg(f"{name}: response", response, "a response")
    n_t = counts.shape[0] if local else 1
    d = int(np.prod(data_shape))
    bkgs = []
    for k, b in enumerate(backgrounds):
        b = np.asarray(b, dtype=np.float64)
        if b.shape != counts.shape:
            raise DataError(
                f"{name}: background #{k} has shape {b.shape}; expected {counts.shape} "
                "(the shape of the counts)."
            )
        _check_finite_nonneg(f"{name}: background #{k}", b, "a background template")
        bkgs.append(b.reshape(n_t, d))
    if bkg_index is None:
        bkg_index = tuple(range(len(bkgs)))
    bkg_index = tuple(int(i) for i in bkg_index)
    if len(bkg_index) != len(bkgs):
        raise DataError(f"{name}: {len(bkg_index)} background indices for {len(bkgs)} templates.")
    bkg_arr = np.stack(bkgs) if bkgs else np.zeros((0, n_t, d))

    if n_model_pixels is None:
        n_model_pixels = n_v
    if not local and n_model_pixels != n_v:
        raise DataError(
            f"{name}: the galactic response has {n_v} NuLambda pixels but the model has "
            f"{n_model_pixels}; they must be the same HEALPix grid."
        )
    if pixel_area is None:
        pixel_area = 4 * np.pi / n_model_pixels

    fields: dict = {}
    if local:
        coords, values = ccm
        coords = np.asarray(coords)
        values = np.asarray(values, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[0] != 3 or coords.shape[1] != values.shape[0]:
            raise DataError(
                f"{name}: CCM coords have shape {coords.shape} for {values.shape[0]} values; "
                "expected (3, nnz) for the axes [Time|ScAtt, lb, NuLambda]."
            )
        _check_finite_nonneg(f"{name}: coordinate-conversion matrix", values, "dwell times")
        t, l, v = coords
        if values.size and (t.max() >= n_t or l.max() >= n_model_pixels or v.max() >= n_v):
            raise DataError(
                f"{name}: CCM indices exceed the axes: max (t, lb, NuLambda) = "
                f"({t.max()}, {l.max()}, {v.max()}) for sizes ({n_t}, {n_model_pixels}, {n_v})."
            )
        itype = np.int64 if n_t * n_v >= 2**31 else np.int32
        fields = dict(
            ccm_tv=jnp.asarray((t * n_v + v).astype(itype)),
            ccm_l=jnp.asarray(l.astype(np.int32)),
            ccm_values=_copy(values, dtype),
        )
    response = (response.astype(rdtype) if tri else
                _device_array(response.reshape(n_v * n_e, d), rdtype, share_response))
    return Dataset(
        counts=_copy(counts.reshape(n_t, d), dtype),
        response=response,
        backgrounds=jnp.asarray(bkg_arr, dtype=dtype),
        response_totals=response_row_sums(response, dtype),
        pixel_area=float(pixel_area),
        n_model_pixels=int(n_model_pixels),
        n_energies=int(n_e),
        bkg_index=bkg_index,
        **fields,
        bkg_totals=jnp.asarray(bkg_arr.sum(axis=(1, 2)), dtype=dtype),
        **_observed_view(counts.reshape(-1), bkg_arr.reshape(len(bkgs), n_t * d), dtype),
    )


PRECISIONS = ("full", "mixed")
"""Values of ``make_dataset``'s ``precision``."""


def precision_of(ds: Dataset) -> str:
    """``"float64"``, ``"float32"`` or ``"mixed"`` (float32 response, float64 otherwise)."""
    data, rsp = np.dtype(ds.counts.dtype), np.dtype(ds.response.dtype)
    return "mixed" if rsp != data else str(data)


ALIGNMENT = 64
"""Byte alignment that lets the CPU backend use a host array without copying it."""


def aligned_empty(shape, dtype=np.float64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data start on a 64-byte boundary.

    Fill it and pass it to :func:`make_dataset` with ``share_response=True`` to avoid a
    second copy of a large response.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    offset = (-buf.ctypes.data) % ALIGNMENT
    return buf[offset:offset + nbytes].view(dtype).reshape(shape)


def _device_array(a: np.ndarray, dtype: np.dtype, share: bool) -> jax.Array:
    """``a`` as a JAX array of ``dtype``: its own memory when shared and suitable, else a copy."""
    if (share and a.dtype == dtype and a.flags.c_contiguous
            and a.ctypes.data % ALIGNMENT == 0):
        return jax.device_put(a, may_alias=True)
    return _copy(a, dtype)


def _copy(a: np.ndarray, dtype) -> jax.Array:
    """A JAX array of ``dtype`` with memory of its own.

    (``jnp.asarray`` may use an aligned host array's memory directly, which would let a
    later change of the caller's array change the dataset.)
    """
    return jnp.array(a, dtype=dtype, copy=True)


OBS_LENGTH_STEPS = 64
"""The observed-bin view's length is rounded up to a multiple of ``n_bins / 64``."""


def _observed_bins(flat: np.ndarray) -> np.ndarray | None:
    """Sorted indices of the non-zero bins, plus the first empty bins needed to round
    their number up to a multiple of ``ceil(n_bins / OBS_LENGTH_STEPS)``; ``None`` (all
    bins, no index) when more than half are non-zero.

    Rounding keeps the array shapes, hence the compiled iteration, the same for data sets
    of the same shape whose numbers of non-zero bins differ a little; the added bins have
    ``d = 0`` and contribute nothing.
    """
    n = flat.size
    nz = np.flatnonzero(flat)
    if 2 * nz.size > n:
        return None
    quantum = max(1, -(-n // OBS_LENGTH_STEPS))
    length = min(n, -(-max(nz.size, 1) // quantum) * quantum)
    need = length - nz.size
    extra = np.zeros(0, dtype=nz.dtype)
    stop = min(n, 4 * need)
    while extra.size < need:  # the first empty bins, without indexing all of them
        extra = np.flatnonzero(flat[:stop] == 0)[:need]
        stop = min(n, 2 * stop)
    return np.sort(np.concatenate([nz, extra]))


def _observed_view(flat: np.ndarray, bkg: np.ndarray, dtype) -> dict:
    """Observed-bin fields of a :class:`Dataset` from host counts ``[n]`` and templates
    ``[k, n]``."""
    nz = _observed_bins(flat)
    if nz is None:  # dense data: the view is the whole data space, no index
        return dict(obs_index=None, obs_counts=None, obs_backgrounds=None)
    nz = nz.astype(np.int64 if flat.size >= 2**31 else np.int32)
    return dict(obs_index=jnp.asarray(nz), obs_counts=jnp.asarray(flat[nz], dtype=dtype),
                obs_backgrounds=jnp.asarray(bkg[:, nz], dtype=dtype))


def with_counts(ds: Dataset, counts) -> Dataset:
    """The dataset with other counts (same shape), its observed-bin view rebuilt.

    Concrete counts get the view of their non-zero bins; counts traced by ``jit`` /
    ``vmap`` (e.g. bootstrap replicates) get the whole data space as the view (no index),
    which is right for any counts.  Use this, not ``dataclasses.replace``, to swap the counts.
    """
    dtype = ds.counts.dtype
    if np.size(counts) != ds.n_bins:
        raise DataError(f"with_counts: got {np.size(counts)} bins of counts; the dataset has "
                        f"{ds.n_bins} ({ds.counts.shape}).")
    if isinstance(counts, jax.core.Tracer):
        counts = counts.astype(dtype).reshape(ds.counts.shape)
        return dataclasses.replace(ds, counts=counts, obs_index=None, obs_counts=None,
                                   obs_backgrounds=None)
    host = np.asarray(counts, dtype=np.float64)
    _check_finite_nonneg("with_counts: counts", host, "counts")
    bkg = np.asarray(ds.backgrounds).reshape(ds.backgrounds.shape[0], ds.n_bins)
    return dataclasses.replace(ds, counts=_copy(host.reshape(ds.counts.shape), dtype),
                               **_observed_view(host.reshape(-1), bkg, dtype))


def check_observed_view(ds: Dataset, name: str = "dataset") -> None:
    """Raise if the counts no longer match the observed-bin view (counts swapped with
    ``dataclasses.replace`` instead of :func:`with_counts`).  One pass over the counts;
    nothing is checked for traced arrays."""
    if ds.observes_all or isinstance(ds.counts, jax.core.Tracer):
        return
    total, in_view = float(jnp.sum(ds.counts)), float(jnp.sum(ds.obs_counts))
    if not np.isclose(total, in_view, rtol=1e-9, atol=0.0):
        raise DataError(f"{name}: the counts sum to {total!r} but their observed-bin view to "
                        f"{in_view!r}; swap the counts of a Dataset with "
                        "probdeconv.forward.with_counts, not dataclasses.replace.")
