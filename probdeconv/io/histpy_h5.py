"""Histograms in files: histpy's HDF5 layout, read with errors that name the file, written
atomically.

histpy reads and writes the layout itself (``Histogram.open`` / ``Histogram.write``); this
module adds what a user of files needs on top of it:

* :func:`read_histogram` says which file, group or layout is wrong (``FileFormatError``)
  instead of an ``OSError``/``KeyError`` from h5py;
* :func:`write_histogram` writes to a temporary file beside the target and renames it
  (:func:`probdeconv.io.atomic.atomic_target`), adding the group to a copy of an existing
  file;
* importing it registers cositools' ``spacecraftframe`` with astropy (``scoords``), so that
  histograms whose HEALPix axes are in the spacecraft frame open without the user
  importing anything.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import h5py
import scoords  # noqa: F401  (registers the 'spacecraftframe' coordinate frame with astropy)
from histpy import Histogram

from probdeconv.errors import FileFormatError
from probdeconv.io.atomic import atomic_target

__all__ = ["read_histogram", "write_histogram", "SPACECRAFT_FRAME"]

logger = logging.getLogger(__name__)

SPACECRAFT_FRAME = "spacecraftframe"  # coordsys of NuLambda / PsiChi axes (scoords)

_CORRUPT = (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError)


def read_histogram(path: str | os.PathLike, name: str = "hist") -> Histogram:
    """Read the histogram stored in group ``name`` of an HDF5 file (histpy's layout).

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file written by histpy, cosipy or probdeconv.
    name : str
        Group holding the histogram.

    Returns
    -------
    histpy.Histogram
        Sparse when the file stores COO contents.  Subclasses (``AllSkyImageModel``,
        ``CoordsysConversionMatrix``) take it over with their ``from_histogram``.

    Raises
    ------
    FileFormatError
        The file is missing, not HDF5 (e.g. truncated), lacks the group, or the group
        is not in histpy's layout.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from histpy import Histogram
    >>> path = Path(tempfile.mkdtemp()) / "h.h5"
    >>> write_histogram(Histogram([0, 1, 2], contents=[3.0, 4.0]), path)
    >>> read_histogram(path).contents.tolist()
    [3.0, 4.0]
    >>> read_histogram(path, name="other")
    Traceback (most recent call last):
    ...
    probdeconv.errors.FileFormatError: ...: no group 'other'; groups present: ['hist']; ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file; expected an HDF5 file holding a "
                              f"histogram in group {name!r} (histpy/cosipy layout)")
    try:
        with h5py.File(path, "r") as handle:
            if name not in handle:
                raise FileFormatError(f"{path}: no group {name!r}; groups present: "
                                      f"{sorted(handle.keys())}; pass name=<one of them>")
            group = handle[name]
            if not isinstance(group, h5py.Group) or not {"axes", "contents"} <= set(group):
                found = sorted(group.keys()) if isinstance(group, h5py.Group) else "a dataset"
                raise FileFormatError(f"{path}: {name!r} is not a histogram group (found "
                                      f"{found}); a histpy histogram holds 'axes' and "
                                      "'contents'")
    except OSError as err:
        raise FileFormatError(f"{path}: cannot be opened as HDF5 ({err}); the file may be "
                              "truncated or not HDF5 - re-create or re-download it") from err
    try:
        return Histogram.open(path, name=name)
    except _CORRUPT as err:
        raise FileFormatError(f"{path} group {name!r}: could not be read as a histpy "
                              f"histogram ({type(err).__name__}: {err}); the file may be "
                              "truncated, corrupt, or of a layout histpy does not know") from err


def write_histogram(hist: Histogram, path: str | os.PathLike, name: str = "hist",
                    overwrite: bool = False) -> None:
    """Write a histogram to group ``name`` of an HDF5 file, atomically.

    Parameters
    ----------
    hist : histpy.Histogram
        Any histpy histogram (or subclass).
    path : str or os.PathLike
        Target file.  If it exists, the group is added to (a copy of) it.
    name : str
        Group name.
    overwrite : bool
        Replace the group ``name`` if the file already holds it (other groups are
        kept); also allows replacing an existing file that is not readable HDF5.

    Raises
    ------
    FileFormatError
        ``hist`` is not a histpy Histogram, the group exists and ``overwrite`` is False,
        the directory does not exist, or an existing file is not HDF5 and ``overwrite``
        is False.

    Examples
    --------
    >>> import tempfile
    >>> from histpy import Histogram
    >>> path = Path(tempfile.mkdtemp()) / "two.h5"
    >>> write_histogram(Histogram([0, 1, 2], contents=[1.0, 2.0]), path, name="a")
    >>> write_histogram(Histogram([0, 1, 2], contents=[5.0, 6.0]), path, name="b")
    >>> sorted(h5py.File(path, "r").keys())
    ['a', 'b']
    """
    if not isinstance(hist, Histogram):
        raise FileFormatError(f"write_histogram: expected a histpy Histogram for group "
                              f"{name!r}, got a {type(hist).__name__}")
    path = Path(path)
    if path.exists() and not path.is_file():
        raise FileFormatError(f"{path} exists and is not a file; choose another path")
    with atomic_target(path, overwrite=True, what="histogram file") as tmp:
        tmp.unlink()  # histpy creates the file (or we copy the existing one)
        if path.exists():
            _copy_existing(path, tmp, name, overwrite)
        hist.write(tmp, name=name, overwrite=overwrite)
    logger.debug("wrote histogram %r to %s", name, path)


def _copy_existing(path: Path, tmp: Path, name: str, overwrite: bool) -> None:
    """Copy the HDF5 file ``path`` to ``tmp`` (checking the group); nothing if not HDF5."""
    try:
        with h5py.File(path, "r") as src:
            present, groups = name in src, sorted(src.keys())
    except OSError as err:
        if not overwrite:
            raise FileFormatError(f"{path} exists but is not a readable HDF5 file ({err}); "
                                  "pass overwrite=True to replace it, or choose another "
                                  "path") from err
        logger.warning("replacing %s, which is not a readable HDF5 file", path)
        return
    if present and not overwrite:
        raise FileFormatError(f"{path} already holds a group {name!r} (groups: {groups}); "
                              "pass overwrite=True to replace it, or choose another name")
    shutil.copyfile(path, tmp)

