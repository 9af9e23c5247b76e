"""The forward model: the one place where expected counts and their adjoint are computed.

Every engine of probdeconv (Richardson-Lucy, MAP-EM, gradient MAP, samplers) calls the
functions of this module; nothing else re-derives the expectation or the likelihood.

Notation (see ``docs``/spec §1).  A *dataset* holds

- ``counts``      ``d[t, i]``       data space, ``t`` a time / attitude bin (one bin in the
  galactic frame) and ``i`` the flattened ``(Em, Phi, PsiChi)`` bin,
- ``response``    ``R[(v, e), i]``  the response with its source-direction axis ``v``
  (``NuLambda``) and initial-energy axis ``e`` (``Ei``) flattened together,
- ``backgrounds`` ``B[k, t, i]``    background templates, ``k`` a local row whose global
  background index is ``bkg_index[k]``,
- optionally a sparse coordinate-conversion matrix ``C[t, l, v]`` (COO: ``ccm_tv`` =
  ``t * V + v``, ``ccm_l`` = ``l``, ``ccm_values``) for the spacecraft frame.

The sky ``λ[l, e]`` is a flux per steradian; ``ΔΩ`` (``pixel_area``) the model pixel
solid angle.  Then, with ``ε`` = ``almost_zero``:

- galactic frame: ``E[0, i] = ΔΩ Σ_{l,e} λ[l,e] R[(l,e), i] + ε + Σ_k b_k B[k,0,i]``
- spacecraft frame: ``M[t,v,e] = Σ_l C[t,l,v] λ[l,e]``;
  ``E[t, i] = ΔΩ Σ_{v,e} M[t,v,e] R[(v,e), i] + ε + Σ_k b_k B[k,t,i]``

``backproject`` is the exact transpose of the sky part of ``expected_counts``
(``⟨A λ, H⟩ = ⟨λ, Aᵀ H⟩``), ``exposure`` is ``Aᵀ 1`` and ``log_likelihood`` is the
Poisson log-likelihood without the ``log d!`` term, ``Σ d log E − Σ E``.

*Reduced expectation.*  The log-likelihood and the EM ratio ``d / E`` depend on ``E``
only through its values at the observed bins (``d > 0``, typically 10–20 % of a COSI
data space) and its total ``Σ E``.  ``make_dataset`` records those bins (``obs_index``,
rounded up with a few empty bins; ``obs_counts``, ``obs_backgrounds``) and the totals of
the response rows and background templates; ``reduced_sky`` maps an image to
``[(A λ)[obs], Σ (A λ)]`` (a linear map, so accelerators may combine reduced vectors like
images), and ``reduced_expectation``, ``reduced_log_likelihood``, ``reduced_backproject``
and ``reduced_background_product`` work on it.  The iterative algorithms carry this
reduced sky instead of the dense ``[t, i]`` array: the same numbers with ~7× fewer
logarithms, divisions and bytes.  Replace the counts of a dataset with :func:`with_counts`
(never ``dataclasses.replace``), which keeps the observed-bin view in step with them.

All functions are pure and jit-able; arrays enter as pytree leaves, never as constants
closed over by compiled code.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .errors import DataError

__all__ = [
    "ALMOST_ZERO",
    "Dataset",
    "make_dataset",
    "sky_counts",
    "background_counts",
    "expected_counts",
    "backproject",
    "exposure",
    "background_product",
    "log_likelihood",
    "with_counts",
    "reduced_sky",
    "reduced_expectation",
    "reduced_log_likelihood",
    "reduced_backproject",
    "reduced_background_product",
    "total_log_likelihood",
    "summed_backproject",
    "summed_exposure",
]

logger = logging.getLogger(__name__)

ALMOST_ZERO = 1e-12
"""Offset added to every expected count so that ``log E`` is finite (cosipy's ``almost_zero``)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset of the forward model, as a pytree of arrays.

    Build it with :func:`make_dataset`, which checks shapes and values.  Array fields are
    pytree leaves (traced by ``jit``); ``pixel_area``, ``n_model_pixels`` and
    ``bkg_index`` are static metadata.
    """

    counts: jax.Array  # [t, i]
    response: jax.Array  # [(v, e), i]
    backgrounds: jax.Array  # [k, t, i]
    ccm_tv: jax.Array | None = None  # [nnz] flat (t, v) index
    ccm_l: jax.Array | None = None  # [nnz] model pixel index
    ccm_values: jax.Array | None = None  # [nnz] dwell time (s)
    obs_index: jax.Array | None = None  # [n_obs] flat (t, i) index of the observed bins
    obs_counts: jax.Array | None = None  # [n_obs] counts there
    obs_backgrounds: jax.Array | None = None  # [k, n_obs] background templates there
    bkg_totals: jax.Array | None = None  # [k] Σ_{t,i} B[k, t, i]
    response_totals: jax.Array | None = None  # [(v, e)] Σ_i R[(v, e), i]
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
) -> Dataset:
    """Check arrays and build a :class:`Dataset`.

    Parameters
    ----------
    counts
        Observed counts, shape ``(Em, Phi, PsiChi)`` (galactic) or
        ``(T, Em, Phi, PsiChi)`` (spacecraft frame, with ``ccm``).
    response
        ``[NuLambda, Ei, Em, Phi, PsiChi]`` response (cm2 s galactic, cm2 local).
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
    counts = np.asarray(counts, dtype=np.float64)
    response = np.asarray(response)
    if response.ndim != 5:
        raise DataError(
            f"{name}: response has {response.ndim} axes (shape {response.shape}); expected 5, "
            "[NuLambda, Ei, Em, Phi, PsiChi]. Sum out extra axes (SigmaTau, Dist) first."
        )
    n_v, n_e = response.shape[:2]
    data_shape = response.shape[2:]
    local = ccm is not None
    expected_counts_shape = ((None,) if local else ()) + tuple(data_shape)
    if counts.ndim != len(expected_counts_shape) or counts.shape[-3:] != tuple(data_shape):
        raise DataError(
            f"{name}: counts have shape {counts.shape}; expected "
            f"{'(T, ' if local else '('}{', '.join(map(str, data_shape))}) to match the "
            "response's [Em, Phi, PsiChi] axes."
        )
    _check_finite_nonneg(f"{name}: counts", counts, "counts")
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
            ccm_values=jnp.asarray(values, dtype=dtype),
        )
    response = jnp.asarray(response.reshape(n_v * n_e, d), dtype=dtype)
    return Dataset(
        counts=jnp.asarray(counts.reshape(n_t, d), dtype=dtype),
        response=response,
        backgrounds=jnp.asarray(bkg_arr, dtype=dtype),
        response_totals=jnp.sum(response, axis=1),
        pixel_area=float(pixel_area),
        n_model_pixels=int(n_model_pixels),
        n_energies=int(n_e),
        bkg_index=bkg_index,
        **fields,
        **_observed_view(counts.reshape(-1), bkg_arr.reshape(len(bkgs), n_t * d), dtype),
    )


