"""Response products of a dataset: the dense response, its mixed-precision form and a
continuum response that keeps only the energy blocks that can be non-zero.

The response of a dataset is ``R[(v, e), i]`` with ``i`` the flattened
``(Em, Phi, PsiChi)`` bin.  Three storage forms share the two products used by
:mod:`probdeconv.forward.model`:

- a dense array of the dataset's dtype (float64 by default, or float32);
- a dense **float32** array in a float64 dataset (``precision="mixed"``): the products
  take float32 inputs and return float64, so that expectations, likelihood sums, the EM
  ratio ``d / E`` and back-projected images are float64;
- a :class:`TriangularResponse`: a continuum response whose measured energy ``Em`` cannot
  exceed the initial energy ``Ei``, stored as one block per ``Em`` bin ``j`` holding the
  rows ``(v, e)`` with ``e >= start[j]`` only (for identical ``Ei``/``Em`` edges
  ``start[j] = j``: 55 of 100 blocks for 10 × 10 bins).

Pure, jit-able functions; the blocks are pytree leaves.

Examples
--------
>>> import numpy as np
>>> r = np.ones((4, 3, 3, 2, 5)); r[:, 0, 1:] = 0; r[:, 1, 2:] = 0   # Em > Ei is zero
>>> tri = TriangularResponse.from_dense(r)
>>> tri.start, tri.nbytes / (r.size * r.itemsize)
((0, 1, 2), 0.6666666666666666)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DataError

__all__ = ["TriangularResponse", "response_product", "response_adjoint_product",
           "response_row_sums", "dense_response_bytes", "triangular_starts"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TriangularResponse:
    """A ``[NuLambda, Ei, Em, Phi, PsiChi]`` response stored as its non-zero ``Em`` blocks.

    ``blocks[j]`` is ``R[(v, e), (j, Phi, PsiChi)]`` for ``e >= start[j]``, shape
    ``[NuLambda * (Ei - start[j]), Phi * PsiChi]`` (rows ``v``-major like the dense form).
    ``shape`` is the dense two-axis shape ``[(v, Ei), (Em, Phi, PsiChi)]`` it stands for.
    Build it with :meth:`from_dense` or :meth:`from_blocks`.
    """

    blocks: tuple[jax.Array, ...]
    start: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    full_shape: tuple[int, int, int, int, int] = dataclasses.field(metadata=dict(static=True))

    @property
    def shape(self) -> tuple[int, int]:
        n_v, n_e, n_m, n_phi, n_psi = self.full_shape
        return (n_v * n_e, n_m * n_phi * n_psi)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> np.dtype:
        return self.blocks[0].dtype

    @property
    def nbytes(self) -> int:
        """Bytes held by the blocks (the dense form holds ``dense_response_bytes``)."""
        return int(sum(b.size * b.dtype.itemsize for b in self.blocks))

    def reshape(self, *shape):
        """Refused: code that reshapes the response needs its dense form."""
        raise DataError(f"TriangularResponse {self.full_shape}: this computation needs a "
                        "dense response (it reshapes it); build the dataset from "
                        "TriangularResponse.to_dense() for it, if that fits in memory.")

    def astype(self, dtype) -> TriangularResponse:
        return dataclasses.replace(self, blocks=tuple(jnp.asarray(b, dtype) for b in self.blocks))

    @classmethod
    def from_blocks(cls, blocks, start, full_shape, dtype="float64") -> TriangularResponse:
        """From host blocks (see the class docstring for their shapes), checked."""
        full_shape = tuple(int(n) for n in full_shape)
        if len(full_shape) != 5:
            raise DataError(f"TriangularResponse: full_shape {full_shape} has "
                            f"{len(full_shape)} axes; expected 5, [NuLambda, Ei, Em, Phi, PsiChi].")
        n_v, n_e, n_m, n_phi, n_psi = full_shape
        start = tuple(int(s) for s in start)
        if len(start) != n_m or len(blocks) != n_m:
            raise DataError(f"TriangularResponse: {len(blocks)} blocks and {len(start)} starts "
                            f"for {n_m} Em bins; give one of each per Em bin.")
        out = []
        for j, (s, b) in enumerate(zip(start, blocks, strict=True)):
            want = (n_v * (n_e - s), n_phi * n_psi)
            if not 0 <= s < n_e or tuple(np.shape(b)) != want:
                raise DataError(f"TriangularResponse: block {j} (Em bin {j}) has shape "
                                f"{tuple(np.shape(b))} and start {s}; expected 0 <= start < "
                                f"{n_e} and shape {want} = [NuLambda * (Ei - start), "
                                "Phi * PsiChi].")
            b = np.asarray(b)
            if not np.all(np.isfinite(b)) or np.any(b < 0):
                raise DataError(f"TriangularResponse: block {j} has NaN, infinite or negative "
                                "values; a response must be finite and >= 0.")
            out.append(jnp.array(b, dtype=dtype, copy=True))
        return cls(tuple(out), start, full_shape)

    @classmethod
    def from_dense(cls, response, start=None, dtype="float64") -> TriangularResponse:
        """From a dense ``[NuLambda, Ei, Em, Phi, PsiChi]`` array.

        ``start[j]`` is the first ``Ei`` bin that reaches ``Em`` bin ``j`` (default ``j``:
        the same energy edges on both axes; see :func:`triangular_starts` for others).

        Raises
        ------
        DataError
            When a dropped block (``e < start[j]``) holds a non-zero value.
        """
        r = np.asarray(response)
        if r.ndim != 5:
            raise DataError(f"TriangularResponse.from_dense: the response has {r.ndim} axes; "
                            "expected 5, [NuLambda, Ei, Em, Phi, PsiChi].")
        n_v, n_e, n_m = r.shape[:3]
        start = tuple(range(n_m)) if start is None else tuple(int(s) for s in start)
        if len(start) != n_m or any(not 0 <= s < n_e for s in start):
            raise DataError(f"TriangularResponse.from_dense: start {start} must give one Ei "
                            f"bin in [0, {n_e}) per Em bin ({n_m}).")
        if n_m > n_e and start == tuple(range(n_m)):
            raise DataError(f"TriangularResponse.from_dense: {n_m} Em bins for {n_e} Ei bins; "
                            "give start (triangular_starts(ei_edges, em_edges)).")
        blocks = []
        for j, s in enumerate(start):
            dropped = r[:, :s, j]
            if np.any(dropped != 0):
                raise DataError(f"TriangularResponse.from_dense: Em bin {j} has non-zero "
                                f"response from Ei bins below {s} (max {dropped.max()!r}); "
                                "these blocks cannot be dropped. Check start or the response.")
            blocks.append(r[:, s:, j].reshape(n_v * (n_e - s), -1))
        return cls.from_blocks(blocks, start, r.shape, dtype)

    def to_dense(self) -> np.ndarray:
        """The dense ``[NuLambda, Ei, Em, Phi, PsiChi]`` array (for checks on small cases)."""
        n_v, n_e, n_m, n_phi, n_psi = self.full_shape
        out = np.zeros(self.full_shape, dtype=self.dtype)
        for j, (s, b) in enumerate(zip(self.start, self.blocks, strict=True)):
            out[:, s:, j] = np.asarray(b).reshape(n_v, n_e - s, n_phi, n_psi)
        return out


def triangular_starts(ei_edges, em_edges) -> tuple[int, ...]:
    """First ``Ei`` bin that can reach each ``Em`` bin: the first whose upper edge exceeds
    the ``Em`` bin's lower edge (measured energy ≤ initial energy).

    >>> triangular_starts([100, 200, 400, 800], [100, 200, 400, 800])
    (0, 1, 2)
    """
    ei, em = np.asarray(ei_edges, float), np.asarray(em_edges, float)
    return tuple(int(np.searchsorted(ei[1:], lo, side="right")) for lo in em[:-1])


def dense_response_bytes(full_shape, itemsize: int = 8) -> int:
    """Bytes of a dense response of ``full_shape`` (``itemsize`` 8: float64)."""
    return int(np.prod(full_shape, dtype=np.int64)) * int(itemsize)


def _matmul(a: jax.Array, r: jax.Array, out_dtype) -> jax.Array:
    """``a @ r`` with ``a`` cast to ``r``'s dtype, the result in ``out_dtype``.

    ``HIGHEST`` precision: a float32 product is a float32 product on GPUs too (JAX's
    default there rounds float32 inputs to TF32, ~1e-3 relative).
    """
    return jnp.matmul(a.astype(r.dtype), r,
                      precision=jax.lax.Precision.HIGHEST).astype(out_dtype)


def _matmul_t(a: jax.Array, r: jax.Array, out_dtype) -> jax.Array:
    """``a @ r.T`` contracting the last axes directly: XLA's CPU backend materialises
    ``r.T`` for ``a @ r.T`` (a second copy of the response, 4.5 GB at DC2 size)."""
    return jax.lax.dot_general(a.astype(r.dtype), r, (((1,), (1,)), ((), ())),
                               precision=jax.lax.Precision.HIGHEST).astype(out_dtype)


def response_product(m: jax.Array, response, out_dtype=None) -> jax.Array:
    """``Σ_{(v,e)} m[t, (v, e)] R[(v, e), i]``, shape ``[t, i]``, in ``out_dtype``
    (default ``m``'s dtype).  A float32 response takes ``m`` in float32."""
    out_dtype = m.dtype if out_dtype is None else out_dtype
    if not isinstance(response, TriangularResponse):
        return _matmul(m, response, out_dtype)  # [t, (v, Ei)] x [(v, Ei), i] -> [t, i]
    n_v, n_e = response.full_shape[:2]
    m3 = m.reshape(m.shape[0], n_v, n_e)  # [t, v, Ei]
    return jnp.concatenate([  # one [t, (Phi, PsiChi)] block per Em bin
        _matmul(m3[:, :, s:].reshape(m.shape[0], -1), b, out_dtype)  # [t, (v, Ei>=s)] x block
        for s, b in zip(response.start, response.blocks, strict=True)], axis=1)


def response_adjoint_product(h: jax.Array, response, out_dtype=None) -> jax.Array:
    """``Σ_i h[t, i] R[(v, e), i]``, shape ``[t, (v, e)]``: the transpose of
    :func:`response_product`."""
    out_dtype = h.dtype if out_dtype is None else out_dtype
    if not isinstance(response, TriangularResponse):
        return _matmul_t(h, response, out_dtype)  # [t, i] x [(v, Ei), i] -> [t, (v, Ei)]
    n_v, n_e, n_m = response.full_shape[:3]
    n_t, n_q = h.shape[0], h.shape[1] // n_m
    u = jnp.zeros((n_t, n_v, n_e), out_dtype)
    for j, (s, b) in enumerate(zip(response.start, response.blocks, strict=True)):
        hj = h[:, j * n_q:(j + 1) * n_q]  # [t, (Phi, PsiChi)] of Em bin j
        uj = _matmul_t(hj, b, out_dtype)  # [t, q] x [(v, Ei>=s), q] -> [t, (v, Ei>=s)]
        u = u.at[:, :, s:].add(uj.reshape(n_t, n_v, n_e - s))
    return u.reshape(n_t, n_v * n_e)


def response_row_sums(response, dtype) -> jax.Array:
    """``Σ_i R[(v, e), i]``, shape ``[(v, e)]``, accumulated in ``dtype``."""
    if not isinstance(response, TriangularResponse):
        return jnp.sum(response, axis=1, dtype=dtype)
    n_v, n_e = response.full_shape[:2]
    out = jnp.zeros((n_v, n_e), dtype)
    for s, b in zip(response.start, response.blocks, strict=True):
        out = out.at[:, s:].add(jnp.sum(b, axis=1, dtype=dtype).reshape(n_v, n_e - s))
    return out.reshape(-1)
