"""Posterior draws with running moments, and :class:`Draws`, the plain result of a sampler.

A sampler appends draws chunk by chunk (``[chain, draws_in_chunk, ...]`` per variable) to a
:class:`DrawStore`; the store keeps the pooled mean and variance of every variable up to
date with Chan's parallel update, so mean and standard-deviation maps never need all draws
at once.  Quantiles and convergence diagnostics read the draws back in blocks of pixels
(:meth:`DrawStore.read`).

The draws live in memory, or in a *backend* given to the store: any object with
``create(chains, shapes, dtypes)``, ``append(arrays, start)``,
``write_moments(count, mean, m2)`` and ``read(name, selection)`` (plain arrays in and out),
e.g. the HDF5 file of :class:`probdeconv.io.draws.DrawsFile`, so no ``chains × draws ×
pixels`` array has to fit in memory.

Every sampler returns a :class:`Draws` record (store, method, settings, timings, the MAP it
started from, extras); :class:`probdeconv.results.posterior.Posterior` turns a problem and
that record into maps.

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

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["DrawStore", "Draws"]

logger = logging.getLogger(__name__)


class DrawStore:
    """Draws of named variables, ``[chain, draw, *shape]``, in memory or in a backend.

    Parameters
    ----------
    chains
        Number of chains (1 for independent draws: SVI, Laplace, bootstrap).
    shapes
        ``{name: per-draw shape}``.
    dtypes
        ``{name: dtype}`` (default float64).
    backend
        Where the draws go (see the module docstring); ``None`` keeps them in memory.
    """

    def __init__(self, chains: int, shapes: Mapping[str, tuple[int, ...]],
                 dtypes: Mapping[str, Any] | None = None, *, backend: Any = None) -> None:
        self.chains = int(chains)
        self.shapes = {k: tuple(int(n) for n in v) for k, v in shapes.items()}
        self.dtypes = {k: np.dtype((dtypes or {}).get(k, np.float64)) for k in self.shapes}
        self.backend = backend
        self.n_draws = 0
        self._count = 0
        self._mean = {k: np.zeros(s) for k, s in self.shapes.items()}
        self._m2 = {k: np.zeros(s) for k, s in self.shapes.items()}
        self._memory: dict[str, list[np.ndarray]] = {k: [] for k in self.shapes}
        self._cache: dict[str, np.ndarray] = {}
        if backend is not None:
            backend.create(self.chains, self.shapes, self.dtypes)

    @classmethod
    def restore(cls, backend: Any, *, chains: int, shapes: Mapping[str, tuple[int, ...]],
                dtypes: Mapping[str, Any], n_draws: int, count: int,
                mean: Mapping[str, np.ndarray], m2: Mapping[str, np.ndarray]) -> DrawStore:
        """A store over draws a backend already holds (e.g. a reopened file)."""
        new = cls(chains, shapes, dtypes)
        new.backend = backend
        new.n_draws, new._count = int(n_draws), int(count)
        new._mean = {k: np.asarray(mean[k]) for k in new.shapes} if mean else new._mean
        new._m2 = {k: np.asarray(m2[k]) for k in new.shapes} if m2 else new._m2
        return new

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    @property
    def path(self):
        """The backend's file (``None`` in memory)."""
        return getattr(self.backend, "path", None)

    @property
    def in_memory(self) -> bool:
        return self.backend is None

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
        if self.backend is None:
            for k, a in arrays.items():
                self._memory[k].append(a)
        else:
            self.backend.append(arrays, self.n_draws)
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
        if self.backend is not None:
            self.backend.write_moments(*self.moments())

    # ------------------------------------------------------------------ reading
    def moments(self) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(count, {name: mean}, {name: sum of squared deviations})`` over all draws."""
        return self._count, dict(self._mean), dict(self._m2)

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
        if self.backend is not None:
            return self.backend.read(name, sel)
        if name not in self._cache:
            parts = self._memory[name]
            empty = np.zeros((self.chains, 0, *self.shapes[name]), self.dtypes[name])
            self._cache[name] = np.concatenate(parts, axis=1) if parts else empty
            self._memory[name] = [self._cache[name]] if parts else []
        return self._cache[name][sel]

    def read_draws(self, name: str, start: int, stop: int) -> np.ndarray:
        """``[chain, stop - start, ...]``: draws ``start … stop − 1`` of every chain."""
        if self.backend is not None:
            return self.backend.read(name, (slice(None), slice(start, stop)))
        return self.read(name)[:, start:stop]

    def nbytes(self, name: str | None = None) -> int:
        """Size of all draws (of one variable, or of all)."""
        names = [name] if name else self.names
        return sum(self.chains * self.n_draws * int(np.prod(self.shapes[k]) or 1)
                   * self.dtypes[k].itemsize for k in names)


@dataclasses.dataclass(frozen=True)
class Draws:
    """What a sampler returns: its draws and how they were made (plain data).

    Attributes
    ----------
    store : DrawStore
        ``image [chain, draw, lb, Ei]``, ``bkg_norm [chain, draw, K]`` (when the backgrounds
        are free) and sample statistics ``stats.<name> [chain, draw]``.
    method : str
        ``"nuts"``, ``"hmc"``, ``"svi"``, ``"laplace"`` or ``"bootstrap"``.
    settings, timings : dict
        Run settings and timings (seconds).
    independent : bool
        True when draws are independent (SVI, Laplace, bootstrap): no chains to compare.
    map_image, map_bkg : numpy.ndarray or None
        The MAP (or estimate) the run started from or is centred on.
    extras : dict
        Further arrays (e.g. the SVI loss history).
    start : Start or None
        The sampler's :class:`~.start.Start`, when there is one.
    mcmc : numpyro.infer.MCMC or None
        The MCMC object of a single-chunk NUTS/HMC run (for :func:`arviz.from_numpyro`).
    """

    store: DrawStore
    method: str
    settings: dict = dataclasses.field(default_factory=dict)
    timings: dict = dataclasses.field(default_factory=dict)
    independent: bool = True
    map_image: np.ndarray | None = None
    map_bkg: np.ndarray | None = None
    extras: dict = dataclasses.field(default_factory=dict)
    start: Any = None
    mcmc: Any = None
