"""Figures and the report of imaging runs (PNG, non-interactive matplotlib backend).

- :func:`plot_image` — Mollweide map of each energy bin; with the true sky: truth and
  reconstruction on one colour scale and their difference, both again on a log scale,
  and reconstructed against true flux per pixel (log-log); each panel titled with its
  energy range in keV and a colour bar with the unit;
- :func:`plot_curves` — the statistic (log-likelihood / log-posterior), its change per
  iteration (falls marked), the step factor and the background normalisations (with
  their range) per iteration;
- :func:`plot_residuals` — data minus expectation in the data space, as ``Phi × PsiChi``
  (summed over the other axes), in units of the Poisson standard deviation;
- :func:`write_run_report` — a Markdown page: the checks a careful analyst makes
  (:mod:`.checks`) at the top, then the summary, the settings and the figures;
- :func:`render_run_report` — all of it from a run's record (what ``probdeconv run``
  writes and ``probdeconv report`` redraws).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io.atomic import atomic_target  # noqa: E402
from ..shell.run_checks import run_checks, statistic_series  # noqa: E402
from .checks import format_checks, summary_lines  # noqa: E402
from .sky import draw_map, energy_label, flux_range, new_figure, unit_label  # noqa: E402

__all__ = ["plot_image", "plot_curves", "plot_residuals", "write_run_report", "save_figure",
           "render_run_report"]

logger = logging.getLogger(__name__)


def save_figure(fig, path: str | Path, dpi: int = 90) -> Path:
    """Save atomically (temporary name, then rename) and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_target(path, overwrite=True, what="figure") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def plot_image(image, path: str | Path, truth=None, title: str = "reconstruction") -> Path:
    """Mollweide maps of each energy bin of ``image``.

    With ``truth``, two rows per energy bin: truth, reconstruction (one linear colour scale
    from 0) and reconstruction − truth (symmetric scale); then truth and reconstruction on
    one logarithmic scale (four decades) and the reconstructed against the true flux per
    pixel on log-log axes, so that faint pixels are not squashed.
    """
    values = np.asarray(image, dtype=float)
    nest = bool(getattr(image.axes[0], "is_nested", False))
    n_e = values.shape[1]
    unit = unit_label(getattr(image, "unit", None))
    edges = image.axes[1].edges
    rows, cols = (2 * n_e, 3) if truth is not None else (n_e, 1)
    fig, axes = new_figure(rows, cols, width=4.6, height=3.3)
    for e in range(n_e):
        energy = energy_label(edges, e)
        rec = values[:, e]
        if truth is None:
            lo, hi = flux_range(rec)
            draw_map(fig, axes[e, 0], rec, nest=nest, vmin=lo, vmax=hi,
                     title=f"{title}, {energy}", label=unit)
            continue
        t = np.asarray(truth, float)[:, e]
        top, bottom = axes[2 * e], axes[2 * e + 1]
        lo, hi = flux_range(t, rec)
        draw_map(fig, top[0], t, nest=nest, vmin=lo, vmax=hi, title=f"truth, {energy}",
                 label=unit)
        draw_map(fig, top[1], rec, nest=nest, vmin=lo, vmax=hi, title=f"{title}, {energy}",
                 label=unit)
        diff = rec - t
        lim = float(np.nanmax(np.abs(diff))) or 1.0
        draw_map(fig, top[2], diff, nest=nest, vmin=-lim, vmax=lim, cmap="RdBu_r",
                 title=f"{title} − truth, {energy}", label=unit)
        llo, lhi = flux_range(t, rec, log=True)
        draw_map(fig, bottom[0], t, nest=nest, vmin=llo, vmax=lhi, log=True,
                 title=f"truth (log scale), {energy}", label=unit)
        draw_map(fig, bottom[1], rec, nest=nest, vmin=llo, vmax=lhi, log=True,
                 title=f"{title} (log scale), {energy}", label=unit)
        _truth_scatter(bottom[2], t, rec, llo, lhi, unit, energy)
    return save_figure(fig, path)


def _truth_scatter(ax, t: np.ndarray, rec: np.ndarray, lo: float, hi: float, unit: str,
                   energy: str) -> None:
    """Reconstructed against true flux per pixel, log-log, values below ``lo`` at ``lo``."""
    ax.scatter(np.maximum(t, lo), np.maximum(rec, lo), s=6, alpha=0.6)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="equal")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo / 1.5, hi * 1.5)
    ax.set_ylim(lo / 1.5, hi * 1.5)
    ax.set_xlabel(f"true flux ({unit})", fontsize=8)
    ax.set_ylabel(f"reconstructed ({unit})", fontsize=8)
    ax.set_title(f"per pixel, {energy} (below {lo:.2g}: at it)", fontsize=9)
    ax.legend(fontsize=7)