OBS_LENGTH_STEPS = 64
"""The observed-bin view's length is rounded up to a multiple of ``n_bins / 64``."""


def _observed_bins(flat: np.ndarray) -> np.ndarray:
    """Sorted indices of the non-zero bins, plus the first empty bins needed to round
    their number up to a multiple of ``ceil(n_bins / OBS_LENGTH_STEPS)`` (all bins when
    more than half are non-zero).

    Rounding keeps the array shapes, hence the compiled iteration, the same for data sets
    of the same shape whose numbers of non-zero bins differ a little; the added bins have
    ``d = 0`` and contribute nothing.
    """
    n = flat.size
    nz = np.flatnonzero(flat)
    if 2 * nz.size > n:
        return np.arange(n)
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
    itype = np.int64 if flat.size >= 2**31 else np.int32
    nz = _observed_bins(flat).astype(itype)
    return dict(obs_index=jnp.asarray(nz), obs_counts=jnp.asarray(flat[nz], dtype=dtype),
                obs_backgrounds=jnp.asarray(bkg[:, nz], dtype=dtype),
                bkg_totals=jnp.asarray(bkg.sum(axis=1), dtype=dtype))


def with_counts(ds: Dataset, counts) -> Dataset:
    """The dataset with other counts (same shape), its observed-bin view rebuilt.

    Concrete counts get the view of their non-zero bins; counts traced by ``jit`` /
    ``vmap`` (e.g. bootstrap replicates) get a view of every bin, which is right for any
    counts.  Use this, not ``dataclasses.replace``, to swap the counts.
    """
    dtype = ds.counts.dtype
    if isinstance(counts, jax.core.Tracer):
        counts = counts.astype(dtype).reshape(ds.counts.shape)
        bkg = ds.backgrounds.reshape(ds.backgrounds.shape[0], ds.n_bins)
        return dataclasses.replace(
            ds, counts=counts, obs_index=jnp.arange(ds.n_bins, dtype=jnp.int32),
            obs_counts=counts.reshape(-1), obs_backgrounds=bkg, bkg_totals=jnp.sum(bkg, axis=1))
    host = np.asarray(counts, dtype=np.float64)
    if host.size != ds.n_bins:
        raise DataError(f"with_counts: got {host.size} bins of counts; the dataset has "
                        f"{ds.n_bins} ({ds.counts.shape}).")
    _check_finite_nonneg("with_counts: counts", host, "counts")
    bkg = np.asarray(ds.backgrounds).reshape(ds.backgrounds.shape[0], ds.n_bins)
    return dataclasses.replace(ds, counts=jnp.asarray(host.reshape(ds.counts.shape), dtype=dtype),
                               **_observed_view(host.reshape(-1), bkg, dtype))


