"""Read and write MEGAlib orientation files (``.ori``), as cosipy uses them.

Layout (one record per line, blanks separate the fields)::

    Type OrientationsGalactic
    OG time x_b x_l z_b z_l [altitude earth_b earth_l livetime]
    ...
    EN

``time`` is Unix seconds; ``x_*``/``z_*`` are the galactic latitude/longitude (deg) of the
spacecraft x- and z-axes; ``altitude`` (km) is the height above the Earth surface,
``earth_b``/``earth_l`` the galactic direction of the local zenith (away from the Earth)
and ``livetime`` (s) the live time of the interval up to the next record (the last value
is unused).  Lines starting with ``#`` and blank lines are skipped.

The reader parses with :func:`numpy.loadtxt` (C speed: millions of records in seconds)
and falls back to a line-by-line pass only to name the offending line of a bad file.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from probdeconv.errors import FileFormatError
from probdeconv.io.atomic import atomic_target

__all__ = ["read_ori", "write_ori", "atomic_target", "ORI_COLUMNS"]

logger = logging.getLogger(__name__)

HEADER = "Type OrientationsGalactic"
ORI_COLUMNS = ("time", "x_b", "x_l", "z_b", "z_l", "altitude", "earth_b", "earth_l",
               "livetime")
_SHORT, _LONG = 5, 9  # numbers per record without / with the Earth and livetime columns


def read_ori(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an orientation file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.ori`` file.

    Returns
    -------
    dict of str to ndarray
        ``time``, ``x_b``, ``x_l``, ``z_b``, ``z_l`` and, when the file has them,
        ``altitude``, ``earth_b``, ``earth_l``, ``livetime`` (one value per record).

    Raises
    ------
    FileFormatError
        Missing file, unknown header, malformed or unsorted record, missing ``EN``;
        the message names the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file; expected a MEGAlib orientation file "
                              f"(.ori) starting with '{HEADER}'")
    raw = path.read_bytes()
    first, _, rest = raw.partition(b"\n")
    header = first.decode("utf-8", errors="replace").strip()
    if header.split() != HEADER.split():
        raise FileFormatError(f"{path}:1: header {header!r}; expected '{HEADER}' (a MEGAlib "
                              "orientation file in galactic coordinates); convert the file "
                              "or check that it is an .ori file")
    body, n_cols = _split_body(path, rest)
    values = _fast_parse(body, n_cols)
    if values is None:
        values = _slow_parse(path, body, n_cols)  # raises with the line number
    out = {name: values[:, i].copy() for i, name in enumerate(ORI_COLUMNS[:n_cols])}
    _check_values(path, body, out)
    logger.debug("read %d orientation records (%d columns) from %s", values.shape[0],
                 n_cols, path)
    return out


def _split_body(path: Path, rest: bytes) -> tuple[bytes, int]:
    """The records between the header and ``EN``, and the number of values per record."""
    stripped = rest.rstrip()
    cut = stripped.rfind(b"\n")
    last = stripped[cut + 1:].strip()
    n_lines = stripped.count(b"\n") + 2
    if last != b"EN":
        text = last[:40].decode("utf-8", errors="replace")
        raise FileFormatError(f"{path}:{n_lines}: the file ends with {text!r}; a "
                              "complete .ori file ends with a line 'EN' (the file may be "
                              "truncated: re-copy it, or add 'EN' if the records are all "
                              "there)")
    body = stripped[:cut + 1] if cut >= 0 else b""
    n_cols = None
    for lineno, line in enumerate(body.split(b"\n", 64)[:64], start=2):
        tokens = line.split()
        if not tokens or tokens[0].startswith(b"#"):
            continue
        n_cols = len(tokens) - 1
        if tokens[0] != b"OG" or (n_cols != _SHORT and n_cols < _LONG):
            raise FileFormatError(
                f"{path}:{lineno}: {line.decode(errors='replace').strip()[:80]!r} is not a "
                f"record 'OG time x_b x_l z_b z_l [altitude earth_b earth_l livetime]' "
                f"({_SHORT} or {_LONG} numbers after 'OG'); fix or remove the line")
        n_cols = min(n_cols, _LONG)
        break
    if n_cols is None:
        raise FileFormatError(f"{path}: no 'OG' records between the header and 'EN'; an "
                              "orientation needs at least two records")
    return body, n_cols


def _fast_parse(body: bytes, n_cols: int) -> np.ndarray | None:
    """All records via numpy's C parser, or None if any line needs a closer look."""
    n_og = body.count(b"\nOG ") + body.count(b"\nOG\t") + (body[:3] in (b"OG ", b"OG\t"))
    try:
        values = np.loadtxt(io.BytesIO(body), usecols=range(1, n_cols + 1), comments="#",
                            dtype=np.float64, ndmin=2)
    except ValueError:
        return None
    return values if values.shape[0] == n_og else None