def plot_curves(results: Sequence[dict], path: str | Path,
                bkg_range: Mapping | None = None, stopping: Mapping | None = None) -> Path:
    """Statistic, its change per iteration (log scale: falls in red, the stopping threshold
    dashed), step factor and background normalisations per iteration."""
    it = np.array([r["iteration"] for r in results])
    bkg_keys = list((results[-1].get("background_normalization") or {}) if results else {})
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.6))
    (ax_stat, ax_change), (ax_alpha, ax_bkg) = axes
    logl = [float(np.sum(r["log-likelihood"])) for r in results]
    ax_stat.plot(it, logl, "o-", ms=3, label="log-likelihood")
    name, stat = statistic_series(results)
    if name == "log-posterior":
        ax_stat.plot(it, stat, "s--", ms=3, label="log-posterior")
    ax_stat.set_xlabel("iteration")
    ax_stat.set_ylabel("statistic")
    ax_stat.set_title("statistic per iteration")
    ax_stat.legend()
    change = np.diff(stat)
    if change.size:
        up = change >= 0
        ax_change.semilogy(it[1:][up], change[up], "o", ms=3, label=f"{name} rose by")
        if np.any(~up):
            ax_change.semilogy(it[1:][~up], -change[~up], "v", ms=5, color="C3",
                               label=f"{name} FELL by")
        if stopping and not stopping.get("relative") and stopping.get("threshold", 0) > 0:
            ax_change.axhline(float(stopping["threshold"]), color="k", ls="--", lw=0.8,
                              label="stopping threshold")
        ax_change.legend(fontsize=8)
    ax_change.set_xlabel("iteration")
    ax_change.set_ylabel("|change| per iteration")
    ax_change.set_title(f"change of the {name} (should stay positive)")
    ax_alpha.plot(it, [float(r.get("alpha", 1.0)) for r in results], "o-", ms=3)
    ax_alpha.set_xlabel("iteration")
    ax_alpha.set_ylabel("step factor α")
    ax_alpha.set_title("acceleration")
    if bkg_keys:
        for i, k in enumerate(bkg_keys):
            ax_bkg.plot(it, [float(r["background_normalization"][k]) for r in results], "o-",
                        ms=3, color=f"C{i}", label=k)
            if bkg_range and k in bkg_range:
                for bound in bkg_range[k]:
                    ax_bkg.axhline(float(bound), color=f"C{i}", ls=":", lw=1)
        lo = min(float(r["background_normalization"][k]) for r in results for k in bkg_keys)
        hi = max(float(r["background_normalization"][k]) for r in results for k in bkg_keys)
        pad = 0.1 * (hi - lo) + 1e-3 * abs(hi)
        ax_bkg.set_ylim(lo - pad, hi + pad)  # a bound shows only when the norm is near it
        ax_bkg.legend()
        ax_bkg.set_title("background normalisations" + (" (dotted: range bounds)"
                                                        if bkg_range else ""))
    else:
        ax_bkg.set_title("no background normalisation fitted")
    ax_bkg.set_xlabel("iteration")
    ax_bkg.set_ylabel("background normalisation")
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
    fig.colorbar(im, ax=ax, label="standard deviations")
    fig.tight_layout()
    return save_figure(fig, path)


def write_run_report(directory: str | Path, title: str, settings: dict, figures: Sequence[str],
                     lines: Sequence[str] = (), checks: Sequence[str] = ()) -> Path:
    """A Markdown page: ``checks`` (Markdown lines) first, then ``lines``, the settings
    table and the figures (relative links)."""
    directory = Path(directory)
    rows = "\n".join(f"| {k} | {v} |" for k, v in settings.items())
    figs = "\n\n".join(f"![{Path(f).stem}]({f})" for f in figures)
    text = (f"# {title}\n\n" + "".join(f"{c}\n" for c in checks) + "\n".join(lines)
            + "\n\n| setting | value |\n| --- | --- |\n" + rows + "\n\n" + figs + "\n")
    path = directory / "report.md"
    with atomic_target(path, overwrite=True, what="report") as tmp:
        tmp.write_text(text)
    return path


SETTINGS_SHOWN = ("algorithm", "iterations", "iteration_max", "config", "data", "overrides",
                  "seconds", "resumed", "dtype", "probdeconv_version", "python",
                  "simulation_seed")


def render_run_report(out: str | Path, *, image, history: Sequence[dict], meta: Mapping,
                      truth=None, event=None, expectation=None) -> Path:
    """Figures and ``report.md`` of an imaging run from its record.

    ``meta`` is the run's record (``run.yml``): ``algorithm``, ``iterations``,
    ``iteration_max``, ``seconds``, ``stopping_rule`` (:func:`.checks.stopping_rule`),
    ``background_range`` (of the fitted backgrounds) and ``log_warnings`` (warnings logged
    during the run).  ``event`` and ``expectation`` (data-space histograms) add the
    residual figure.  Returns the path of ``report.md``.
    """
    out = Path(out)
    figs = out / "figures"
    bkg_range = meta.get("background_range") or {}
    plot_image(image, figs / "image.png", truth=truth)
    plot_curves(history, figs / "curves.png", bkg_range=bkg_range,
                stopping=meta.get("stopping_rule"))
    figures = ["figures/image.png", "figures/curves.png"]
    if event is not None and expectation is not None:
        plot_residuals(event, expectation, figs / "residuals.png")
        figures.append("figures/residuals.png")
    checks = run_checks(history, iteration_max=meta.get("iteration_max"),
                        stopping=meta.get("stopping_rule"), bkg_range=bkg_range)
    lines = ["## Summary", "", *summary_lines(
        str(meta.get("algorithm", "run")), int(meta.get("iterations", len(history))),
        meta.get("seconds"), float(np.sum(history[-1]["log-likelihood"])),
        np.asarray(image, float), truth)]
    settings = {k: meta[k] for k in SETTINGS_SHOWN if k in meta}
    return write_run_report(out, f"probdeconv run: {meta.get('algorithm', '')}".rstrip(": "),
                            settings, figures, lines,
                            format_checks(checks, meta.get("log_warnings") or ()))
