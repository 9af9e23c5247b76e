"""Whether an imaging run converged honestly, from its per-iteration record (plain dicts).

:func:`run_checks` looks at ``iteration``, ``log-likelihood``, ``log-posterior`` and
``background_normalization`` of each iteration and says

- whether the maximised statistic (the log-posterior if the run has one, else the
  log-likelihood) ever fell — how often, by how much, where;
- whether the run ended by its stopping rule, or at the iteration limit before the rule
  was met (with the last change);
- whether a fitted background normalisation ended on a bound of its range.

:meth:`probdeconv.ImageDeconvolution.run_deconvolution` logs the failed checks as warnings
at the end of a run; ``probdeconv run`` and ``probdeconv report`` put them at the top of
``report.md`` (:mod:`probdeconv.report.checks`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from .point_sources import KEY_SEPARATOR

__all__ = ["Check", "run_checks", "bound_warnings", "stopping_rule", "statistic_series",
           "log_run_checks"]

logger = logging.getLogger(__name__)


class Check(NamedTuple):
    """One line of a report's checks: ``ok`` False makes it a warning."""

    ok: bool
    text: str


def statistic_series(history: Sequence[Mapping]) -> tuple[str, np.ndarray]:
    """The maximised statistic per iteration: ``log-posterior`` where every iteration has
    one, else the log-likelihood summed over datasets.

    Examples
    --------
    >>> statistic_series([{"log-likelihood": [1.0, 2.0]}, {"log-likelihood": [2.0, 2.5]}])
    ('log-likelihood', array([3. , 4.5]))
    """
    post = [r.get("log-posterior") for r in history]
    if history and all(p is not None and np.isfinite(float(p)) for p in post):
        return "log-posterior", np.array([float(p) for p in post])
    return "log-likelihood", np.array([float(np.sum(r["log-likelihood"])) for r in history])


def stopping_rule(algo) -> dict | None:
    """The stopping rule of an algorithm instance (duck-typed), or None when it has none.

    ``{"statistic", "threshold", "relative"}``: the run may stop when the statistic rose by
    less than ``threshold`` in one iteration (relative to its value when ``relative``).
    """
    if hasattr(algo, "stopping_criteria_threshold"):
        return {"statistic": str(getattr(algo, "stopping_criteria_statistics",
                                         "log-likelihood")),
                "threshold": float(algo.stopping_criteria_threshold),
                "relative": bool(getattr(algo, "stopping_criteria_relative", False))}
    if hasattr(algo, "tolerance"):
        return {"statistic": "log-posterior", "threshold": float(algo.tolerance),
                "relative": True}
    return None


def _falls(name: str, stat: np.ndarray, iterations: list[int]) -> Check:
    diff = np.diff(stat)
    tol = 1e-12 * np.maximum(np.abs(stat[1:]), 1.0)  # rounding, not a fall
    fell = np.flatnonzero(diff < -tol)
    if not fell.size:
        return Check(True, f"The {name} never decreased in {len(stat)} iterations.")
    worst = int(fell[np.argmin(diff[fell])])
    where = ", ".join(str(iterations[i + 1]) for i in fell[:8]) + (", ..." if fell.size > 8
                                                                   else "")
    return Check(False, f"The {name} fell {fell.size} time(s) in {len(stat)} iterations "
                        f"(largest fall {-diff[worst]:.4g} at iteration {iterations[worst + 1]}; "
                        f"iterations {where}): the steps are not monotone, so the last image "
                        "need not be the best one. Use acceleration: LineSearch (or SQUAREM, "
                        "or RLsimple), or compare with the best iteration.")


def _stopping(history: Sequence[Mapping], iteration_max: int | None,
              stopping: Mapping | None) -> Check | None:
    last = int(history[-1]["iteration"])
    if stopping is None:
        if iteration_max is not None and last >= iteration_max:
            name, stat = statistic_series(history)
            change = float(stat[-1] - stat[-2]) if stat.size > 1 else float("nan")
            return Check(False, f"No stopping rule (this algorithm has none): the run did its "
                                f"{iteration_max} iterations, and the last one still changed "
                                f"the {name} by {change:.4g}; judge convergence from the "
                                "curves, or continue with --resume and a higher "
                                "iteration_max.")
        return None
    stat_name = stopping["statistic"]
    series = [float(np.sum(r.get(stat_name, np.nan))) for r in history]
    change = series[-1] - series[-2] if len(series) > 1 else float("nan")
    threshold = float(stopping["threshold"])
    size = abs(change) / max(abs(series[-1]), 1e-300) if stopping.get("relative") else change
    met = bool(np.isfinite(change) and 0 <= size < threshold)
    rule = (f"{stat_name} change < {threshold:g}" + (" (relative)" if stopping.get("relative")
                                                     else "") + " per iteration")
    if iteration_max is not None and last >= iteration_max and not met:
        return Check(False, f"Stopped at the iteration limit ({iteration_max}) before the "
                            f"stopping rule ({rule}) was met: the last iteration changed the "
                            f"{stat_name} by {change:.4g}. The image may not have converged; "
                            "continue with --resume and a higher iteration_max.")
    if met:
        return Check(True, f"Stopped by the stopping rule ({rule}) at iteration {last} "
                           f"(change {change:.4g}).")
    return Check(True, f"Stopped at iteration {last} of {iteration_max}.")


