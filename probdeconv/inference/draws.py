"""Posterior draws kept in memory or streamed to an HDF5 file, with running moments.

A sampler appends draws chunk by chunk (``[chain, draws_in_chunk, ...]`` per variable);
the store keeps the pooled mean and variance of every variable up to date with Chan's
parallel update, so mean and standard-deviation maps never need all draws at once.
Quantiles and convergence diagnostics read the draws back in blocks of pixels
(:meth:`DrawStore.read`), so no ``chains × draws × pixels`` array has to fit in memory
when the store is a file.

File layout (``draws.h5``): one dataset per variable, shape ``[chain, draw, ...]``,
resizable along ``draw`` and chunked by pixel blocks; group ``moments`` with ``<name>.mean``
and ``<name>.m2`` and attribute ``count``.

Examples
--------
>>> import numpy as np
>>> store = DrawStore(chains=2, shapes={"x": (3,)})
>>> store.append({"x": np.ones((2, 4, 3))})
>>> store.append({"x": 3 * np.ones((2, 4, 3))})
>>> store.n_draws, store.mean("x").tolist(), store.var("x").tolist()
(8, [2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DataError, FileFormatError

__all__ = ["DrawStore"]

logger = logging.getLogger(__name__)


class DrawStore:
    """Draws of named variables, ``[chain, draw, *shape]``, in memory or in an HDF5 file.

    Parameters
    ----------
    chains
        Number of chains (1 for independent draws: SVI, Laplace, bootstrap).
    shapes
        ``{name: per-draw shape}``.
    path
        HDF5 file to stream into (created; an existing file is replaced); ``None`` keeps
        the draws in memory.
    dtypes
        ``{name: dtype}`` (default float64).
    """

    def __init__(self, chains: int, shapes: Mapping[str, tuple[int, ...]],
                 path: str | os.PathLike | None = None,
                 dtypes: Mapping[str, Any] | None = None) -> None:
        self.chains = int(chains)
        self.shapes = {k: tuple(int(n) for n in v) for k, v in shapes.items()}
        self.dtypes = {k: np.dtype((dtypes or {}).get(k, np.float64)) for k in self.shapes}
        self.path = None if path is None else Path(path)
        self.n_draws = 0
        self._count = 0
        self._mean = {k: np.zeros(s) for k, s in self.shapes.items()}
        self._m2 = {k: np.zeros(s) for k, s in self.shapes.items()}
        self._memory: dict[str, list[np.ndarray]] = {k: [] for k in self.shapes}
        self._cache: dict[str, np.ndarray] = {}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(self.path, "w") as f:
                f.attrs["format"] = "probdeconv-draws-1"
                f.attrs["chains"] = self.chains
                for k, s in self.shapes.items():
                    # chunks of <= 256 draws x 256 pixels: a block of pixels reads only its
                    # own chunks (diagnostics and quantiles go pixel block by pixel block)
                    inner = (min(s[0], 256), *s[1:]) if s else ()
                    size = int(np.prod(inner)) if inner else 1
                    per = max(1, min(256, 2**21 // max(size * 8, 1)))
                    f.create_dataset(k, shape=(self.chains, 0, *s),
                                     maxshape=(self.chains, None, *s), dtype=self.dtypes[k],
                                     chunks=(1, per, *inner))

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    @property
    def in_memory(self) -> bool:
        return self.path is None

    def append(self, chunk: Mapping[str, Any]) -> None:
        """Add ``{name: [chain, n, *shape]}`` (every variable, the same ``n``)."""
        arrays = {k: np.asarray(chunk[k], dtype=self.dtypes[k]) for k in self.shapes}
        ns = {a.shape[1] for a in arrays.values()}
        if len(ns) != 1:
            raise DataError(f"DrawStore.append: variables have different draw counts {ns}.")
        n = ns.pop()
        for k, a in arrays.items():
            want = (self.chains, n, *self.shapes[k])
            if a.shape != want:
                raise DataError(f"DrawStore.append: {k!r} has shape {a.shape}; expected {want}.")
        if self.path is None:
            for k, a in arrays.items():
                self._memory[k].append(a)
        else:
            with h5py.File(self.path, "a") as f:
                for k, a in arrays.items():
                    ds = f[k]
                    ds.resize(self.n_draws + n, axis=1)
                    ds[:, self.n_draws:self.n_draws + n] = a
        self._update_moments(arrays, n)
        self.n_draws += n
        self._cache.clear()

    def _update_moments(self, arrays: Mapping[str, np.ndarray], n: int) -> None:
        m = self.chains * n
        total = self._count + m
        for k, a in arrays.items():
            flat = a.reshape(m, *self.shapes[k]).astype(np.float64)
            mean_b = flat.mean(axis=0)
            m2_b = ((flat - mean_b) ** 2).sum(axis=0)
            delta = mean_b - self._mean[k]
            self._mean[k] = self._mean[k] + delta * (m / total)
            self._m2[k] = self._m2[k] + m2_b + delta**2 * (self._count * m / total)
        self._count = total
        if self.path is not None:
            with h5py.File(self.path, "a") as f:
                g = f.require_group("moments")
                g.attrs["count"] = self._count
                for k in self.shapes:
                    for what, v in (("mean", self._mean[k]), ("m2", self._m2[k])):
                        if f"{k}.{what}" in g:
                            del g[f"{k}.{what}"]
                        g.create_dataset(f"{k}.{what}", data=v)

    # ------------------------------------------------------------------ reading
    def mean(self, name: str) -> np.ndarray:
        """Pooled mean over chains and draws."""
        return self._mean[name].copy()

    def var(self, name: str, ddof: int = 0) -> np.ndarray:
        """Pooled variance over chains and draws."""
        return self._m2[name] / max(self._count - ddof, 1)

    def read(self, name: str, index: Any = ()) -> np.ndarray:
        """``[chain, draw, ...]`` draws of ``name``, optionally a selection of the trailing axes.

        ``index`` applies to the per-draw axes, e.g. ``slice(0, 100)`` (pixels 0–99).
        """
        if not isinstance(index, tuple):
            index = (index,)
        sel = (slice(None), slice(None), *index)
        if self.path is None:
            if name not in self._cache:
                parts = self._memory[name]
                empty = np.zeros((self.chains, 0, *self.shapes[name]), self.dtypes[name])
                self._cache[name] = np.concatenate(parts, axis=1) if parts else empty
                self._memory[name] = [self._cache[name]] if parts else []
            return self._cache[name][sel]
        with h5py.File(self.path, "r") as f:
            return np.asarray(f[name][sel])

    def nbytes(self, name: str | None = None) -> int:
        """Size of all draws (of one variable, or of all)."""
        names = [name] if name else self.names
        return sum(self.chains * self.n_draws * int(np.prod(self.shapes[k]) or 1)
                   * self.dtypes[k].itemsize for k in names)

    # ------------------------------------------------------------------ files
    def write(self, path: str | os.PathLike) -> Path:
        """Write all draws and moments to an HDF5 file (atomically)."""
        from ..io.atomic import atomic_target

        path = Path(path)
        if self.path is not None and self.path.resolve() == path.resolve():
            return path
        with atomic_target(path, True, "posterior draws") as tmp:
            copy = DrawStore(self.chains, self.shapes, tmp, self.dtypes)
            block = max(1, int(2**27 // max(self.nbytes() // max(self.n_draws, 1), 1)))
            for start in range(0, self.n_draws, block):
                stop = min(start + block, self.n_draws)
                copy.append({k: self._slice_draws(k, start, stop) for k in self.names})
        return path

    def _slice_draws(self, name: str, start: int, stop: int) -> np.ndarray:
        if self.path is None:
            return self.read(name)[:, start:stop]
        with h5py.File(self.path, "r") as f:
            return np.asarray(f[name][:, start:stop])

    @classmethod
    def open(cls, path: str | os.PathLike) -> DrawStore:
        """Reopen a store written by :meth:`write` or streamed to a file (read-only use)."""
        path = Path(path)
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise FileFormatError(f"{path}: cannot be opened as HDF5 ({exc}); expected the "
                                  "draws file of a posterior directory.") from exc
        with f:
            if f.attrs.get("format") != "probdeconv-draws-1":
                raise FileFormatError(f"{path}: not a probdeconv draws file (format "
                                      f"{f.attrs.get('format')!r}).")
            shapes = {k: tuple(f[k].shape[2:]) for k in f if isinstance(f[k], h5py.Dataset)}
            dtypes = {k: f[k].dtype for k in shapes}
            new = object.__new__(cls)
            new.chains = int(f.attrs["chains"])
            new.shapes, new.dtypes, new.path = shapes, dtypes, path
            new.n_draws = int(next(iter(f[k].shape[1] for k in shapes), 0))
            g = f.get("moments")
            new._count = int(g.attrs["count"]) if g is not None else 0
            new._mean = {k: np.asarray(g[f"{k}.mean"]) for k in shapes} if g else {}
            new._m2 = {k: np.asarray(g[f"{k}.m2"]) for k in shapes} if g else {}
            new._memory, new._cache = {k: [] for k in shapes}, {}
        return new
