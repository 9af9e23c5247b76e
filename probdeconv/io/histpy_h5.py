"""Read and write histograms in histpy's HDF5 layout (as used by cosipy).

Layout of one histogram stored under group ``name`` (default ``"hist"``)::

    name/                 attrs: format = 'dense' | 'coo', unit (optional, astropy string)
      axes/0, axes/1 ...  bin edges; attrs __class__ = [module, class], label, scale,
                          unit (optional); HEALPix axes also nside, scheme, coordsys
      contents            dense: dataset of shape nbins (+2 on overflow-tracked axes)
                          coo: group with coords (ndim x nnz), data, shape, fill_value
      sumw2               optional, same kind as contents

One file may hold several histograms under different group names.  Writes are atomic:
the new file is assembled under a temporary name in the target directory and moved
into place with :func:`os.replace`.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import astropy.units as u
import h5py
import numpy as np

from probdeconv.errors import FileFormatError, ProbdeconvError
from probdeconv.histogram import (
    Axes,
    Axis,
    CooContents,
    HealpixAxis,
    Histogram,
    as_histogram,
)
from probdeconv.io.atomic import atomic_target

__all__ = ["read_histogram", "write_histogram"]

logger = logging.getLogger(__name__)

_AXIS_CLASS = np.array(["histpy.axis", "Axis"], dtype=object)
_HEALPIX_CLASS = np.array(["histpy.healpix_axis", "HealpixAxis"], dtype=object)
_CORRUPT = (OSError, KeyError, ValueError, TypeError, RuntimeError)


def _text(value: Any) -> str:
    """An HDF5 attribute as ``str`` (h5py may return bytes or 0-d arrays)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8")
    return str(value)


