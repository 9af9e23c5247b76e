"""Figures of the posterior predictive checks: hanging rootogram and PIT (PNG, Agg).

Takes the checks of :mod:`probdeconv.results.predictive` (duck-typed: ``starts``,
``observed``, ``predicted``, ``pit``, ``ks_pvalue``, ``n_draws``, ``n_bins``).

- :func:`plot_rootogram` — hanging rootogram: for each count class a bar of height
  ``√(observed bins)`` hangs from ``√(mean predicted bins)``; the bar's bottom should sit on
  the zero line within the band of the replicates (5–95 %, shaded around 0).  A bar ending
  below 0 means fewer bins of that count observed than predicted, above 0 more;
- :func:`plot_pit` — histogram of the randomised PIT values (20 classes, with the 99 %
  band of a uniform sample of that size) and the ECDF difference from uniform;
- :func:`plot_pit_arviz` — ArviZ's Δ-ECDF PIT plot (:func:`arviz.plot_ecdf_pit`) of a
  random subsample of at most 4000 PIT values (skipped with a log message where the
  plotting backend fails).
"""

from __future__ import annotations

import logging
from pathlib import Path

import arviz as az
import arviz_base
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import binom  # noqa: E402

from .run import save_figure  # noqa: E402

__all__ = ["plot_rootogram", "plot_pit", "plot_pit_arviz", "predictive_figures",
           "predictive_lines"]

logger = logging.getLogger(__name__)

ARVIZ_PIT_VALUES = 4000


def _class_labels(starts: np.ndarray) -> list[str]:
    out = []
    for k, s in enumerate(starts):
        stop = starts[k + 1] - 1 if k + 1 < starts.size else None
        out.append(f"≥{s}" if stop is None else (f"{s}" if stop == s else f"{s}–{stop}"))
    return out


def plot_rootogram(ppc, path: str | Path) -> Path:
    """Hanging rootogram of the count classes (see the module docstring)."""
    obs, pred = np.sqrt(ppc.observed), np.sqrt(ppc.predicted)
    mean = np.sqrt(ppc.predicted.mean(axis=0))
    lo, hi = np.quantile(pred, (0.05, 0.95), axis=0)
    x = np.arange(ppc.starts.size)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * x.size + 2), 4.2))
    ax.bar(x, obs, bottom=mean - obs, width=0.8, color="C0", alpha=0.7,
           label="observed bins (hanging from the prediction)")
    ax.plot(x, mean, "o-", color="C3", ms=3, lw=1.2, label="predicted (mean of replicates)")
    ax.fill_between(x, lo - mean, hi - mean, step="mid", color="0.6", alpha=0.5,
                    label="replicates 5–95 % (around 0)")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(_class_labels(ppc.starts), rotation=90, fontsize=7)
    ax.set_xlabel("counts in a bin")
    ax.set_ylabel("√(number of bins)")
    ax.set_title(f"hanging rootogram: {ppc.n_bins} bins, {ppc.n_draws} Poisson replicates",
                 fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_pit(ppc, path: str | Path) -> Path:
    """PIT histogram with the 99 % band of a uniform sample, and the ECDF difference."""
    u = np.asarray(ppc.pit)
    n, classes = u.size, 20
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    heights = ax.hist(u, bins=classes, range=(0, 1), color="C0", alpha=0.8)[0]
    lo, hi = binom.ppf((0.005, 0.995), n, 1.0 / classes)
    ax.set_ylim(0.9 * min(heights.min(), lo), 1.1 * max(heights.max(), hi))  # zoom on the band
    ax.axhspan(lo, hi, color="0.6", alpha=0.4, label="99 % band per class if uniform")
    ax.axhline(n / classes, color="k", lw=0.8)
    ax.set_xlabel("randomised PIT")
    ax.set_ylabel("bins")
    ax.legend(fontsize=7)
    s = np.sort(u)
    ecdf = np.arange(1, n + 1) / n
    bx.plot(s, ecdf - s, lw=1.0)
    band = 1.63 / np.sqrt(n)  # KS 99 % critical value
    bx.axhspan(-band, band, color="0.6", alpha=0.4, label="KS 99 % band")
    bx.axhline(0.0, color="k", lw=0.8)
    bx.set_xlabel("PIT")
    bx.set_ylabel("ECDF − uniform")
    bx.legend(fontsize=7)
    fig.suptitle(f"randomised PIT of {n} bins ({ppc.n_draws} draws): KS p = "
                 f"{ppc.ks_pvalue:.3g}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_pit_arviz(ppc, path: Path, seed: int = 0) -> Path | None:
    """ArviZ's Δ-ECDF PIT plot of at most 4000 PIT values (None when the backend fails)."""
    try:
        u = np.asarray(ppc.pit)
        if u.size > ARVIZ_PIT_VALUES:
            u = np.random.default_rng(seed).choice(u, ARVIZ_PIT_VALUES, replace=False)
        dt = arviz_base.from_dict({"pit": {"counts": u[None]}})
        az.plot_ecdf_pit(dt, group="pit", backend="matplotlib")
        fig = plt.gcf()
        fig.axes[0].set_title(f"ArviZ Δ-ECDF of the randomised PIT ({u.size} of "
                              f"{ppc.n_bins} bins)", fontsize=9)
        return save_figure(fig, path)
    except Exception as exc:  # noqa: BLE001 - optional figure, never fatal
        logger.info("ArviZ PIT plot skipped: %s: %s", type(exc).__name__, exc)
        plt.close("all")
        return None


def predictive_figures(ppc, figures: Path) -> list[Path]:
    """The rootogram, PIT and ArviZ PIT figures in ``figures/``."""
    out = [plot_rootogram(ppc, figures / "rootogram.png"), plot_pit(ppc, figures / "pit.png")]
    extra = plot_pit_arviz(ppc, figures / "pit_arviz.png")
    return out + ([extra] if extra is not None else [])


def predictive_lines(ppc) -> list[str]:
    """The report's line on the predictive checks (a note when there are none)."""
    if ppc is None:
        return ["Predictive check: not available (a posterior saved without its "
                "predictive checks; sample it again to have them).", ""]
    return [ppc.check_line() + " Figures rootogram.png, pit.png: bars hanging below or "
            "above the band, or a PIT far from flat, show where the model misfits the "
            "counts.", ""]
