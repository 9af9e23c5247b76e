"""Saving deconvolution results in cosipy's layout, atomically.

- one HDF5 file per map (``model.hdf5``, ``delta_model.hdf5``, ...): group ``result``
  holds the final map and, unless only the final result is asked for, group
  ``iteration<N>`` each iteration's map;
- ``results.fits``: one binary table per scalar series (``ALPHA``, ``BKG_NORM``,
  ``LOG-LIKELIHOOD``, ...), each with the counter column ``iteration``;
- ``iterations.csv`` (``probdeconv run``): one row per iteration, columns ``iteration``,
  ``log_likelihood`` (summed over datasets), ``alpha``, ``log_posterior`` (``nan`` when the
  algorithm has none) and ``bkg_<name>`` per background.

Every file is written to a temporary name in the target directory and renamed, so an
interrupted run never leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from .atomic import atomic_target

__all__ = ["save_histogram_series", "save_scalar_tables", "write_iterations_csv"]

logger = logging.getLogger(__name__)


def save_histogram_series(path: str | Path, results: Sequence[dict], key: str,
                          counter_name: str = "iteration", only_final_result: bool = False
                          ) -> Path:
    """Write ``results[-1][key]`` as group ``result`` and each iteration's as ``<counter><N>``.

    The maps are histpy histograms, written by histpy into one temporary file that is then
    renamed onto ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path, True, "results") as tmp:
        tmp.unlink()  # histpy creates the file
        results[-1][key].write(tmp, name="result", overwrite=True)
        if not only_final_result:
            for r in results:
                if key not in r:  # e.g. iterations before a resume keep scalars only
                    continue
                r[key].write(tmp, name=f"{counter_name}{r[counter_name]}", overwrite=True)
    return path


def save_scalar_tables(path: str | Path, results: Sequence[dict], *,
                       counter_name: str = "iteration",
                       values: Sequence[tuple[str, str]] = (),
                       dicts: Sequence[tuple[str, str]] = (),
                       lists: Sequence[tuple[str, str, Sequence[str]]] = ()) -> Path:
    """Write per-iteration scalars as FITS binary tables.

    ``values``: ``(result key, HDU name)`` of a float per iteration; ``dicts``: a dict of
    floats per iteration (one column per key); ``lists``: a list per iteration with the
    column names given (e.g. dataset names).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counter = fits.Column(name=counter_name, format="K",
                          array=np.array([int(r[counter_name]) for r in results]))
    hdus: list = [fits.PrimaryHDU()]
    for key, name in values:
        col = fits.Column(name=key, format="D", array=[float(r[key]) for r in results])
        hdu = fits.BinTableHDU.from_columns([counter, col])
        hdu.name = name
        hdus.append(hdu)
    for key, name in dicts:
        names = list(results[0][key].keys()) if results else []
        cols = [fits.Column(name=k, format="D", array=[float(r[key][k]) for r in results])
                for k in names]
        hdu = fits.BinTableHDU.from_columns([counter, *cols])
        hdu.name = name
        hdus.append(hdu)
    for key, name, colnames in lists:
        cols = [fits.Column(name=str(c), format="D", array=[float(r[key][i]) for r in results])
                for i, c in enumerate(colnames)]
        hdu = fits.BinTableHDU.from_columns([counter, *cols])
        hdu.name = name
        hdus.append(hdu)
    with atomic_target(path, True, "results table") as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return path


def write_iterations_csv(path: str | Path, history: Sequence[dict],
                         bkg_keys: Sequence[str]) -> Path:
    """Write the per-iteration scalars as ``iterations.csv``, atomically (``repr`` floats:
    read back bit for bit).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "iterations.csv"
    >>> _ = write_iterations_csv(p, [{"iteration": 1, "log-likelihood": [1.5, 2.0],
    ...                               "background_normalization": {"bkg": 0.9}}], ["bkg"])
    >>> p.read_text().splitlines()
    ['iteration,log_likelihood,alpha,log_posterior,bkg_bkg', '1,3.5,1.0,nan,0.9']
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["iteration", "log_likelihood", "alpha", "log_posterior",
                *[f"bkg_{k}" for k in bkg_keys]])
    for r in history:
        w.writerow([int(r["iteration"]), repr(float(np.sum(r["log-likelihood"]))),
                    repr(float(r.get("alpha", 1.0))),
                    repr(float(r.get("log-posterior", float("nan")))),
                    *[repr(float(r["background_normalization"][k])) for k in bkg_keys]])
    path = Path(path)
    with atomic_target(path, True, "iteration table") as tmp:
        tmp.write_text(buf.getvalue())
    return path
