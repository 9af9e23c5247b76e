"""The ``probdeconv`` command line: ``main`` (argument parsing, exit codes) and one module per
subcommand (``run``, ``sample``, ``report``), sharing :mod:`.common`."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
