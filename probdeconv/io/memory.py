"""Memory the machine can give: checked before a large allocation, so that a setting that
cannot fit is refused with the figure and how to reduce it instead of a ``MemoryError``
(or the operating system's out-of-memory killer) minutes later.

Examples
--------
>>> need = 3 * 2**30
>>> fits = available_memory() is None or need < available_memory()
>>> format_bytes(need)
'3.0 GiB'
"""

from __future__ import annotations

import logging
import os

from probdeconv.errors import ParameterError

__all__ = ["USABLE_FRACTION", "available_memory", "format_bytes", "require_memory"]

logger = logging.getLogger(__name__)

# Share of the available memory one allocation may claim (the rest: Python, JAX, the OS).
USABLE_FRACTION = 0.8


def available_memory() -> int | None:
    """Bytes the system can give now (``MemAvailable`` of ``/proc/meminfo``), else the
    physical memory, else ``None`` when neither is known.

    ``PROBDECONV_MEMORY_LIMIT`` (bytes) overrides it, e.g. under a container limit the
    kernel does not show.
    """
    limit = os.environ.get("PROBDECONV_MEMORY_LIMIT")
    if limit:
        try:
            return int(float(limit))
        except ValueError:
            logger.warning("PROBDECONV_MEMORY_LIMIT=%r is not a number of bytes; ignored", limit)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``1.5 GiB`` style.

    Examples
    --------
    >>> format_bytes(512), format_bytes(3 * 2**20), format_bytes(2.5 * 2**40)
    ('512 B', '3.0 MiB', '2.5 TiB')
    """
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def require_memory(need: float, what: str, fix: str) -> None:
    """Refuse an allocation of ``need`` bytes that cannot fit in the available memory.

    Parameters
    ----------
    need
        Estimated bytes.
    what
        What needs it, with the sizes that give the figure, e.g.
        ``"the response [NuLambda 12288, Ei 1, Em 1, Phi 30, PsiChi 12288] in float64"``.
    fix
        How to need less, e.g. ``"use --nside 16 or less"``.

    Raises
    ------
    ParameterError
        ``need`` exceeds 80 % of :func:`available_memory`; the message gives both figures.

    Examples
    --------
    >>> require_memory(1024, "a small array", "nothing")
    >>> require_memory(2**60, "an exbibyte", "ask for less")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    probdeconv.errors.ParameterError: an exbibyte needs about 1048576.0 TiB...
    """
    have = available_memory()
    if have is None or need <= USABLE_FRACTION * have:
        logger.debug("%s: about %s of %s available", what, format_bytes(need),
                     "?" if have is None else format_bytes(have))
        return
    raise ParameterError(f"{what} needs about {format_bytes(need)}, but this machine has "
                         f"{format_bytes(have)} available (at most "
                         f"{USABLE_FRACTION:.0%} of it is used for one allocation); {fix}.")