# --------------------------------------------------------------------------- sky part


def _rotate(ds: Dataset, model: jax.Array) -> jax.Array:
    """Sky in the response frame, ``[t, (v, e)]``.

    Galactic: ``λ`` itself (one time bin).  Local:
    ``M[t,v,e] = Σ_l C[t,l,v] λ[l,e]`` as a sparse gather / segment sum.
    """
    if not ds.is_local:
        return model.reshape(1, -1)  # [lb, Ei] -> [1, (lb, Ei)]
    n_v = ds.n_local_pixels
    contrib = ds.ccm_values[:, None] * model[ds.ccm_l]  # [nnz] x [nnz, Ei] -> [nnz, Ei]
    m = jax.ops.segment_sum(contrib, ds.ccm_tv, num_segments=ds.n_time * n_v)  # -> [(t, v), Ei]
    return m.reshape(ds.n_time, n_v * ds.n_energies)  # -> [t, (v, Ei)]


def _rotate_adjoint(ds: Dataset, u: jax.Array) -> jax.Array:
    """Transpose of :func:`_rotate`: ``[t, (v, e)] -> [l, e]``."""
    if not ds.is_local:
        return u.reshape(ds.n_model_pixels, ds.n_energies)
    u = u.reshape(ds.n_time * ds.n_local_pixels, ds.n_energies)  # [(t, v), Ei]
    contrib = ds.ccm_values[:, None] * u[ds.ccm_tv]  # [nnz, Ei]
    return jax.ops.segment_sum(contrib, ds.ccm_l, num_segments=ds.n_model_pixels)  # -> [lb, Ei]


def sky_counts(ds: Dataset, model: jax.Array) -> jax.Array:
    """Sky part of the expectation, ``A λ``, shape ``[t, i]`` (no background, no ε)."""
    m = _rotate(ds, model)  # [t, (v, Ei)]
    return ds.pixel_area * (m @ ds.response)  # [t, (v, Ei)] x [(v, Ei), i] -> [t, i]


def background_counts(ds: Dataset, bkg_norm: jax.Array) -> jax.Array:
    """``Σ_k b_k B_k`` with ``bkg_norm`` the *global* normalisations, shape ``[t, i]``."""
    if not ds.bkg_index:
        return jnp.zeros_like(ds.counts)
    b = bkg_norm[jnp.asarray(ds.bkg_index)]  # [k]
    return jnp.tensordot(b, ds.backgrounds, axes=1)  # [k] x [k, t, i] -> [t, i]


def expected_counts(
    ds: Dataset, model: jax.Array, bkg_norm: jax.Array, almost_zero: float = ALMOST_ZERO
) -> jax.Array:
    """Expected counts ``E = A λ + ε + Σ_k b_k B_k``, shape ``[t, i]``.

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)), [np.ones((2, 3, 12))])
    >>> e = expected_counts(ds, jnp.ones((12, 1)), jnp.array([0.5]))
    >>> float(e[0, 0])  # 4π (sky) + 0.5 (background) + 1e-12
    13.066370614359172
    """
    return sky_counts(ds, model) + almost_zero + background_counts(ds, bkg_norm)


def backproject(ds: Dataset, h: jax.Array) -> jax.Array:
    """Transpose product ``Aᵀ H`` of a data-space array ``H[t, i]``, shape ``[lb, Ei]``."""
    u = h @ ds.response.T  # [t, i] x [i, (v, Ei)] -> [t, (v, Ei)]
    return ds.pixel_area * _rotate_adjoint(ds, u)  # -> [lb, Ei]


def exposure(ds: Dataset) -> jax.Array:
    """Exposure map ``S_j = Σ_i A_ij``, shape ``[lb, Ei]`` (cm2 s sr)."""
    r_sum = ds.response.sum(axis=1)  # [(v, Ei), i] -> [(v, Ei)]
    if not ds.is_local:
        return ds.pixel_area * r_sum.reshape(ds.n_model_pixels, ds.n_energies)
    r_sum = r_sum.reshape(ds.n_local_pixels, ds.n_energies)  # [v, Ei]
    v = ds.ccm_tv % ds.n_local_pixels
    contrib = ds.ccm_values[:, None] * r_sum[v]  # [nnz, Ei]
    return ds.pixel_area * jax.ops.segment_sum(contrib, ds.ccm_l, num_segments=ds.n_model_pixels)


