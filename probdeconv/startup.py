"""Interruptions while the command line starts: one line, no traceback.

Importing probdeconv (JAX, NumPyro, ArviZ, ...) takes seconds before ``probdeconv.cli.main``
can catch anything.  When the process is the ``probdeconv`` command (the console script or
``python -m probdeconv``), :func:`guard_startup_interrupt` makes a Ctrl-C in that time end
with one line instead of a traceback (the exit status stays the SIGINT one), and SIGTERM
with one line and exit status 143; the command line installs its own handling once it
runs.  In any other program importing probdeconv nothing is changed.

This module imports only the standard library, so that it can run first.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["guard_startup_interrupt", "launched_as_cli"]


def launched_as_cli(argv: list[str] | None = None) -> bool:
    """Whether this interpreter runs the ``probdeconv`` command (from ``sys.orig_argv``).

    Examples
    --------
    >>> launched_as_cli(["python", "/venv/bin/probdeconv", "run", "rl.yml"])
    True
    >>> launched_as_cli(["python", "-m", "probdeconv", "info", "f.h5"])
    True
    >>> launched_as_cli(["python", "analysis.py"])
    False
    """
    argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] == "probdeconv":
        return True
    return len(argv) >= 2 and os.path.basename(argv[1]) in ("probdeconv", "probdeconv.exe")


def guard_startup_interrupt() -> None:
    """In the ``probdeconv`` command: Ctrl-C or SIGTERM before the command line runs ends
    with one line (``probdeconv: interrupted while starting; nothing was written.``)."""
    if not launched_as_cli() or threading.current_thread() is not threading.main_thread():
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            sys.stderr.write("probdeconv: interrupted while starting; nothing was written.\n")
            return
        previous(kind, value, tb)

    def terminate(signum, frame):
        sys.stderr.write("probdeconv: terminated (SIGTERM) while starting; nothing was "
                         "written.\n")
        os._exit(128 + signal.SIGTERM)  # nothing to clean up yet

    sys.excepthook = hook
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, terminate)
