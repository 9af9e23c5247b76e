"""Stopping rules of the iterative algorithms: stop when an iteration gains too little.

The rule of a parameter file's ``stopping_criteria`` section: after each iteration
(from the second on), the maximised statistic (log-likelihood or log-posterior) is
compared with its value one iteration before.  The run stops when it rose by less than
``threshold``:

- ``relative: false`` (cosipy's rule, the default): the gain ``now − before`` in the
  statistic's own units.  A gain below 0.5 in log-likelihood is a change the data cannot
  tell apart from noise (one standard deviation of one parameter).
- ``relative: true``: the gain divided by ``|now|``.  The same threshold then means the
  same thing for small and large data sets (``1e-6`` stops a run of about 5·10⁶ in
  log-likelihood at a gain below 5).

A statistic that *fell* never stops a run (it is warned about instead, as cosipy does):
an accelerated step that overshoots is followed by one that recovers.

Examples
--------
>>> gain_below(-5_000_010.0, -5_000_000.0 - 12.0, 1.0)        # gained 2 > 1: go on
False
>>> gain_below(-5_000_000.0, -5_000_002.0, 1e-6, relative=True)   # 2 / 5e6 = 4e-7
True
>>> gain_below(-10.0, -9.0, 1e-6, relative=True)             # a fall never stops
False
"""

from __future__ import annotations

import math

__all__ = ["gain", "gain_below"]


def gain(now: float, before: float, relative: bool = False) -> float:
    """The statistic's rise in one iteration: ``now − before``, or that over ``|now|``.

    Examples
    --------
    >>> gain(-99.0, -100.0), gain(-99.0, -100.0, relative=True)
    (1.0, 0.010101010101010102)
    """
    change = float(now) - float(before)
    if not relative:
        return change
    return change / max(abs(float(now)), 1e-300)


def gain_below(now: float, before: float, threshold: float, relative: bool = False) -> bool:
    """Whether an iteration that took the statistic from ``before`` to ``now`` ends the run.

    True when the statistic rose (or stayed) by less than ``threshold``
    (:func:`gain`); False when it fell, or when either value is not finite.  A threshold
    of 0 or below never stops a run (as in cosipy).
    """
    threshold = float(threshold)
    if not (math.isfinite(float(now)) and math.isfinite(float(before))):
        return False
    g = gain(now, before, relative)
    return 0.0 <= g < threshold
