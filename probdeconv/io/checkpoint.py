"""Checkpoint files: the arrays of an iteration state plus a JSON header, written atomically.

A checkpoint is an uncompressed NumPy ``.npz`` archive: one member per state array under
its name, and the member ``header``, UTF-8 JSON ``{"format": "probdeconv-checkpoint",
"version": 1, ...}`` with whatever the caller records (algorithm, iteration count, scalar
history).  Arrays are stored exactly (same dtype and bits), so a run resumed from a
checkpoint continues as if it had never stopped.  The file is written beside its target
and renamed (:func:`~probdeconv.io.atomic.atomic_target`): an interrupted write, even a
SIGKILL, leaves the previous checkpoint intact.

Examples
--------
>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "checkpoint.npz"
>>> _ = write_checkpoint(path, {"model": np.arange(3.0)}, {"iteration_count": 2})
>>> arrays, header = read_checkpoint(path)
>>> arrays["model"], header["iteration_count"], header["version"]
(array([0., 1., 2.]), 2, 1)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FileFormatError
from .atomic import atomic_target

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "array_fingerprint", "write_checkpoint",
           "read_checkpoint", "read_checkpoint_header"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "probdeconv-checkpoint"
CHECKPOINT_VERSION = 1
HEADER = "header"


def _plain(value: Any) -> Any:
    """JSON fallback for NumPy scalars and arrays in a header."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise DataError(f"checkpoint header: {type(value).__name__} value {value!r} cannot be "
                    "written as JSON; record numbers, strings, lists or dicts.")


def array_fingerprint(*arrays: Any) -> str:
    """A short hash (BLAKE2b, 16 hex digits) of arrays: their dtypes, shapes and bytes.

    Stored in checkpoint headers so that a resume can tell whether it continues on the
    same data.  ``None`` entries count as absent arrays.

    Examples
    --------
    >>> a = np.arange(4.0)
    >>> array_fingerprint(a) == array_fingerprint(a.copy()), len(array_fingerprint(a))
    (True, 16)
    >>> array_fingerprint(a) == array_fingerprint(a + 1e-12)
    False
    """
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
    return h.hexdigest()


def write_checkpoint(path: str | os.PathLike, arrays: Mapping[str, Any],
                     header: Mapping[str, Any]) -> Path:
    """Write ``arrays`` (name → array) and a JSON ``header`` to ``path`` atomically.

    Parameters
    ----------
    path
        Target file (``.npz``); its directory is created when missing.
    arrays
        State arrays by name; stored bit for bit.  ``"header"`` is reserved.
    header
        JSON-able metadata; ``format`` and ``version`` are added.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DataError
        An array is named ``"header"`` or the header holds a value JSON cannot hold.
    """
    path = Path(path)
    if HEADER in arrays:
        raise DataError(f"write_checkpoint: an array is named {HEADER!r}, the name reserved "
                        "for the header; rename it.")
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **header}
    members = {name: np.asarray(a) for name, a in arrays.items()}
    members[HEADER] = np.frombuffer(json.dumps(meta, default=_plain).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path, True, "checkpoint") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **members)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
    logger.debug("checkpoint written to %s (%d arrays)", path, len(arrays))
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by :func:`write_checkpoint`: ``(arrays, header)``.

    Raises
    ------
    FileFormatError
        The file is missing, unreadable or truncated, is not a probdeconv checkpoint, or
        has another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no checkpoint there; start the run without resuming.")
    try:
        with np.load(path, allow_pickle=False) as z:
            members = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FileFormatError(f"{path}: not a readable probdeconv checkpoint ({exc}); start "
                              "the run afresh without resuming.") from exc
    raw = members.pop(HEADER, None)
    try:
        header = json.loads(bytes(raw).decode()) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path}: the checkpoint header is not JSON ({exc}); start "
                              "the run afresh without resuming.") from exc
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise FileFormatError(f"{path}: not a {CHECKPOINT_FORMAT} file (no header; written "
                              "by an older probdeconv or another program); start the run "
                              "afresh without resuming.")
    if header.get("version") != CHECKPOINT_VERSION:
        raise FileFormatError(f"{path}: checkpoint format version {header.get('version')!r}; "
                              f"this probdeconv reads version {CHECKPOINT_VERSION}. Start the "
                              "run afresh without resuming.")
    return members, header


def read_checkpoint_header(path: str | os.PathLike) -> dict | None:
    """The JSON header of a checkpoint without reading its arrays; ``None`` when the file is
    missing or not a readable checkpoint (for messages, e.g. after an interruption).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "checkpoint.npz"
    >>> _ = write_checkpoint(path, {"model": np.zeros(2)}, {"iteration_count": 7})
    >>> read_checkpoint_header(path)["iteration_count"], read_checkpoint_header(path.parent)
    (7, None)
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z[HEADER]).decode())
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError, zipfile.BadZipFile):
        return None
    return header if isinstance(header, dict) else None