def bound_warnings(bkg_norm: Mapping, ranges: Mapping) -> list[str]:
    """Warnings for background normalisations that end on a bound of their fitted range.

    A norm on its bound is not a fit: the likelihood wanted it beyond, so the image has
    absorbed (or lost) the difference.

    Examples
    --------
    >>> bound_warnings({"bkg": 9.99998}, {"bkg": [0.01, 10.0]})[0][:57]
    "background normalisation 'bkg' = 9.99998 is on the upper "
    >>> bound_warnings({"bkg": 1.02}, {"bkg": [0.01, 10.0]})
    []
    """
    out = []
    for key, value in bkg_norm.items():
        if key not in ranges:
            continue
        lo, hi = (float(b) for b in ranges[key])
        value = float(value)
        for side, bound in (("lower", lo), ("upper", hi)):
            if abs(value - bound) <= 1e-4 * max(abs(bound), 1e-6 * (hi - lo)):
                out.append(f"background normalisation {key!r} = {value:.6g} is on the {side} "
                           f"bound {bound:g} of its range [{lo:g}, {hi:g}]: the fit wanted "
                           f"{'more' if side == 'upper' else 'less'}, so the image has taken "
                           "up the difference; widen deconvolution:parameter:"
                           "background_normalization_optimization:range or check the "
                           "background template.")
    return out


def run_checks(history: Sequence[Mapping], *, iteration_max: int | None = None,
               stopping: Mapping | None = None, bkg_range: Mapping | None = None
               ) -> list[Check]:
    """The checks of an imaging run from its per-iteration record.

    Parameters
    ----------
    history
        One dict per iteration (``iteration``, ``log-likelihood``, optionally
        ``log-posterior`` and ``background_normalization``).
    iteration_max
        The run's iteration limit.
    stopping
        The run's stopping rule (:func:`stopping_rule`), None for an algorithm without one.
    bkg_range
        ``{name: [low, high]}`` of the fitted background normalisations ({} or None when
        they are not fitted).

    Examples
    --------
    >>> h = [{"iteration": i, "log-likelihood": [v]} for i, v in enumerate([1.0, 5.0, 4.0], 1)]
    >>> [c.ok for c in run_checks(h, iteration_max=3,
    ...                           stopping={"statistic": "log-likelihood", "threshold": 0.01})]
    [False, False]
    """
    if not history:
        return [Check(False, "No iteration was recorded.")]
    iterations = [int(r["iteration"]) for r in history]
    name, stat = statistic_series(history)
    checks = []
    if not np.all(np.isfinite(stat)):
        bad = [iterations[i] for i in np.flatnonzero(~np.isfinite(stat))]
        checks.append(Check(False, f"The {name} is not finite at iteration(s) {bad}."))
    elif stat.size > 1:
        checks.append(_falls(name, stat, iterations))
    stop = _stopping(history, iteration_max, stopping)
    if stop is not None:
        checks.append(stop)
    bkg = dict(history[-1].get("background_normalization") or {})
    for key, value in bkg.items():
        if bkg_range and key in bkg_range:
            words = bound_warnings({key: value}, {key: bkg_range[key]})
            lo, hi = (float(b) for b in bkg_range[key])
            checks.append(Check(False, words[0]) if words else Check(
                True, f"{_what(key)} {key!r} = {float(value):.6g}, inside its "
                      f"range [{lo:g}, {hi:g}]."))
    return checks


def _what(key: str) -> str:
    """What a linear component is, in words: a background or a point source's flux."""
    return "Point-source flux" if KEY_SEPARATOR in key else "Background normalisation"


def log_run_checks(algo) -> list[Check]:
    """Run :func:`run_checks` on an algorithm instance (duck-typed) and log each failed
    check as a warning; returns the checks."""
    ranges = getattr(algo, "dict_bkg_norm_range", {}) if getattr(
        algo, "do_bkg_norm_optimization", False) else {}
    checks = run_checks(algo.scalar_history(), iteration_max=getattr(algo, "iteration_max",
                                                                     None),
                        stopping=stopping_rule(algo), bkg_range=ranges)
    for c in checks:
        if not c.ok:
            logger.warning("%s", c.text)
    return checks
