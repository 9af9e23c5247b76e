"""Atomic file writing: write to a temporary file beside the target, then rename.

A reader never sees a half-written file, and an interrupted write (even SIGKILL) leaves
the previous version of the file intact.  A write that fails (disk full, read-only file
system, no permission) removes its temporary file and raises
:class:`~probdeconv.errors.OutputError` naming the file and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from probdeconv.errors import FileFormatError, OutputError, ProbdeconvError

__all__ = ["atomic_target", "os_error_hint", "new_file_mode"]

_HINTS = {
    errno.ENOSPC: "the disk is full: free space or write to another directory",
    errno.EDQUOT: "the disk quota is exceeded: free space or write to another directory",
    errno.EROFS: "the file system is read-only: write to another directory",
    errno.EACCES: "no permission to write there: write to another directory",
    errno.EPERM: "no permission to write there: write to another directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EISDIR: "it is a directory: choose a file name",
    errno.EEXIST: "it exists and is not a directory: choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.EFBIG: "the file is too large for this file system: write elsewhere",
}


def os_error_hint(exc: OSError) -> str:
    """Words for an ``OSError`` of a write: what happened and what to do.

    h5py reports C-library errors without ``errno``; their text is searched for the cause.

    Examples
    --------
    >>> import errno
    >>> os_error_hint(OSError(errno.ENOSPC, "No space left on device"))
    'No space left on device; the disk is full: free space or write to another directory'
    """
    code = exc.errno
    text = os.strerror(code) if code in _HINTS else (exc.strerror or str(exc))
    if code is None:
        for candidate, words in ((errno.ENOSPC, "No space left"),
                                 (errno.EROFS, "Read-only file system"),
                                 (errno.EACCES, "Permission denied"),
                                 (errno.EDQUOT, "quota exceeded")):
            if words.lower() in text.lower():
                code, text = candidate, os.strerror(candidate)
                break
    hint = _HINTS.get(code)
    return f"{text}; {hint}" if hint else text


def new_file_mode() -> int:
    """Permissions of a new file under the current umask (``0o666 & ~umask``).

    Examples
    --------
    >>> 0 < new_file_mode() <= 0o666
    True
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike, overwrite: bool, what: str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block ends.

    A file that is replaced keeps its permissions; a new one gets the umask's.  If the
    block or the rename fails, the temporary file is removed (nothing half-written is
    left) and the previous ``path``, if any, is untouched.

    Raises
    ------
    FileFormatError
        ``path`` exists and ``overwrite`` is False, or its directory does not exist.
    OutputError
        The temporary file cannot be created or written, or the rename fails (disk full,
        read-only file system, no permission); the message names ``path`` and the cause.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_target(target, overwrite=False, what="note") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('hello', ['note.txt'])
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileFormatError(f"{path}: directory {path.parent} does not exist; create it "
                              f"before writing the {what}")
    if path.exists() and not overwrite:
        raise FileFormatError(f"{path} exists; pass overwrite=True to replace the {what} "
                              "or choose another file name")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the {what} ({os_error_hint(exc)}).") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if path.is_file():  # a replaced file keeps its permissions
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except ProbdeconvError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: writing the {what} failed ({os_error_hint(exc)}); "
                          "nothing was written there (the temporary file is removed).") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