# ---------------------------------------------------------------------- reading
def read_histogram(path: str | os.PathLike, name: str = "hist") -> Histogram:
    """Read the histogram stored in group ``name`` of an HDF5 file.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file written by histpy, cosipy or probdeconv.
    name : str
        Group holding the histogram.

    Returns
    -------
    Histogram
        Sparse when the file stores COO contents, dense otherwise.

    Raises
    ------
    FileFormatError
        The file is missing, not HDF5 (e.g. truncated), lacks the group, or the group
        is not in histpy's layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file; expected an HDF5 file holding a "
                              f"histogram in group {name!r} (histpy/cosipy layout)")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise FileFormatError(f"{path}: cannot be opened as HDF5 ({err}); the file may be "
                              "truncated or not HDF5 - re-create or re-download it") from err
    with handle:
        try:
            if name not in handle:
                raise FileFormatError(f"{path}: no group {name!r}; groups present: "
                                      f"{sorted(handle.keys())}; pass name=<one of them>")
            group = handle[name]
            if not isinstance(group, h5py.Group):
                raise FileFormatError(f"{path}: {name!r} is a dataset, expected a histogram "
                                      "group holding 'axes' and 'contents'")
            return _read_group(group, f"{path}:{name}")
        except FileFormatError:
            raise
        except ProbdeconvError as err:
            raise FileFormatError(f"{path} group {name!r}: {err}") from err
        except _CORRUPT as err:
            raise FileFormatError(f"{path} group {name!r}: could not be read "
                                  f"({type(err).__name__}: {err}); the file may be "
                                  "truncated or corrupt") from err


def _read_group(group: h5py.Group, where: str) -> Histogram:
    missing = [k for k in ("axes", "contents") if k not in group]
    if missing:
        raise FileFormatError(f"{where}: missing {missing}; a histpy histogram group holds "
                              f"'axes' and 'contents' (found {sorted(group.keys())})")
    fmt = _text(group.attrs.get("format", "dense"))
    unit = None
    if "unit" in group.attrs:
        text = _text(group.attrs["unit"])
        try:
            unit = u.Unit(text)
        except ValueError as err:
            raise FileFormatError(f"{where}: unit attribute {text!r} is not an astropy "
                                  "unit") from err
    axes_group = group["axes"]
    try:
        keys = sorted(axes_group.keys(), key=int)
    except ValueError as err:
        raise FileFormatError(f"{where}/axes: entries must be named 0, 1, 2, ..., found "
                              f"{sorted(axes_group.keys())}") from err
    axes = Axes([_read_axis(axes_group[k], f"{where}/axes/{k}") for k in keys])

    if fmt == "dense":
        contents: Any = _read_dense(group["contents"], f"{where}/contents")
        sumw2 = _read_dense(group["sumw2"], f"{where}/sumw2") if "sumw2" in group else None
    elif fmt == "coo":
        contents = _read_coo(group["contents"], f"{where}/contents")
        sumw2 = _read_coo(group["sumw2"], f"{where}/sumw2") if "sumw2" in group else None
    else:
        raise FileFormatError(f"{where}: contents format {fmt!r} is not supported; expected "
                              "'dense' or 'coo' (re-save the histogram with COO contents)")
    shape = tuple(contents.shape)
    if len(shape) != axes.ndim:
        raise FileFormatError(f"{where}: contents have {len(shape)} dimensions {shape} but "
                              f"there are {axes.ndim} axes {axes.labels}")
    track = tuple(s == n + 2 for s, n in zip(shape, axes.nbins))
    return Histogram(axes, contents, unit=unit, sumw2=sumw2, track_overflow=track, copy=False)


def _read_dense(obj: Any, where: str) -> np.ndarray:
    if not isinstance(obj, h5py.Dataset):
        raise FileFormatError(f"{where}: expected a dataset for format 'dense', found a group "
                              "(is the 'format' attribute wrong?)")
    return np.asarray(obj[()])


def _read_coo(obj: Any, where: str) -> CooContents:
    if not isinstance(obj, h5py.Group):
        raise FileFormatError(f"{where}: expected a group for format 'coo', found a dataset")
    missing = [k for k in ("coords", "data", "shape") if k not in obj]
    if missing:
        raise FileFormatError(f"{where}: COO group lacks {missing}; expected coords, data, "
                              "shape and fill_value")
    fill = obj["fill_value"][()] if "fill_value" in obj else 0
    return CooContents(obj["coords"][()], obj["data"][()], tuple(obj["shape"][()]),
                       np.asarray(fill)[()])


def _read_axis(ds: Any, where: str) -> Axis:
    if not isinstance(ds, h5py.Dataset):
        raise FileFormatError(f"{where}: expected a dataset of bin edges, found a group")
    attrs = ds.attrs
    edges = np.asarray(ds[()])
    cls = [_text(c) for c in np.atleast_1d(attrs["__class__"])] if "__class__" in attrs else []
    clsname = cls[-1] if cls else "Axis"
    label = _text(attrs["label"]) if "label" in attrs else None
    if clsname == "HealpixAxis":
        nside = int(np.asarray(attrs["nside"])) if "nside" in attrs else None
        scheme = _text(attrs.get("scheme", "RING"))
        coordsys = _text(attrs["coordsys"]) if "coordsys" in attrs else None
        return HealpixAxis(nside, scheme, edges, label, coordsys)
    if clsname != "Axis":
        logger.warning("%s: axis class %s is not known here; reading it as a plain Axis",
                       where, cls)
    scale = _text(attrs.get("scale", "linear"))
    unit = _text(attrs["unit"]) if "unit" in attrs else None
    return Axis(edges, label=label, scale=scale, unit=unit)


# ---------------------------------------------------------------------- writing
def write_histogram(hist: Any, path: str | os.PathLike, name: str = "hist",
                    overwrite: bool = False) -> None:
    """Write a histogram to group ``name`` of an HDF5 file in histpy's layout.

    Parameters
    ----------
    hist : Histogram
        probdeconv (or histpy) histogram.
    path : str or os.PathLike
        Target file.  If it exists, the group is added to it.
    name : str
        Group name.
    overwrite : bool
        Replace the group ``name`` if the file already holds it (other groups are
        kept); also allows replacing an existing file that is not readable HDF5.

    Raises
    ------
    FileFormatError
        The group exists and ``overwrite`` is False, the directory does not exist, or
        an existing file is not HDF5 and ``overwrite`` is False.
    """
    hist = as_histogram(hist)
    path = Path(path)
    if path.exists() and not path.is_file():
        raise FileFormatError(f"{path} exists and is not a file; choose another path")
    with atomic_target(path, overwrite=True, what="histogram file") as tmp:
        if not (path.exists() and _add_to_copy(path, tmp, hist, name, overwrite)):
            with h5py.File(tmp, "w") as f:
                _write_group(f, name, hist)
    logger.debug("wrote histogram %r to %s", name, path)


def _add_to_copy(path: Path, tmp: Path, hist: Histogram, name: str, overwrite: bool) -> bool:
    """Copy ``path`` to ``tmp`` and write the group there; False if path is not HDF5."""
    try:
        with h5py.File(path, "r") as src:
            present, groups = name in src, sorted(src.keys())
    except OSError as err:
        if not overwrite:
            raise FileFormatError(f"{path} exists but is not a readable HDF5 file ({err}); "
                                  "pass overwrite=True to replace it, or choose another "
                                  "path") from err
        logger.warning("replacing %s, which is not a readable HDF5 file", path)
        return False
    if present and not overwrite:
        raise FileFormatError(f"{path} already holds a group {name!r} (groups: {groups}); "
                              "pass overwrite=True to replace it, or choose another name")
    shutil.copyfile(path, tmp)
    with h5py.File(tmp, "a") as handle:
        if name in handle:
            del handle[name]
        _write_group(handle, name, hist)
    return True


def _write_group(f: h5py.File, name: str, hist: Histogram) -> None:
    group = f.create_group(name)
    group.attrs["format"] = "coo" if hist.is_sparse else "dense"
    if hist.unit is not None:
        group.attrs["unit"] = str(hist.unit)
    axes_group = group.create_group("axes")
    for i, axis in enumerate(hist.axes):
        _write_axis(axes_group, str(i), axis)
    track = np.asarray(hist.track_overflow, dtype=bool)
    contents = hist.contents
    _write_contents(group, "contents", contents if hist.is_sparse else
                    np.asarray(getattr(contents, "value", contents)), track)
    if hist.sumw2 is not None:
        _write_contents(group, "sumw2", hist.sumw2, track)


def _write_contents(group: h5py.Group, key: str, store: Any, track: np.ndarray) -> None:
    """Write dense or COO contents, adding zero under/overflow bins on tracked axes."""
    if isinstance(store, CooContents):
        shift = track.astype(np.int64)
        sub = group.create_group(key)
        sub.create_dataset("coords", data=store.coords + shift[:, None], compression="gzip",
                           track_times=False)
        sub.create_dataset("data", data=store.data, compression="gzip", track_times=False)
        sub.create_dataset("shape", data=np.asarray(store.shape, dtype=np.int64) + 2 * shift,
                           track_times=False)
        sub.create_dataset("fill_value", data=np.asarray(store.fill_value,
                                                         dtype=store.data.dtype),
                           track_times=False)
        return
    values = np.asarray(store)
    if track.any():
        values = np.pad(values, [(1, 1) if t else (0, 0) for t in track])
    group.create_dataset(key, data=values, track_times=False)


def _write_axis(axes_group: h5py.Group, key: str, axis: Axis) -> None:
    ds = axes_group.create_dataset(key, data=axis._edges, track_times=False)
    healpix = isinstance(axis, HealpixAxis)
    ds.attrs["__class__"] = np.array(_HEALPIX_CLASS if healpix else _AXIS_CLASS,
                                     dtype=h5py.string_dtype())
    ds.attrs["scale"] = axis.scale
    if axis.label is not None:
        ds.attrs["label"] = str(axis.label)
    if axis.unit is not None:
        ds.attrs["unit"] = str(axis.unit)
    if healpix:
        ds.attrs["nside"] = np.int64(axis.nside)
        ds.attrs["scheme"] = axis.scheme
        if axis.coordsys is not None:
            ds.attrs["coordsys"] = str(axis.coordsys)
