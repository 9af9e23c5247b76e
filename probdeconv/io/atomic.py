"""Atomic file writing: write to a temporary file beside the target, then rename.

A reader never sees a half-written file, and an interrupted write (even SIGKILL) leaves
the previous version of the file intact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from probdeconv.errors import FileFormatError

__all__ = ["atomic_target"]


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike, overwrite: bool, what: str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block ends.

    A file that is replaced keeps its permissions; a new one gets the umask's.

    Raises
    ------
    FileFormatError
        ``path`` exists and ``overwrite`` is False, or its directory does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileFormatError(f"{path}: directory {path.parent} does not exist; create it "
                              f"before writing the {what}")
    if path.exists() and not overwrite:
        raise FileFormatError(f"{path} exists; pass overwrite=True to replace the {what} "
                              "or choose another file name")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if path.is_file():  # a replaced file keeps its permissions
            shutil.copymode(path, tmp)
        else:
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