def _slow_parse(path: Path, body: bytes, n_cols: int) -> np.ndarray:
    rows = []
    for lineno, line in enumerate(body.decode("utf-8", errors="replace").split("\n"),
                                  start=2):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        text = line.strip()[:100]
        if tokens[0] == "EN":
            raise FileFormatError(f"{path}:{lineno}: 'EN' before the last record; remove "
                                  "the stray 'EN' or the records after it")
        if tokens[0] != "OG":
            raise FileFormatError(f"{path}:{lineno}: {text!r} does not start with 'OG'; "
                                  "every record of an orientation file is 'OG time x_b x_l "
                                  "z_b z_l ...'; fix or remove the line")
        if len(tokens) - 1 < n_cols:
            raise FileFormatError(f"{path}:{lineno}: {text!r} has {len(tokens) - 1} numbers, "
                                  f"expected {n_cols} like the first record; the line may "
                                  "be truncated")
        try:
            rows.append([float(t) for t in tokens[1:n_cols + 1]])
        except ValueError as err:
            raise FileFormatError(f"{path}:{lineno}: {text!r}: {err}; every field after "
                                  "'OG' must be a number") from err
    return np.array(rows, dtype=np.float64).reshape(-1, n_cols)


def _line_of(body: bytes, record: int) -> int:
    """File line number of the ``record``-th record (0-based)."""
    seen = -1
    for lineno, line in enumerate(body.split(b"\n"), start=2):
        tokens = line.split()
        if tokens and not tokens[0].startswith(b"#"):
            seen += 1
            if seen == record:
                return lineno
    return -1


def _check_values(path: Path, body: bytes, c: dict[str, np.ndarray]) -> None:
    t = c["time"]
    if t.size < 2:
        raise FileFormatError(f"{path}: {t.size} record(s); an orientation needs at least "
                              "two (the attitude is given per interval between records)")
    for name, values in c.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise FileFormatError(f"{path}:{_line_of(body, i)}: {name} is {float(values[i])}; "
                                  "expected a finite number")
    for name in ("x_b", "z_b", "earth_b"):
        if name in c:
            bad = np.flatnonzero(np.abs(c[name]) > 90.0)
            if bad.size:
                i = int(bad[0])
                raise FileFormatError(f"{path}:{_line_of(body, i)}: latitude {name} = "
                                      f"{float(c[name][i])} deg is outside [-90, 90]; the columns "
                                      "are 'OG time x_b x_l z_b z_l' (latitude first)")
    back = np.flatnonzero(np.diff(t) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise FileFormatError(f"{path}:{_line_of(body, i)}: time {float(t[i])!r} is not after "
                              f"the previous record's {float(t[i - 1])!r}; records must be "
                              "sorted by strictly increasing time (sort the file, drop "
                              "duplicates)")
    if "livetime" in c:
        bad = np.flatnonzero(c["livetime"][:-1] < 0)
        if bad.size:
            i = int(bad[0])
            raise FileFormatError(f"{path}:{_line_of(body, i)}: livetime "
                                  f"{float(c['livetime'][i])} s is negative; live times are "
                                  "durations (s) of the interval to the next record")


def write_ori(path: str | os.PathLike, columns: dict[str, np.ndarray],
              overwrite: bool = False) -> None:
    """Write an orientation file atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target ``.ori`` file.
    columns : dict of str to ndarray
        ``time``, ``x_b``, ``x_l``, ``z_b``, ``z_l`` and optionally all of ``altitude``,
        ``earth_b``, ``earth_l``, ``livetime`` (one value per record).
    overwrite : bool
        Replace an existing file.
    """
    names = ORI_COLUMNS if all(k in columns for k in ORI_COLUMNS) else ORI_COLUMNS[:_SHORT]
    table = np.column_stack([np.asarray(columns[k], dtype=np.float64) for k in names])
    with atomic_target(path, overwrite, "orientation file") as tmp:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(HEADER + "\n")
            _savetxt(f, table)
            f.write("EN\n")


def _savetxt(f: io.TextIOBase, table: np.ndarray) -> None:
    chunk = 200_000
    fmt = "OG " + " ".join(["%.17g"] * table.shape[1])
    for start in range(0, table.shape[0], chunk):
        np.savetxt(f, table[start:start + chunk], fmt=fmt)
