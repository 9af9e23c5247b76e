"""``probdeconv info FILE``: what a file holds, for every kind of file probdeconv reads or writes.

- HDF5 histograms (events, backgrounds, CCM, ``image.hdf5``, ``posterior.h5``): per group
  the kind, unit, shape, sum and one line per axis;
- full detector responses (``DRM``): the axes, and every compressed block read once, so a
  damaged file (missing ``CONTENTS``, a corrupt or truncated block) is reported as such
  (exit 2);
- other HDF5 files (``draws.h5``, ``posterior.nc``): the data sets with shape and type;
- FITS (``image_E<i>.fits``, ``iterations.fits``, ``posterior_E<e>.fits``): per HDU its
  columns and units, rows, and the HEALPix keywords;
- checkpoints (``checkpoint.npz``): the header (algorithm, iteration) and the arrays;
- YAML and CSV files (``run.yml``, ``config.yml``, ``iterations.csv``): their keys or
  columns and rows.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import h5py
import numpy as np
import yaml
from astropy.io import fits

from ..config.parameters import safe_load_yaml
from ..errors import FileFormatError
from ..io.checkpoint import read_checkpoint
from ..io.histpy_h5 import read_histogram
from ..shell.response import FullDetectorResponse

__all__ = ["info_command"]

logger = logging.getLogger(__name__)

FITS_MAGIC = b"SIMPLE  ="
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
HEALPIX_KEYS = ("PIXTYPE", "ORDERING", "NSIDE", "COORDSYS", "INDXSCHM", "BUNIT")


def info_command(args) -> int:
    """Print what ``args.file`` holds; exit code 0, or a ``FileFormatError`` (exit 2)."""
    path = Path(args.file)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file.")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(FITS_MAGIC):
        return _fits_info(path)
    if head.startswith(ZIP_MAGIC) or path.suffix == ".npz":
        return _checkpoint_info(path)
    if head.startswith(HDF5_MAGIC) or path.suffix in (".h5", ".hdf5", ".nc"):
        return _hdf5_info(path)
    if path.suffix in (".yml", ".yaml"):
        return _yaml_info(path)
    if path.suffix == ".csv":
        return _csv_info(path)
    raise FileFormatError(f"{path}: not an HDF5 file, FITS file, checkpoint, YAML or CSV "
                          "file; probdeconv info reads histograms, responses, CCMs, FITS "
                          "maps and tables, checkpoints, run records and iteration tables.")


def _hdf5_info(path: Path) -> int:
    try:
        with h5py.File(path, "r") as f:
            groups = list(f.keys())
            other = {k for k in groups if not (isinstance(f[k], h5py.Group)
                                               and {"axes", "contents"} <= set(f[k]))}
            datasets = []
            f.visititems(lambda name, obj: datasets.append((name, obj.shape, obj.dtype))
                         if isinstance(obj, h5py.Dataset) else None)
    except OSError as exc:
        raise FileFormatError(f"{path}: not an HDF5 file ({exc}); it may be truncated - "
                              "re-copy or regenerate it.") from exc
    if "DRM" in groups:
        with FullDetectorResponse.open(path) as rsp:
            print(rsp)
            _print_axes(rsp.axes)
            total = rsp.verify()  # every block read once: a damaged file is an error
        print(f"  every NuLambda pixel read: sum {total:.6g} {rsp.unit}")
        return 0
    if other == set(groups):
        if not datasets:
            raise FileFormatError(f"{path}: no histogram (histpy groups with 'axes' and "
                                  f"'contents'), no 'DRM' response and no data sets; groups: "
                                  f"{groups}.")
        print(f"{path}: HDF5, {len(datasets)} data set(s)")
        for name, shape, dtype in datasets:
            print(f"  {name}: shape {shape}, {dtype}")
        return 0
    for name in groups:
        if name in other:
            print(f"[{name}] not a histogram (skipped)")
            continue
        h = read_histogram(path, name=name)
        kind = "sparse" if h.is_sparse else "dense"
        total = float(h.contents.data.sum() if h.is_sparse else np.sum(np.asarray(h)))
        print(f"[{name}] {kind}, unit {h.unit}, shape {h.axes.shape}, sum {total:.6g}")
        _print_axes(h.axes)
    return 0


def _fits_info(path: Path) -> int:
    if path.stat().st_size % 2880:
        raise FileFormatError(f"{path}: damaged FITS file ({path.stat().st_size} bytes, not "
                              "a multiple of the 2880-byte FITS block: truncated?); re-copy "
                              "or regenerate it.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            hdus = fits.open(path, memmap=False, lazy_load_hdus=False)
        with hdus:
            hdus.verify("exception")
            for i, hdu in enumerate(hdus):
                kind = type(hdu).__name__
                if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
                    cols = ", ".join(f"{c.name}" + (f" [{c.unit}]" if c.unit else "")
                                     for c in hdu.columns)
                    print(f"[{i}] {hdu.name or '-'} {kind}: {hdu.data.shape[0]} rows; "
                          f"columns {cols}")
                    for c in hdu.columns:
                        values = np.asarray(hdu.data[c.name], dtype=float)
                        if values.size:
                            print(f"  {c.name}: min {np.nanmin(values):.6g}, max "
                                  f"{np.nanmax(values):.6g}, sum {np.nansum(values):.6g}")
                else:
                    shape = None if hdu.data is None else hdu.data.shape
                    print(f"[{i}] {hdu.name or '-'} {kind}: data {shape}")
                keys = {k: hdu.header[k] for k in HEALPIX_KEYS if k in hdu.header}
                if keys:
                    print("  " + ", ".join(f"{k} {v}" for k, v in keys.items()))
    except BrokenPipeError:
        raise  # the reader went away (`| head`): main ends quietly
    except (OSError, ValueError, TypeError, fits.VerifyError) as exc:
        raise FileFormatError(f"{path}: damaged FITS file ({exc}); re-copy or regenerate "
                              "it.") from exc
    return 0


def _checkpoint_info(path: Path) -> int:
    arrays, header = read_checkpoint(path)  # FileFormatError when damaged
    history = header.get("history") or []
    print(f"{path}: {header.get('format')} version {header.get('version')}, algorithm "
          f"{header.get('algorithm')!r}, iteration {header.get('iteration_count')} of "
          f"{header.get('iteration_max')}{' (stopped)' if header.get('stopped') else ''}, "
          f"{len(history)} iteration record(s)"
          f"{', data fingerprints recorded' if 'data' in header else ''}")
    for name, a in arrays.items():
        print(f"  {name}: shape {a.shape}, {a.dtype}")
    return 0


def _yaml_info(path: Path) -> int:
    try:
        data = safe_load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FileFormatError(f"{path}: not readable YAML ({' '.join(str(exc).split())}).") \
            from exc
    if not isinstance(data, dict):
        raise FileFormatError(f"{path}: top level is {type(data).__name__}; expected a YAML "
                              "mapping.")
    print(f"{path}: YAML mapping of {len(data)} key(s)")
    for key, value in data.items():
        shown = repr(value) if not isinstance(value, dict | list) else \
            f"{type(value).__name__} of {len(value)}"
        print(f"  {key}: {shown[:100]}")
    return 0


def _csv_info(path: Path) -> int:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FileFormatError(f"{path}: not a readable CSV file ({exc}).") from exc
    if not rows:
        raise FileFormatError(f"{path}: empty CSV file (no header line).")
    print(f"{path}: CSV, {len(rows) - 1} row(s); columns {', '.join(rows[0])}")
    if len(rows) > 1:
        print("  last row: " + ", ".join(f"{k} {v}" for k, v in zip(rows[0], rows[-1])))
    return 0


def _print_axes(axes) -> None:
    """One line per histpy axis: label, bins, range, unit, HEALPix NSIDE / scheme / frame."""
    for ax in axes:
        e = np.asarray(getattr(ax.edges, "value", ax.edges))
        extra = ""
        if hasattr(ax, "nside"):
            frame = getattr(ax.coordsys, "name", ax.coordsys)
            extra = f" nside {ax.nside} {ax.scheme} {frame or ''}".rstrip()
        print(f"  {ax.label}: {ax.nbins} bins [{e[0]:g}, {e[-1]:g}] {ax.unit or ''}{extra}")
