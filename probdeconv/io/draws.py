"""The draws file (``draws.h5``): posterior draws and their running moments in HDF5.

Layout: one dataset per variable, shape ``[chain, draw, ...]``, resizable along ``draw``
and chunked by pixel blocks (a block of pixels reads only its own chunks); group
``moments`` with ``<name>.mean`` and ``<name>.m2`` and attribute ``count``; file attributes
``format = "probdeconv-draws-1"`` and ``chains``.

:class:`DrawsFile` is the storage backend a :class:`probdeconv.inference.draws.DrawStore`
streams into (plain arrays in and out); :func:`open_draws` reads a file's header to reopen
it; :func:`write_draws` copies any store into a new file, atomically.

Examples
--------
>>> import tempfile, pathlib, numpy as np
>>> path = pathlib.Path(tempfile.mkdtemp()) / "draws.h5"
>>> f = DrawsFile(path)
>>> f.create(1, {"x": (2,)}, {"x": np.dtype(float)})
>>> f.append({"x": np.ones((1, 3, 2))}, start=0)
>>> f.write_moments(3, {"x": np.ones(2)}, {"x": np.zeros(2)})
>>> head = open_draws(path)
>>> head["chains"], head["n_draws"], head["shapes"]
(1, 3, {'x': (2,)})
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import FileFormatError
from .atomic import atomic_target

__all__ = ["FORMAT", "DrawsFile", "open_draws", "write_draws"]

logger = logging.getLogger(__name__)

FORMAT = "probdeconv-draws-1"


class DrawsFile:
    """An HDF5 draws file as a storage backend: ``[chain, draw, ...]`` per variable.

    Parameters
    ----------
    path
        The file; :meth:`create` replaces an existing one.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def create(self, chains: int, shapes: Mapping[str, tuple[int, ...]],
               dtypes: Mapping[str, Any]) -> None:
        """Start an empty file with one resizable dataset per variable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(self.path, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["chains"] = int(chains)
            for k, s in shapes.items():
                # chunks of <= 256 draws x 256 pixels: a block of pixels reads only its
                # own chunks (diagnostics and quantiles go pixel block by pixel block)
                inner = (min(s[0], 256), *s[1:]) if s else ()
                size = int(np.prod(inner)) if inner else 1
                per = max(1, min(256, 2**21 // max(size * 8, 1)))
                f.create_dataset(k, shape=(chains, 0, *s), maxshape=(chains, None, *s),
                                 dtype=np.dtype(dtypes[k]), chunks=(1, per, *inner))

    def append(self, arrays: Mapping[str, np.ndarray], start: int) -> None:
        """Write ``{name: [chain, n, ...]}`` as draws ``start … start + n − 1``."""
        with h5py.File(self.path, "a") as f:
            for k, a in arrays.items():
                ds = f[k]
                n = a.shape[1]
                ds.resize(start + n, axis=1)
                ds[:, start:start + n] = a

    def write_moments(self, count: int, mean: Mapping[str, np.ndarray],
                      m2: Mapping[str, np.ndarray]) -> None:
        """Replace the running moments (count, mean and sum of squared deviations)."""
        with h5py.File(self.path, "a") as f:
            g = f.require_group("moments")
            g.attrs["count"] = int(count)
            for k in mean:
                for what, v in (("mean", mean[k]), ("m2", m2[k])):
                    if f"{k}.{what}" in g:
                        del g[f"{k}.{what}"]
                    g.create_dataset(f"{k}.{what}", data=np.asarray(v))

    def read(self, name: str, selection: Any = ()) -> np.ndarray:
        """The draws of ``name`` at ``selection`` (an index into ``[chain, draw, ...]``)."""
        with h5py.File(self.path, "r") as f:
            return np.asarray(f[name][selection])


def open_draws(path: str | os.PathLike) -> dict:
    """Header of a draws file: ``backend`` (a :class:`DrawsFile`), ``chains``, ``shapes``,
    ``dtypes``, ``n_draws``, ``count``, ``mean``, ``m2``.

    Raises
    ------
    FileFormatError
        Not an HDF5 file, or not a probdeconv draws file.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot be opened as HDF5 ({exc}); expected the "
                              "draws file of a posterior directory.") from exc
    with f:
        if f.attrs.get("format") != FORMAT:
            raise FileFormatError(f"{path}: not a probdeconv draws file (format "
                                  f"{f.attrs.get('format')!r}, expected {FORMAT!r}).")
        shapes = {k: tuple(f[k].shape[2:]) for k in f if isinstance(f[k], h5py.Dataset)}
        g = f.get("moments")
        return {
            "backend": DrawsFile(path),
            "chains": int(f.attrs["chains"]),
            "shapes": shapes,
            "dtypes": {k: f[k].dtype for k in shapes},
            "n_draws": int(next(iter(f[k].shape[1] for k in shapes), 0)),
            "count": int(g.attrs["count"]) if g is not None else 0,
            "mean": {k: np.asarray(g[f"{k}.mean"]) for k in shapes} if g else {},
            "m2": {k: np.asarray(g[f"{k}.m2"]) for k in shapes} if g else {},
        }


def write_draws(path: str | os.PathLike, store: Any) -> Path:
    """Copy all draws and moments of ``store`` into a new draws file (atomically).

    ``store`` is read through ``chains``, ``shapes``, ``dtypes``, ``n_draws``, ``nbytes()``,
    ``read_draws(name, start, stop)`` and ``moments()`` (a
    :class:`~probdeconv.inference.draws.DrawStore`).  A store already streaming into
    ``path`` is left as it is.
    """
    path = Path(path)
    own = getattr(store, "path", None)
    if own is not None and Path(own).resolve() == path.resolve():
        return path
    with atomic_target(path, True, "posterior draws") as tmp:
        out = DrawsFile(tmp)
        out.create(store.chains, store.shapes, store.dtypes)
        per_draw = max(store.nbytes() // max(store.n_draws, 1), 1)
        block = max(1, int(2**27 // per_draw))
        for start in range(0, store.n_draws, block):
            stop = min(start + block, store.n_draws)
            out.append({k: store.read_draws(k, start, stop) for k in store.shapes}, start)
        out.write_moments(*store.moments())
    return path
