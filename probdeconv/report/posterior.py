"""Report of a posterior: maps, convergence diagnostics, traces and a Markdown page (PNG, Agg).

:func:`write_report` draws into ``<directory>/figures/``

- ``maps.png``: posterior mean, standard deviation and significance (mean/std, on the
  fixed range 0–5) per energy bin (Mollweide), with the true sky beside them on the mean's
  colour scale when it is given; titles give the energy range in keV, colour bars the unit;
- ``diagnostics.png``: distributions over pixels of R-hat, bulk and tail ESS (thresholds
  1.01 and 400 marked);
- ``traces.png``: trace and rank plots of the worst pixels (highest R-hat) and of the
  background normalisations;
- ``arviz_rank.png``: ArviZ's own rank plot of the same variables (``arviz.plot_rank``;
  skipped with a log message where the plotting backend fails);
- ``loss.png`` (SVI) and ``truth.png`` (with a truth: mean ± std against the true flux,
  log-log where the fluxes span decades),
- ``rootogram.png``, ``pit.png``, ``pit_arviz.png``: posterior predictive checks of the
  counts (:mod:`.predictive`), whose KS p-value is a line at the top of ``report.md``,

and writes ``report.md`` with, first, the method's assumptions and its calibration
measured on small skies (:mod:`.assumptions`), then the run settings, timings, diagnostic
summary, the faint pixels (mean below two standard deviations: their 95 % upper limits)
and background posteriors.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from histpy import HealpixAxis  # noqa: E402

from ..io.atomic import atomic_target  # noqa: E402
from ..results.arviz import ESS_MIN, RHAT_MAX  # noqa: E402
from .assumptions import assumption_lines, calibration_lines  # noqa: E402
from .predictive import predictive_figures, predictive_lines  # noqa: E402
from .run import save_figure  # noqa: E402
from .sky import draw_map, energy_label, flux_range, new_figure, unit_label  # noqa: E402

__all__ = ["write_report", "plot_maps", "plot_diagnostics", "plot_traces",
           "convergence_line", "truth_coverage_title"]

logger = logging.getLogger(__name__)


SIGNIFICANCE_RANGE = (0.0, 5.0)
"""The fixed colour range of significance maps (mean/std), so ~1 never looks like structure."""


def plot_maps(post, path: str | Path, truth: Any = None) -> Path:
    """Mean, std and significance maps per energy bin (and the truth when given).

    Truth and mean share one colour scale from 0; the significance (mean/std) is drawn on
    the fixed range :data:`SIGNIFICANCE_RANGE`; panels are titled with the energy range in
    keV and colour bars carry the unit.
    """
    n_e = int(post.axes.nbins[1])
    healpix = isinstance(post.axes[0], HealpixAxis)
    nest = bool(getattr(post.axes[0], "is_nested", False))
    unit = unit_label(post.unit)
    mean, std = np.asarray(post.mean, float), np.asarray(post.std, float)
    sig = np.asarray(post.significance, float)
    t = None if truth is None else np.asarray(truth, dtype=float)
    cols = 3 + (t is not None)
    fig, axes = new_figure(n_e, cols, width=4.6, height=3.1)
    for e in range(n_e):
        energy = energy_label(post.axes[1].edges, e)
        lo, hi = flux_range(mean[:, e], *([] if t is None else [t[:, e]]))
        panels = [] if t is None else [("truth", t[:, e], lo, hi, "viridis", unit)]
        panels += [("posterior mean", mean[:, e], lo, hi, "viridis", unit),
                   ("posterior std", std[:, e], *flux_range(std[:, e]), "magma", unit),
                   (f"significance mean/std (fixed {SIGNIFICANCE_RANGE[0]:g}–"
                    f"{SIGNIFICANCE_RANGE[1]:g})", sig[:, e], *SIGNIFICANCE_RANGE, "cividis",
                    "mean / std")]
        for ax, (name, v, vmin, vmax, cmap, label) in zip(axes[e], panels):
            if healpix:
                draw_map(fig, ax, v, nest=nest, vmin=vmin, vmax=vmax, cmap=cmap,
                         title=f"{name}, {energy}", label=label)
            else:
                ax.bar(np.arange(v.size), v)
                ax.set_ylim(vmin, vmax)
                ax.set_title(f"{name}, {energy}", fontsize=10)
                ax.set_xlabel("pixel")
                ax.set_ylabel(label)
    return save_figure(fig, path)


def plot_diagnostics(diag, path: str | Path) -> Path:
    """Histograms over pixels of R-hat and bulk / tail ESS."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, name, line in zip(axes, ("rhat", "ess_bulk", "ess_tail"),
                              (RHAT_MAX, ESS_MIN, ESS_MIN)):
        v = getattr(diag, name)
        v = v[np.isfinite(v)]
        if v.size:
            ax.hist(v, bins=min(40, max(5, v.size // 3)), color="C0", alpha=0.8)
        ax.axvline(line, color="C3", ls="--", label=f"{line}")
        ax.set_xlabel(name.replace("_", " "))
        ax.set_ylabel("pixels")
        ax.legend()
    title = (f"{diag.chains} chain(s) x {diag.draws} draws; divergences {diag.divergences}")
    if diag.bfmi.size:
        title += "; BFMI " + ", ".join(f"{b:.2f}" for b in diag.bfmi)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _trace_variables(post, diag, k: int) -> list[tuple[str, np.ndarray]]:
    out = []
    by = "rhat" if not post.independent else "ess_bulk"
    for p, e in diag.worst_pixels(k, by):
        out.append((f"pixel {p}, E{e}", post.store.read("image", (slice(p, p + 1),
                                                                  slice(e, e + 1)))[:, :, 0, 0]))
    if post.has_bkg:
        b = post.bkg_draws()
        out += [(f"bkg {name}", b[:, :, i]) for i, name in enumerate(post.bkg_names)]
    return out


def plot_traces(post, diag, path: str | Path, k: int = 4) -> Path:
    """Trace (left) and rank histograms per chain (right) of the worst pixels and backgrounds."""
    variables = _trace_variables(post, diag, k)
    n = max(len(variables), 1)
    fig, axes = plt.subplots(n, 2, figsize=(11, 2.2 * n), squeeze=False)
    for row, (name, x) in zip(axes, variables):
        for c in range(x.shape[0]):
            row[0].plot(x[c], lw=0.6, alpha=0.8, label=f"chain {c}")
        row[0].set_ylabel(name)
        ranks = np.argsort(np.argsort(x.ravel())).reshape(x.shape)
        bins = np.linspace(0, x.size, 21)
        for c in range(x.shape[0]):
            row[1].hist(ranks[c], bins=bins, histtype="step", lw=1.2, label=f"chain {c}")
        row[1].axhline(x.shape[1] / 20, color="k", ls=":", lw=0.8)
        row[1].set_yticks([])
    axes[0, 0].set_title("trace")
    axes[0, 1].set_title("rank histogram per chain (uniform = mixed)")
    axes[-1, 0].set_xlabel("draw")
    axes[-1, 1].set_xlabel("rank over all chains")
    fig.tight_layout()
    return save_figure(fig, path)


def _arviz_rank(post, diag, path: Path) -> Path | None:
    """ArviZ's rank plot of the worst pixels (None when the backend fails)."""
    try:
        import arviz as az
        import arviz_base
        import xarray as xr

        variables = _trace_variables(post, diag, 3)
        data = {name.replace(" ", "_").replace(",", ""): x for name, x in variables}
        dt = arviz_base.from_dict({"posterior": data})
        pc = az.plot_rank(dt, backend="matplotlib")
        fig = pc.viz["chart"].item() if isinstance(pc.viz, xr.DataTree) and "chart" in \
            pc.viz else plt.gcf()
        return save_figure(fig, path)
    except Exception as exc:  # noqa: BLE001 - optional figure, never fatal
        logger.info("ArviZ rank plot skipped: %s: %s", type(exc).__name__, exc)
        plt.close("all")
        return None


def _truth_plot(post, truth, path: Path) -> Path:
    """Posterior mean ± std against the true flux per free pixel; log-log axes when the true
    fluxes span more than two decades (values below the floor are drawn at it)."""
    t = np.asarray(truth, dtype=float)[post.mask]
    m, s = post.mean[post.mask], post.std[post.mask]
    fig, ax = plt.subplots(figsize=(5.8, 4.8))
    positive = t[t > 0]
    log = positive.size > 1 and positive.max() > 100 * positive.min()
    lo, hi = flux_range(t, m + s, log=log)
    if log:
        floor = lo
        y = np.maximum(m, floor)
        low = np.maximum(m - s, floor)
        ax.errorbar(np.maximum(t, floor), y, yerr=[y - low, np.maximum(m + s, floor) - y],
                    fmt="o", ms=3, lw=0.8, alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        lim = [floor / 1.5, hi * 1.5]
        ax.set_xlabel(f"true flux ({unit_label(post.unit)}; below {floor:.2g}: at it)")
    else:
        ax.errorbar(t, m, yerr=s, fmt="o", ms=3, lw=0.8, alpha=0.7)
        lo, hi = min(t.min(), (m - s).min()), max(t.max(), (m + s).max())
        lim = [lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)]
        ax.set_xlabel(f"true flux ({unit_label(post.unit)})")
    ax.plot(lim, lim, "k--", lw=0.8, label="equal")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_ylabel("posterior mean ± std")
    ax.set_title(truth_coverage_title(t, np.asarray(post.quantiles((0.16, 0.84)))[:, post.mask]),
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _faint_pixels(post) -> list[str]:
    """Report lines on the faint pixels: quote their upper limits, not mean ± std."""
    faint = np.asarray(post.faint, dtype=bool)
    if not faint.any():
        return []
    ul = np.asarray(post.quantiles(0.95))[faint]
    return ["## Faint pixels", "",
            f"{int(faint.sum())} of {int(post.mask.sum())} free pixels have a posterior mean "
            f"below {post.faint_significance:g} standard deviations. Their posterior is "
            "skewed and piled up near zero flux, so quote their 95 % upper limits "
            "(`Posterior.upper_limit_map(0.95)`; here from "
            f"{ul.min():.3g} to {ul.max():.3g}, median {np.median(ul):.3g} {post.unit}), "
            "not mean ± std: that is where approximations (a log-normal, a Gaussian) are "
            "least accurate.", ""]


def write_report(post, directory: str | Path, *, truth: Any = None) -> Path:
    """Figures and ``report.md`` of a posterior; returns the path of ``report.md``."""
    d = Path(directory)
    figs = d / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    diag = post.diagnostics()
    figures = [plot_maps(post, figs / "maps.png", truth=truth),
               plot_diagnostics(diag, figs / "diagnostics.png"),
               plot_traces(post, diag, figs / "traces.png")]
    rank = _arviz_rank(post, diag, figs / "arviz_rank.png")
    if rank is not None:
        figures.append(rank)
    if "loss" in post.extras:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        loss = np.asarray(post.extras["loss"])
        ax.plot(loss - loss.min() + 1.0)
        ax.set_yscale("log")
        ax.set_xlabel("SVI step")
        ax.set_ylabel("ELBO loss − min + 1")
        fig.tight_layout()
        figures.append(save_figure(fig, figs / "loss.png"))
    if truth is not None:
        figures.append(_truth_plot(post, truth, figs / "truth.png"))
    ppc = post.predictive_checks()  # rootogram and PIT of the counts (None: not available)
    if ppc is not None:
        figures += predictive_figures(ppc, figs)
    summ = diag.summary()
    lines = [f"# probdeconv posterior ({post.method})", "",
             f"{post.chains} chain(s) × {post.n_draws} draws; image {post.axes.shape} "
             f"in {post.unit}; {int(post.mask.sum())} free pixels.", ""]
    if not post.independent:
        lines += [convergence_line(summ), ""]
    lines += predictive_lines(ppc)
    lines += assumption_lines(post.method, post.settings)
    lines += calibration_lines(post.method, post.settings)
    lines += ["## Settings", "", _table([(k, _fmt(v)) for k, v in post.settings.items()],
                                        ("setting", "value")), ""]
    lines += ["## Timings", "", _table([(k, f"{v:.2f}") for k, v in post.timings.items()],
                                       ("step", "seconds")), ""]
    rows = []
    for name in ("rhat", "ess_bulk", "ess_tail", "mcse_mean"):
        q = summ[name]
        if q:
            rows.append((name, *(f"{q[k]:.4g}" for k in ("q00", "q05", "q50", "q95", "q100"))))
    lines += ["## Diagnostics over pixels", "",
              _table(rows, ("statistic", "min", "5 %", "median", "95 %", "max")), ""]
    if summ["worst_rhat_pixels"]:
        lines += ["Worst pixels: " + ", ".join(
            f"pixel {w['pixel']} E{w['energy']} (R-hat {w['rhat']:.4f}, ESS "
            f"{w['ess_bulk']:.0f})" for w in summ["worst_rhat_pixels"]) + ".", ""]
    lines += _faint_pixels(post)
    if post.has_bkg:
        bs = post.bkg_summary()
        rows = [(name, f"{v['mean']:.5g}", f"{v['std']:.3g}", f"[{v['lower']:.5g}, "
                 f"{v['upper']:.5g}]", _fmt(summ["backgrounds"].get(name, {}).get("rhat",
                                                                                   "")))
                for name, v in bs.items()]
        title = "## Background normalisations" + (  # point sources: name@E<bin>
            " and point-source fluxes (ph cm-2 s-1, `<source>@E<bin>`)"
            if any("@E" in name for name in bs) else "")
        lines += [title, "",
                  _table(rows, ("background", "mean", "std", "68 % interval", "R-hat")), ""]
    lines += ["## Figures", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figures]
    path = d / "report.md"
    with atomic_target(path, True, "report") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    logger.info("posterior report written to %s", path)
    return path


def convergence_line(summ: dict) -> str:
    """One line: the verdict, then each criterion with its value, its bound and pass/fail.

    >>> convergence_line(dict(converged=False, max_rhat=1.0116, min_ess_bulk=457.0,
    ...                       min_ess_tail=328.0, divergences=0))  # doctest: +NORMALIZE_WHITESPACE
    'Convergence: **NOT converged**: max R-hat 1.0116 (needs < 1.01: fails); min bulk ESS 457
    (needs > 400: ok); min tail ESS 328 (needs > 400: fails); 0 divergences (needs 0: ok).'
    """
    def verdict(ok: bool) -> str:
        return "ok" if ok else "fails"

    rhat, bulk, tail, div = (summ["max_rhat"], summ["min_ess_bulk"], summ["min_ess_tail"],
                             int(summ["divergences"]))
    head = "converged" if summ["converged"] else "NOT converged"
    return (f"Convergence: **{head}**: max R-hat {rhat:.4f} (needs < {RHAT_MAX}: "
            f"{verdict(rhat < RHAT_MAX)}); min bulk ESS {bulk:.0f} (needs > {ESS_MIN}: "
            f"{verdict(bulk > ESS_MIN)}); min tail ESS {tail:.0f} (needs > {ESS_MIN}: "
            f"{verdict(tail > ESS_MIN)}); {div} divergences (needs 0: {verdict(div == 0)}).")


def truth_coverage_title(truth: np.ndarray, band: np.ndarray) -> str:
    """How many pixels with a positive true flux lie inside their central 68 % interval
    (``band`` = the 16 % and 84 % quantiles, shape ``[2, n]``).

    A pixel whose true flux is 0 sits on the positivity bound: no central interval of a
    positive posterior contains it, so such pixels are counted apart, not as misses.

    >>> title = truth_coverage_title(np.array([0.0, 1.0, 2.0]),
    ...                              np.array([[0.1, 0.9, 2.5], [0.3, 1.1, 3.0]]))
    >>> title.splitlines()  # doctest: +NORMALIZE_WHITESPACE
    ['truth inside the central 68 % interval in 1 of 2 pixels with flux > 0 (50 %);',
     '1 pixel(s) with true flux 0 not counted']
    """
    positive = truth > 0
    inside = int(np.sum(positive & (band[0] <= truth) & (truth <= band[1])))
    n = int(positive.sum())
    text = (f"truth inside the central 68 % interval in {inside} of {n} pixels with flux > 0 "
            f"({100 * inside / max(n, 1):.0f} %)")
    if n < truth.size:
        text += f";\n{truth.size - n} pixel(s) with true flux 0 not counted"
    return text
