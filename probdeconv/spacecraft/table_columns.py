"""Columnar storage of an exposure table: :class:`ExposureTableColumns`.

Per-bin columns are arrays; per-pointing columns (``zpointing``, ``xpointing``,
``delta_time``, ``livetime``, ``earth_zenith``, ``altitude``) are flat arrays of all
pointings sorted by bin, with bin offsets, so that a table of millions of pointings is
built and used without Python loops.  :meth:`ExposureTableColumns.to_dataframe` gives the
same columns as the pandas DataFrame cosipy's exposure table is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from probdeconv.errors import DataError

__all__ = ["ExposureTableColumns", "PER_BIN", "PER_POINTING"]

PER_BIN = ("scatt_binning_index", "healpix_index_z_pointing", "healpix_index_x_pointing",
           "zpointing_averaged", "xpointing_averaged", "exposure", "num_pointings",
           "bkg_group")
PER_POINTING = ("zpointing", "xpointing", "delta_time", "livetime", "earth_zenith",
                "altitude")


class ExposureTableColumns(Mapping):
    """The columns of an exposure table as flat arrays.

    ``cols[name]`` gives an array for per-bin columns and a list of per-bin arrays for
    per-pointing columns (``zpointing``, ``xpointing``: ``(n_i, 2)`` [l, b] deg;
    ``delta_time``, ``livetime``: s; ``earth_zenith``; ``altitude``: km).
    ``healpix_index`` gives the list of ``(z, x)`` pixel pairs.
    """

    def __init__(self, per_bin: dict[str, np.ndarray], flat: dict[str, np.ndarray | None],
                 offsets: np.ndarray) -> None:
        self._bin = per_bin
        self._flat = flat
        self._off = np.asarray(offsets, dtype=np.int64)

    @classmethod
    def from_lists(cls, c: Mapping[str, Any] | pd.DataFrame) -> ExposureTableColumns:
        """Build from cosipy-style columns: a DataFrame, or a mapping of lists.

        Per-pointing columns are sequences of per-bin arrays; ``healpix_index`` may replace
        the two ``healpix_index_*_pointing`` columns.

        Raises
        ------
        DataError
            A column is missing, or per-pointing columns disagree on the bins' lengths.
        """
        missing = [k for k in ("exposure", "delta_time", "zpointing", "xpointing",
                               "zpointing_averaged", "xpointing_averaged") if k not in c]
        if missing:
            raise DataError(f"exposure table: column(s) {missing} missing; a table needs "
                            f"the columns of analyze_orientation ({list(PER_BIN)} and "
                            f"{list(PER_POINTING[:3])})")
        n = len(c["exposure"])
        counts = np.array([len(np.atleast_1d(v)) for v in c["delta_time"]], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        if "healpix_index" in c and "healpix_index_z_pointing" not in c:
            hz, hx = (np.array([p[k] for p in c["healpix_index"]]) for k in (0, 1))
        else:
            hz, hx = c["healpix_index_z_pointing"], c["healpix_index_x_pointing"]
        per_bin = dict(
            scatt_binning_index=np.asarray(c.get("scatt_binning_index", np.arange(n)),
                                           dtype=np.int64),
            healpix_index_z_pointing=np.asarray(hz, dtype=np.int64),
            healpix_index_x_pointing=np.asarray(hx, dtype=np.int64),
            zpointing_averaged=_pairs(c["zpointing_averaged"], n),
            xpointing_averaged=_pairs(c["xpointing_averaged"], n),
            exposure=np.asarray(c["exposure"], dtype=np.float64),
            num_pointings=np.asarray(c.get("num_pointings", counts), dtype=np.int64),
            bkg_group=np.asarray(c.get("bkg_group", np.zeros(n)), dtype=np.int64))
        flat: dict[str, np.ndarray | None] = {}
        for name in PER_POINTING:
            parts = c.get(name)
            if parts is None:
                flat[name] = None
                continue
            width = 2 if name in ("zpointing", "xpointing", "earth_zenith") else 1
            arr = [np.asarray(p, dtype=np.float64).reshape(-1, width) for p in parts]
            if [len(a) for a in arr] != counts.tolist():
                raise DataError(f"exposure table column {name!r}: per-bin lengths "
                                f"{[len(a) for a in arr][:8]} differ from delta_time's "
                                f"{counts.tolist()[:8]}")
            joined = np.concatenate(arr) if arr else np.zeros((0, width))
            flat[name] = joined if width == 2 else joined[:, 0]
        return cls(per_bin, flat, offsets)

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:  # type: ignore[override]
        names = ["scatt_binning_index", "healpix_index", "healpix_index_z_pointing",
                 "healpix_index_x_pointing", "zpointing", "xpointing", "zpointing_averaged",
                 "xpointing_averaged", "delta_time", "exposure", "num_pointings", "bkg_group"]
        names += [k for k in ("livetime", "earth_zenith", "altitude")
                  if self._flat[k] is not None]
        if self._flat["livetime"] is not None:
            names.append("total_livetime")
        return names

    @property
    def nbins(self) -> int:
        return int(self._off.size - 1)

    def __getitem__(self, name: str) -> Any:
        if name in self._bin:
            return self._bin[name].copy()
        if name == "healpix_index":
            return list(zip(self._bin["healpix_index_z_pointing"].tolist(),
                            self._bin["healpix_index_x_pointing"].tolist()))
        if name == "total_livetime" and self._flat.get("livetime") is not None:
            return np.add.reduceat(self._flat["livetime"], self._off[:-1]) if self.nbins \
                else np.zeros(0)
        if name in self._flat and self._flat[name] is not None:
            return np.split(self._flat[name].copy(), self._off[1:-1])
        raise KeyError(f"exposure table has no column {name!r}; columns: {self.keys()}")

    def to_dataframe(self) -> pd.DataFrame:
        """cosipy's exposure table: one row per bin, per-pointing columns as arrays.

        Columns ``scatt_binning_index``, ``healpix_index`` (``(z, x)`` tuples),
        ``zpointing``, ``xpointing`` (``(n, 2)`` [l, b] deg), ``zpointing_averaged``,
        ``xpointing_averaged`` ([l, b] deg), ``delta_time`` (s), ``exposure`` (s),
        ``num_pointings``, ``bkg_group``, then ``livetime``, ``total_livetime``,
        ``earth_zenith`` and ``altitude`` (cosipy 0.4's columns) when known.
        """
        data: dict[str, Any] = {"scatt_binning_index": self["scatt_binning_index"],
                                "healpix_index": self["healpix_index"]}
        for name in ("zpointing", "xpointing"):
            data[name] = self[name]
        for name in ("zpointing_averaged", "xpointing_averaged"):
            data[name] = list(self[name])
        data["delta_time"] = self["delta_time"]
        for name in ("exposure", "num_pointings", "bkg_group"):
            data[name] = self[name]
        for name in ("livetime", "total_livetime", "earth_zenith", "altitude"):
            if name in self.keys():
                data[name] = self[name]
        return pd.DataFrame(data)

    def flat(self, name: str) -> np.ndarray | None:
        """All pointings' values of a per-pointing column, sorted by bin (no copy)."""
        return self._flat[name]

    @property
    def offsets(self) -> np.ndarray:
        """Start of each bin in the flat per-pointing arrays (length ``nbins + 1``)."""
        return self._off.copy()

    def select(self, keep: np.ndarray) -> ExposureTableColumns:
        """The bins where ``keep`` is True, renumbered from 0."""
        keep = np.asarray(keep, dtype=bool)
        counts = np.diff(self._off)[keep]
        rows = np.repeat(keep, np.diff(self._off))
        per_bin = {k: v[keep] for k, v in self._bin.items()}
        per_bin["scatt_binning_index"] = np.arange(int(keep.sum()), dtype=np.int64)
        flat = {k: None if v is None else v[rows] for k, v in self._flat.items()}
        return ExposureTableColumns(per_bin, flat, np.concatenate([[0], np.cumsum(counts)]))


def _pairs(column: Any, n: int) -> np.ndarray:
    """``(n, 2)`` float array from an array or a sequence of [l, b] pairs."""
    a = np.asarray(list(column) if not isinstance(column, np.ndarray) else column,
                   dtype=np.float64)
    if a.size != 2 * n:
        raise DataError(f"exposure table: averaged pointings hold {a.size} numbers; expected "
                        f"{n} [l, b] pairs")
    return a.reshape(n, 2)