def background_product(ds: Dataset, h: jax.Array) -> jax.Array:
    """``Σ_i B_k,i H_i`` for each local background row ``k``, shape ``[k]``."""
    return jnp.tensordot(ds.backgrounds, h, axes=2)  # [k, t, i] x [t, i] -> [k]


def log_likelihood(ds: Dataset, expectation: jax.Array) -> jax.Array:
    """Poisson log-likelihood ``Σ d log E − Σ E`` (no ``log d!`` term).

    ``log E`` is evaluated at the observed bins only (``d log E`` is 0 elsewhere).
    """
    e_obs = expectation.reshape(-1)[ds.obs_index]
    return jnp.sum(ds.obs_counts * jnp.log(e_obs)) - jnp.sum(expectation)


# --------------------------------------------------------------------------- reduced form


def reduced_sky(ds: Dataset, model: jax.Array) -> jax.Array:
    """``[(A λ)[obs], Σ A λ]``, shape ``[n_obs + 1]``: the sky part where the likelihood
    needs it (one forward projection).  Linear in ``model``.
    """
    m = _rotate(ds, model)  # [t, (v, Ei)]
    full = ds.pixel_area * (m @ ds.response)  # [t, i]
    total = ds.pixel_area * jnp.sum(m @ ds.response_totals)  # Σ_i (A λ)_i from row sums
    return jnp.concatenate([full.reshape(-1)[ds.obs_index], total[None]])


def reduced_expectation(ds: Dataset, rsky: jax.Array, bkg_norm: jax.Array,
                        almost_zero: float = ALMOST_ZERO) -> jax.Array:
    """``[E[obs], Σ E]`` from a reduced sky: ``E = A λ + ε + Σ_k b_k B_k``."""
    obs, total = rsky[:-1], rsky[-1]
    obs = obs + almost_zero
    total = total + ds.n_bins * almost_zero
    if ds.bkg_index:
        b = bkg_norm[jnp.asarray(ds.bkg_index)]  # [k]
        obs = obs + b @ ds.obs_backgrounds  # [k] x [k, n_obs] -> [n_obs]
        total = total + b @ ds.bkg_totals
    return jnp.concatenate([obs, total[None]])


def reduced_log_likelihood(ds: Dataset, rexp: jax.Array) -> jax.Array:
    """``Σ d log E − Σ E`` from a reduced expectation ``[E[obs], Σ E]``."""
    return jnp.sum(ds.obs_counts * jnp.log(rexp[:-1])) - rexp[-1]


def reduced_backproject(ds: Dataset, h_obs: jax.Array) -> jax.Array:
    """``Aᵀ H`` of a data-space array that is zero outside the observed bins (given there,
    ``[n_obs]``), shape ``[lb, Ei]``: the adjoint of ``reduced_sky(ds, ·)[:-1]``.
    """
    h = jnp.zeros(ds.n_bins, h_obs.dtype).at[ds.obs_index].set(
        h_obs, indices_are_sorted=True, unique_indices=True)
    return backproject(ds, h.reshape(ds.counts.shape))


def reduced_background_product(ds: Dataset, h_obs: jax.Array) -> jax.Array:
    """``Σ_i B_k,i H_i`` for ``H`` zero outside the observed bins, shape ``[k]``."""
    return ds.obs_backgrounds @ h_obs  # [k, n_obs] x [n_obs] -> [k]


# --------------------------------------------------------------------------- several datasets


def summed_backproject(datasets: Sequence[Dataset], hs: Sequence[jax.Array]) -> jax.Array:
    """``Σ_datasets Aᵀ H`` (cosipy's ``calc_summed_T_product``)."""
    return sum(backproject(ds, h) for ds, h in zip(datasets, hs, strict=True))


def summed_exposure(datasets: Sequence[Dataset]) -> jax.Array:
    """Exposure map summed over datasets."""
    return sum(exposure(ds) for ds in datasets)


def total_log_likelihood(
    datasets: Sequence[Dataset], model: jax.Array, bkg_norm: jax.Array
) -> jax.Array:
    """Sum over datasets of the Poisson log-likelihood of ``(model, bkg_norm)``."""
    return sum(
        log_likelihood(ds, expected_counts(ds, model, bkg_norm)) for ds in datasets
    )
