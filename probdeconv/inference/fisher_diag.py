"""The exact diagonal of the Fisher information from the squared response.

For Poisson data with expectation ``E = A λ + Σ_k b_k B_k`` and weights ``w`` (``1/E``
for the expected Fisher information, ``d/E²`` for the observed one), the diagonal of
``F = Jᵀ diag(w) J`` is

    F_jj = Σ_i w_i A_ij²          (pixels),     F_kk = Σ_i w_i (Σ_r B_r,i)²   (backgrounds)

so it needs no column of ``F``: one weighted back-projection of the *squared* response.

Galactic frame.  ``A_(l,e),i = ΔΩ R[(l,e), i]``, so ``F_(l,e) = ΔΩ² Σ_i w_i R[(l,e), i]²``.

Spacecraft frame.  ``A_(l,e),(t,i) = ΔΩ Σ_v C[t,l,v] R[(v,e), i]``: the CCM spreads model
pixel ``l`` over a few local pixels ``v`` (four HEALPix interpolation weights), so the
square is a sum over pixel *pairs*,

    A² = ΔΩ² Σ_{a, b ∈ row (t,l)} C_a C_b R[(v_a,e), i] R[(v_b,e), i],

and, with ``Q[t, p, e] = Σ_i w[t,i] R[(v,e),i] R[(v',e),i]`` for each distinct unordered
local pixel pair ``p = {v, v'}`` that occurs in some CCM row,

    F_(l,e) = ΔΩ² Σ_t Σ_{a,b ∈ row (t,l)} C_a C_b Q[t, p(v_a, v_b), e].

This is exact, for any CCM (also with repeated entries): every ordered pair of entries of
a row is one term.  ``Q`` costs one back-projection per pair *slot*: the pairs of an
interpolating CCM are each local pixel with itself and with its few neighbours (about
five slots at NSIDE 8: ``4 × 4`` entries per row, symmetric).  :func:`pair_plan` finds the
pairs and terms once (host side, from the CCM's indices); :func:`data_diagonal` evaluates
them.  Compare: the dense diagonal by columns (:func:`.fisher.precision_matrix` with
``diagonal=False``) needs one forward and one back-projection *per parameter*.

Examples
--------
>>> import numpy as np, jax.numpy as jnp
>>> from probdeconv.forward import make_dataset
>>> ds = make_dataset(np.full((1, 1, 3), 5.0), np.ones((1, 1, 1, 1, 3)), pixel_area=1.0)
>>> diag, _ = data_diagonal((ds,), jnp.full((1, 1), 5.0 / 3.0), jnp.zeros(0))
>>> round(float(diag[0, 0]), 9)   # S / λ with S = 3
1.8
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import forward as fm
from ..forward.nodes import row_sums

__all__ = ["PairPlan", "pair_plan", "data_diagonal"]

logger = logging.getLogger(__name__)

_BLOCK_BYTES = 1.5e8
"""Memory of the squared-response rows formed at once (one block of pairs)."""


class PairPlan(NamedTuple):
    """Pairs of local pixels and the terms of ``F_jj`` for one dataset (host arrays).

    ``lo``, ``hi``: ``[P]`` local pixels ``v ≤ v'`` of each distinct pair;
    ``term_t``, ``term_pair``, ``term_l``: ``[n_terms]`` time bin, pair and model pixel of
    each ordered entry pair of a CCM row; ``term_coef``: ``C_a C_b``.
    """

    lo: np.ndarray
    hi: np.ndarray
    term_t: np.ndarray
    term_pair: np.ndarray
    term_l: np.ndarray
    term_coef: np.ndarray


def pair_plan(ds: fm.Dataset) -> PairPlan:
    """The local pixel pairs and terms of ``F_jj`` for ``ds`` (see the module docstring).

    Galactic datasets (no CCM): each pixel with itself, one term per pixel.
    """
    if not ds.is_local:
        v = np.arange(ds.n_model_pixels)
        return PairPlan(v, v, np.zeros_like(v), v, v, np.ones(v.size))
    n_v = ds.n_local_pixels
    tv = np.asarray(ds.ccm_tv, dtype=np.int64)
    l = np.asarray(ds.ccm_l, dtype=np.int64)
    c = np.asarray(ds.ccm_values, dtype=np.float64)
    t, v = tv // n_v, tv % n_v
    row = t * ds.n_model_pixels + l  # (t, l) row of each entry
    order = np.argsort(row, kind="stable")
    row, t, l, v, c = row[order], t[order], l[order], v[order], c[order]
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    sizes = np.diff(np.r_[starts, row.size])
    width = int(sizes.max()) if sizes.size else 0
    # entry index of slot s of each row (or -1): [rows, width]
    slots = starts[:, None] + np.arange(width)[None, :]
    slots = np.where(np.arange(width)[None, :] < sizes[:, None], slots, -1)
    a = np.repeat(slots, width, axis=1).reshape(-1)  # ordered entry pairs of each row
    b = np.tile(slots, (1, width)).reshape(-1)
    keep = (a >= 0) & (b >= 0)
    a, b = a[keep], b[keep]
    lo, hi = np.minimum(v[a], v[b]), np.maximum(v[a], v[b])
    key, term_pair = np.unique(lo * n_v + hi, return_inverse=True)
    return PairPlan(key // n_v, key % n_v, t[a], term_pair.reshape(-1), l[a], c[a] * c[b])


@functools.partial(jax.jit, static_argnames=("n_energies",))
def _pair_block(w, response, lo, hi, n_energies: int):
    """``Q[t, p, e] = Σ_i w[t, i] R[(lo_p, e), i] R[(hi_p, e), i]`` for a block of pairs."""
    r = response.reshape(-1, n_energies, response.shape[1])  # [v, Ei, i]
    prod = r[lo] * r[hi]  # [p, Ei, i]: the squared response of the block's pairs
    return jnp.einsum("ti,pei->tpe", w, prod)  # [t, i] x [p, Ei, i] -> [t, p, Ei]


@functools.partial(jax.jit, static_argnames=("n_model_pixels",))
def _terms(q, t, pair, l, coef, n_model_pixels: int):
    """``F[l, e] = Σ_terms C_a C_b Q[t, pair, e]``."""
    contrib = coef[:, None] * q[t, pair]  # [n_terms, Ei]
    return jax.ops.segment_sum(contrib, l, num_segments=n_model_pixels)  # -> [lb, Ei]


def _weights(ds: fm.Dataset, image, bkg, kind: str) -> jax.Array:
    e = fm.expected_counts(ds, image, bkg)  # [t, i]
    return 1.0 / e if kind == "expected" else ds.counts / (e * e)


def _pixel_diagonal(ds: fm.Dataset, w: jax.Array, plan: PairPlan) -> jax.Array:
    n_e, n_i = ds.n_energies, ds.response.shape[1]
    per_pair = max(1, n_e * n_i * ds.response.dtype.itemsize)
    block = int(max(1, min(len(plan.lo), _BLOCK_BYTES // per_pair)))
    lo = np.resize(plan.lo, -(-len(plan.lo) // block) * block)  # whole blocks: one compile
    hi = np.resize(plan.hi, lo.size)
    q = jnp.concatenate([
        _pair_block(w, ds.response, jnp.asarray(lo[s:s + block]), jnp.asarray(hi[s:s + block]),
                    n_e) for s in range(0, lo.size, block)], axis=1)  # [t, P', Ei]
    f = _terms(q, jnp.asarray(plan.term_t), jnp.asarray(plan.term_pair),
               jnp.asarray(plan.term_l), jnp.asarray(plan.term_coef, q.dtype),
               ds.n_model_pixels)
    return ds.pixel_area**2 * f


@jax.jit
def _bkg_diagonal(w, backgrounds, onehot):
    b = jnp.tensordot(onehot, backgrounds, axes=1)  # [K, k] x [k, t, i] -> [K, t, i]
    return jnp.sum(w[None] * b * b, axis=(1, 2))  # -> [K]


def data_diagonal(datasets: Sequence[fm.Dataset], image: jax.Array, bkg: jax.Array, *,
                  kind: str = "expected", plans: Sequence[PairPlan] | None = None
                  ) -> tuple[jax.Array, jax.Array]:
    """Diagonal of the Fisher information at ``(image, bkg)``, summed over datasets.

    Parameters
    ----------
    datasets
        The forward datasets.
    image
        ``[lb, Ei]`` flux (masked pixels 0).
    bkg
        ``[K]`` global background normalisations.
    kind
        ``"expected"`` (``w = 1/E``) or ``"observed"`` (``w = d/E²``).
    plans
        :func:`pair_plan` of each dataset (built when not given; reuse them for several
        points).

    Returns
    -------
    tuple
        ``([lb, Ei]`` pixel entries, ``[K]`` background entries``)``.
    """
    plans = [pair_plan(ds) for ds in datasets] if plans is None else plans
    n_bkg = int(np.shape(bkg)[0])
    pix = jnp.zeros(datasets[0].model_shape, image.dtype)
    bkg_diag = jnp.zeros(n_bkg, image.dtype)
    for ds, plan in zip(datasets, plans, strict=True):
        w = _weights(ds, image, bkg, kind)
        pix = pix + _pixel_diagonal(ds, w, plan)
        if ds.bkg_index and n_bkg:
            onehot = np.zeros((n_bkg, len(ds.bkg_index)))
            onehot[list(ds.bkg_index), np.arange(len(ds.bkg_index))] = 1.0
            if ds.bkg_rows is not None:  # time nodes: per template and time bin, then per row
                rows = row_sums(ds, jnp.sum(w[None] * ds.backgrounds ** 2, axis=2))
                bkg_diag = bkg_diag + jnp.asarray(onehot, w.dtype) @ rows
            else:
                bkg_diag = bkg_diag + _bkg_diagonal(w, ds.backgrounds,
                                                    jnp.asarray(onehot, w.dtype))
    logger.debug("Fisher diagonal (%s) from the squared response: %s pairs", kind,
                 [len(p.lo) for p in plans])
    return pix, bkg_diag
