"""What a run report states at the top: the checks, the summary, the warnings of the log.

- :func:`format_checks` — Markdown lines: the failed checks of
  :func:`probdeconv.shell.run_checks.run_checks` (the statistic fell, the iteration limit
  came before the stopping rule, a background norm on its bound) and the warnings logged
  during the run, then what was checked and found fine;
- :func:`summary_lines` — algorithm, iterations, final log-likelihood and, for a
  simulation, total flux and pixel correlation against the truth;
- :class:`WarningCollector` gathers the warnings logged while a run loads its data and
  iterates, so that they appear at the top of ``report.md`` as well as in ``run.log``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..shell.run_checks import Check

__all__ = ["summary_lines", "format_checks", "WarningCollector"]

logger = logging.getLogger(__name__)


def summary_lines(algorithm: str, iterations: int, elapsed: float | None,
                  log_likelihood: float, values: np.ndarray, truth) -> list[str]:
    """The summary lines of a run's report.md (also when ``probdeconv report`` redraws it):
    algorithm, iterations, final log-likelihood and, for a simulation, the total flux and
    the pixel correlation against the truth.

    Examples
    --------
    >>> summary_lines("RL", 3, 1.0, -5.0, np.ones((4, 1)), 2 * np.ones((4, 1)))[1]
    'Total flux: reconstructed 4, true 8 (ratio 0.500).'
    """
    took = "" if elapsed is None else f" in {float(elapsed):.1f} s"
    lines = [f"{algorithm}: {iterations} iterations{took}; final log-likelihood "
             f"{log_likelihood:.6f}."]
    if truth is not None:
        t, rec = np.asarray(truth, float), np.asarray(values, float)
        lines.append(f"Total flux: reconstructed {rec.sum():.4g}, true {t.sum():.4g} "
                     f"(ratio {rec.sum() / t.sum():.3f}).")
        if t.std() > 0 and rec.std() > 0:
            r = float(np.corrcoef(t.ravel(), rec.ravel())[0, 1])
            lines.append(f"Correlation of image and truth over the pixels: r = {r:.3f}.")
    return lines


def format_checks(checks: Sequence[Check], log_warnings: Sequence[str] = ()) -> list[str]:
    """Markdown lines: the warnings first (bold), then what was checked and found fine."""
    lines = ["## Checks", ""]
    bad = [c.text for c in checks if not c.ok]
    bad += [f"(log) {w}" for w in log_warnings if w not in bad]
    lines += [f"- **Warning:** {t}" for t in bad]
    lines += [f"- OK: {c.text}" for c in checks if c.ok]
    if not bad:
        lines.insert(2, "No warnings.")
        lines.insert(3, "")
    return lines + [""]


class WarningCollector(logging.Handler):
    """A logging handler that keeps the messages of WARNING and above (``messages``).

    Examples
    --------
    >>> log = logging.getLogger("probdeconv.example")
    >>> with WarningCollector.attached() as warned:
    ...     log.warning("few counts")
    >>> warned.messages
    ['few counts']
    """

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)

    @classmethod
    def attached(cls, name: str = "probdeconv"):
        """A context manager: the collector attached to logger ``name`` while it is open."""
        return _Attached(cls(), logging.getLogger(name))


class _Attached:
    def __init__(self, handler: logging.Handler, target: logging.Logger):
        self.handler, self.target = handler, target

    def __enter__(self):
        self.target.addHandler(self.handler)
        return self.handler

    def __exit__(self, *exc) -> None:
        self.target.removeHandler(self.handler)
