"""``probdeconv compare post_a/ post_b/ [...] --out DIR``: which model do the data prefer.

Reads the pointwise log-likelihood of each posterior directory (``posterior.nc``, written by
``probdeconv sample``), estimates PSIS-LOO for each (:mod:`probdeconv.results.compare`;
SVI / Laplace with their importance weights), prints ArviZ's comparison table with the
Pareto k diagnostics and writes ``compare.csv``, ``compare.md`` and ``compare.png`` into
``--out`` (:mod:`probdeconv.report.compare`, each file atomically).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..report.compare import comparison_text, write_comparison
from ..results.compare import compare

__all__ = ["compare_command", "WEIGHT_METHODS"]

logger = logging.getLogger(__name__)

WEIGHT_METHODS = ("stacking", "BB-pseudo-BMA", "pseudo-BMA")


def compare_command(args) -> str:
    """Compare posterior directories; print the table; write the outputs into ``--out``.

    Raises
    ------
    FileFormatError
        A directory that is not a finished posterior of ``probdeconv sample`` (or lacks its
        pointwise log-likelihood).
    ParameterError
        Fewer than two directories, or a bootstrap posterior.
    DataError
        Posteriors of different data.
    """
    names = {}
    for i, d in enumerate(args.posteriors):
        name = Path(d).resolve().name or f"model{i}"
        names[name if name not in names else f"{name}#{i}"] = Path(d)
    result = compare(names, method=args.weights)
    paths = write_comparison(result, args.out)
    return (f"{comparison_text(result)}\n\nprobdeconv: comparison written to "
            f"{', '.join(str(p.resolve()) for p in paths)}")
