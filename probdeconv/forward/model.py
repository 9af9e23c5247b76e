"""Expected counts, back-projection (adjoint), exposure, background product and Poisson
log-likelihood of a :class:`~probdeconv.forward.dataset.Dataset`, dense and reduced.

See :mod:`probdeconv.forward` for the notation.  Pure, jit-able functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .blocks import response_adjoint_product, response_product
from .dataset import ALMOST_ZERO, Dataset
from .nodes import node_coefficients, observed_time, row_sums

__all__ = [
    "sky_counts",
    "background_counts",
    "expected_counts",
    "backproject",
    "exposure",
    "background_product",
    "log_likelihood",
    "observed",
    "observed_counts",
    "unobserved",
    "reduced_sky",
    "reduced_expectation",
    "reduced_log_likelihood",
    "observed_log_likelihood",
    "with_observed_counts",
    "reduced_backproject",
    "reduced_background_product",
    "summed_backproject",
    "summed_exposure",
    "total_log_likelihood",
]


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
    return ds.pixel_area * response_product(m, ds.response)  # x [(v, Ei), i] -> [t, i]


def background_counts(ds: Dataset, bkg_norm: jax.Array) -> jax.Array:
    """``Σ_k b_k B_k`` with ``bkg_norm`` the *global* normalisations, shape ``[t, i]``."""
    if not ds.bkg_index:
        return jnp.zeros_like(ds.counts)
    if ds.bkg_rows is not None:  # time nodes: one normalisation per template and time bin
        return jnp.einsum("kt,kti->ti", node_coefficients(ds, bkg_norm), ds.backgrounds)
    b = bkg_norm[jnp.asarray(ds.bkg_index)]  # [k]
    return jnp.tensordot(b, ds.backgrounds, axes=1)  # [k] x [k, t, i] -> [t, i]


def expected_counts(
    ds: Dataset, model: jax.Array, bkg_norm: jax.Array, almost_zero: float = ALMOST_ZERO
) -> jax.Array:
    """Expected counts ``E = A λ + ε + Σ_k b_k B_k``, shape ``[t, i]``.

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> from probdeconv.forward import make_dataset
    >>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)), [np.ones((2, 3, 12))])
    >>> e = expected_counts(ds, jnp.ones((12, 1)), jnp.array([0.5]))
    >>> round(float(e[0, 0]), 9)  # 4π (sky) + 0.5 (background) + 1e-12
    13.066370614
    """
    return sky_counts(ds, model) + almost_zero + background_counts(ds, bkg_norm)


def backproject(ds: Dataset, h: jax.Array) -> jax.Array:
    """Transpose product ``Aᵀ H`` of a data-space array ``H[t, i]``, shape ``[lb, Ei]``."""
    u = response_adjoint_product(h, ds.response)  # [t, i] x [i, (v, Ei)] -> [t, (v, Ei)]
    return ds.pixel_area * _rotate_adjoint(ds, u)  # -> [lb, Ei]


def exposure(ds: Dataset) -> jax.Array:
    """Exposure map ``S_j = Σ_i A_ij``, shape ``[lb, Ei]`` (cm2 s sr)."""
    r_sum = ds.response_totals  # Σ_i R[(v, Ei), i], kept by make_dataset
    if not ds.is_local:
        return ds.pixel_area * r_sum.reshape(ds.n_model_pixels, ds.n_energies)
    r_sum = r_sum.reshape(ds.n_local_pixels, ds.n_energies)  # [v, Ei]
    v = ds.ccm_tv % ds.n_local_pixels
    contrib = ds.ccm_values[:, None] * r_sum[v]  # [nnz, Ei]
    return ds.pixel_area * jax.ops.segment_sum(contrib, ds.ccm_l, num_segments=ds.n_model_pixels)


def background_product(ds: Dataset, h: jax.Array) -> jax.Array:
    """``Σ_i B_k,i H_i`` for each local background row ``k``, shape ``[k]`` (with time
    nodes: per row, i.e. per template and node)."""
    if ds.bkg_rows is not None:  # [k, t, i] x [t, i] -> [k, t] -> [rows]
        return row_sums(ds, jnp.sum(ds.backgrounds * h[None], axis=2))
    return jnp.tensordot(ds.backgrounds, h, axes=2)  # [k, t, i] x [t, i] -> [k]


def log_likelihood(ds: Dataset, expectation: jax.Array) -> jax.Array:
    """Poisson log-likelihood ``Σ d log E − Σ E`` (no ``log d!`` term).

    ``log E`` is evaluated at the observed bins only (``d log E`` is 0 elsewhere).
    """
    if ds.observes_all:
        d = ds.counts
        return jnp.sum(jnp.where(d > 0, d * jnp.log(expectation), 0.0)) - jnp.sum(expectation)
    e_obs = expectation.reshape(-1)[ds.obs_index]
    return jnp.sum(ds.obs_counts * jnp.log(e_obs)) - jnp.sum(expectation)


def observed(ds: Dataset, a: jax.Array) -> jax.Array:
    """Values of a data-space array ``[t, i]`` at the observed bins, ``[n_obs]``."""
    flat = a.reshape(-1)
    return flat if ds.observes_all else flat[ds.obs_index]


def observed_counts(ds: Dataset) -> jax.Array:
    """The counts at the observed bins, ``[n_obs]``."""
    return ds.counts.reshape(-1) if ds.observes_all else ds.obs_counts


def _observed_backgrounds(ds: Dataset) -> jax.Array:
    if ds.observes_all:
        return ds.backgrounds.reshape(ds.backgrounds.shape[0], ds.n_bins)
    return ds.obs_backgrounds


def unobserved(ds: Dataset, h_obs: jax.Array) -> jax.Array:
    """The data-space array ``[t, i]`` equal to ``h_obs`` at the observed bins, 0 elsewhere."""
    if ds.observes_all:
        return h_obs.reshape(ds.counts.shape)
    h = jnp.zeros(ds.n_bins, h_obs.dtype).at[ds.obs_index].set(
        h_obs, indices_are_sorted=True, unique_indices=True)
    return h.reshape(ds.counts.shape)


# --------------------------------------------------------------------------- reduced form


def reduced_sky(ds: Dataset, model: jax.Array) -> jax.Array:
    """``[(A λ)[obs], Σ A λ]``, shape ``[n_obs + 1]``: the sky part where the likelihood
    needs it (one forward projection).  Linear in ``model``.
    """
    m = _rotate(ds, model)  # [t, (v, Ei)]
    full = ds.pixel_area * response_product(m, ds.response)  # [t, i]
    total = ds.pixel_area * jnp.sum(m @ ds.response_totals)  # Σ_i (A λ)_i from row sums
    return jnp.concatenate([observed(ds, full), total[None]])


def reduced_expectation(ds: Dataset, rsky: jax.Array, bkg_norm: jax.Array,
                        almost_zero: float = ALMOST_ZERO) -> jax.Array:
    """``[E[obs], Σ E]`` from a reduced sky: ``E = A λ + ε + Σ_k b_k B_k``."""
    obs, total = rsky[:-1], rsky[-1]
    obs = obs + almost_zero
    total = total + ds.n_bins * almost_zero
    if ds.bkg_rows is not None:  # time nodes: coefficients c[k, t]
        c = node_coefficients(ds, bkg_norm)
        obs = obs + jnp.sum(c[:, observed_time(ds)] * _observed_backgrounds(ds), axis=0)
        total = total + jnp.sum(c * ds.bkg_time_totals)  # [k, t] x [k, t] -> []
    elif ds.bkg_index:
        b = bkg_norm[jnp.asarray(ds.bkg_index)]  # [k]
        obs = obs + b @ _observed_backgrounds(ds)  # [k] x [k, n_obs] -> [n_obs]
        total = total + b @ ds.bkg_totals
    return jnp.concatenate([obs, total[None]])


def reduced_log_likelihood(ds: Dataset, rexp: jax.Array) -> jax.Array:
    """``Σ d log E − Σ E`` from a reduced expectation ``[E[obs], Σ E]``."""
    return jnp.sum(observed_counts(ds) * jnp.log(rexp[:-1])) - rexp[-1]


def observed_log_likelihood(ds: Dataset, model: jax.Array, bkg_norm: jax.Array,
                            almost_zero: float = ALMOST_ZERO) -> jax.Array:
    """Poisson log-likelihood ``Σ d log E − Σ E`` of ``(model, bkg_norm)`` over the observed
    bins and the totals: ``log_likelihood(ds, expected_counts(ds, model, bkg_norm))`` to
    rounding, without forming ``E`` (nor its gradient) on the empty bins.

    The sky part still takes one dense response product (``Σ E`` comes from the response's
    row sums); logarithms, backgrounds and their gradients run over the observed bins only.

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> from probdeconv.forward import make_dataset
    >>> counts = np.zeros((2, 3, 12)); counts[0, 0, :3] = 4.0
    >>> ds = make_dataset(counts, np.ones((12, 1, 2, 3, 12)), [np.ones((2, 3, 12))])
    >>> lam, b = jnp.full((12, 1), 0.1), jnp.array([0.5])
    >>> dense = log_likelihood(ds, expected_counts(ds, lam, b))
    >>> bool(jnp.isclose(observed_log_likelihood(ds, lam, b), dense, rtol=1e-13))
    True
    """
    rexp = reduced_expectation(ds, reduced_sky(ds, model), bkg_norm, almost_zero)
    return reduced_log_likelihood(ds, rexp)


def with_observed_counts(ds: Dataset, obs_counts: jax.Array) -> Dataset:
    """The dataset with counts ``obs_counts`` at its observed bins and 0 elsewhere, its
    observed-bin view kept (jit / vmap-able).

    For counts that are zero wherever the data are — bootstrap replicates: a Poisson or
    multinomial resample of ``d`` is 0 where ``d`` is — the reduced algorithms then run
    over the observed bins only, with the same numbers as over the whole data space.
    (:func:`~probdeconv.forward.with_counts` of traced counts has to take every bin.)

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> from probdeconv.forward import make_dataset
    >>> counts = np.zeros((2, 3, 12)); counts[0, 0, :3] = 4.0
    >>> ds = make_dataset(counts, np.ones((12, 1, 2, 3, 12)))
    >>> new = with_observed_counts(ds, 2.0 * observed_counts(ds))
    >>> new.n_observed == ds.n_observed, float(new.counts.sum())
    (True, 24.0)
    """
    obs_counts = jnp.asarray(obs_counts, ds.counts.dtype)
    if ds.observes_all:
        return dataclasses.replace(ds, counts=obs_counts.reshape(ds.counts.shape))
    return dataclasses.replace(ds, counts=unobserved(ds, obs_counts), obs_counts=obs_counts)


def reduced_backproject(ds: Dataset, h_obs: jax.Array) -> jax.Array:
    """``Aᵀ H`` of a data-space array that is zero outside the observed bins (given there,
    ``[n_obs]``), shape ``[lb, Ei]``: the adjoint of ``reduced_sky(ds, ·)[:-1]``.
    """
    return backproject(ds, unobserved(ds, h_obs))


def reduced_background_product(ds: Dataset, h_obs: jax.Array) -> jax.Array:
    """``Σ_i B_k,i H_i`` for ``H`` zero outside the observed bins, shape ``[k]`` (with
    time nodes: per row)."""
    if ds.bkg_rows is not None:  # [k, n_obs] summed into the row of each (k, time bin)
        per = _observed_backgrounds(ds) * h_obs
        rows = ds.bkg_rows[:, observed_time(ds)]
        return jax.ops.segment_sum(per.reshape(-1), rows.reshape(-1),
                                   num_segments=len(ds.bkg_index))
    return _observed_backgrounds(ds) @ h_obs  # [k, n_obs] x [n_obs] -> [k]


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

