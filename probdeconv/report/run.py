"""Figures and short reports of imaging runs (PNG, non-interactive matplotlib backend).

- :func:`plot_image` — Mollweide map of each energy bin (healpy), with the true sky beside
  the reconstruction when it is known;
- :func:`plot_curves` — log-likelihood / log-posterior and step factor per iteration;
- :func:`plot_residuals` — data minus expectation in the data space, as ``Phi × PsiChi``
  (summed over the other axes), in units of the Poisson standard deviation;
- :func:`write_run_report` — a Markdown page linking the figures, with the run settings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import healpy as hp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_image", "plot_curves", "plot_residuals", "write_run_report", "save_figure"]

logger = logging.getLogger(__name__)


def save_figure(fig, path: str | Path, dpi: int = 90) -> Path:
    """Save atomically (temporary name, then rename) and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def _ring(values: np.ndarray, nest: bool) -> np.ndarray:
    return hp.reorder(values, n2r=True) if nest else values


def plot_image(image, path: str | Path, truth=None, title: str = "reconstruction") -> Path:
    """Mollweide maps of each energy bin of ``image`` (and of ``truth`` beside it)."""
    values = np.asarray(image, dtype=float)
    nest = bool(getattr(image.axes[0], "is_nested", False))
    n_e = values.shape[1]
    cols = 2 if truth is not None else 1
    fig = plt.figure(figsize=(6.0 * cols, 3.4 * n_e))
    unit = str(image.unit) if image.unit is not None else ""
    edges = np.asarray(getattr(image.axes[1].edges, "value", image.axes[1].edges))
    for e in range(n_e):
        label = f"{edges[e]:.0f}–{edges[e + 1]:.0f} keV"
        if truth is not None:
            hp.mollview(_ring(np.asarray(truth, float)[:, e], nest), fig=fig.number,
                        sub=(n_e, cols, cols * e + 1), title=f"truth {label}", unit=unit)
        hp.mollview(_ring(values[:, e], nest), fig=fig.number, sub=(n_e, cols, cols * e + cols),
                    title=f"{title} {label}", unit=unit)
    return save_figure(fig, path)


def plot_curves(results: Sequence[dict], path: str | Path) -> Path:
    """Statistic (log-likelihood or log-posterior) and step factor per iteration."""
    it = [r["iteration"] for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    logl = [float(np.sum(r["log-likelihood"])) for r in results]
    axes[0].plot(it, logl, "o-", label="log-likelihood")
    if results and "log-posterior" in results[0]:
        axes[0].plot(it, [r["log-posterior"] for r in results], "s--", label="log-posterior")
    axes[0].set_xlabel("iteration")
    axes[0].legend()
    axes[1].plot(it, [float(r.get("alpha", 1.0)) for r in results], "o-")
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("step factor α")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_residuals(event, expectation, path: str | Path) -> Path:
    """``(d − E)/√E`` summed to a ``Phi × PsiChi`` map."""
    labels = event.axes.labels.tolist()
    d = np.asarray(event, float)
    e = np.asarray(expectation, float)
    keep = (labels.index("Phi"), labels.index("PsiChi"))
    other = tuple(i for i in range(d.ndim) if i not in keep)
    d2, e2 = d.sum(axis=other), e.sum(axis=other)
    resid = (d2 - e2) / np.sqrt(np.maximum(e2, 1e-12))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    lim = max(3.0, float(np.nanmax(np.abs(resid))))
    im = ax.imshow(resid, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   interpolation="nearest")
    ax.set_xlabel("PsiChi pixel")
    ax.set_ylabel("Phi bin")
    ax.set_title("residuals (d − E)/√E, summed over other axes")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return save_figure(fig, path)


def write_run_report(directory: str | Path, title: str, settings: dict, figures: Sequence[str],
                     lines: Sequence[str] = ()) -> Path:
    """A Markdown page with the figures (relative links) and a table of the settings."""
    directory = Path(directory)
    rows = "\n".join(f"| {k} | {v} |" for k, v in settings.items())
    figs = "\n\n".join(f"![{Path(f).stem}]({f})" for f in figures)
    text = (f"# {title}\n\n" + "\n".join(lines) + "\n\n| setting | value |\n| --- | --- |\n"
            + rows + "\n\n" + figs + "\n")
    path = directory / "report.md"
    tmp = path.with_name(".tmp-report.md")
    tmp.write_text(text)
    tmp.replace(path)
    return path
