"""Outputs of a model comparison: table (text, CSV, Markdown) and figure.

Takes a :class:`probdeconv.results.compare.Comparison` (duck-typed: ``table``, a pandas
DataFrame from :func:`arviz.compare`; ``models``, ``{name: ModelLoo}``; ``warnings()``).

:func:`write_comparison` writes into a directory, each file atomically:

- ``compare.csv`` — ArviZ's table (one row per model, best first);
- ``compare.md`` — what to read first (the preferred model and by how many standard
  errors), the table, the Pareto k diagnostics per model and the warnings;
- ``compare.png`` — :func:`arviz.plot_compare` (elpd differences with their standard
  errors; drawn with matplotlib directly where the ArviZ backend fails).
"""

from __future__ import annotations

import logging
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io.atomic import atomic_target  # noqa: E402
from .run import save_figure  # noqa: E402

__all__ = ["comparison_text", "comparison_markdown", "plot_comparison", "write_comparison",
           "verdict_line"]

logger = logging.getLogger(__name__)

COLUMNS = ("rank", "elpd", "se", "elpd_diff", "dse", "p", "weight", "diag_elpd")


def _shown(table):
    """The table's main columns, numbers rounded for reading (the CSV keeps them all)."""
    t = table[[c for c in COLUMNS if c in table.columns]].copy()
    for c in ("elpd", "se", "elpd_diff", "dse", "p"):
        if c in t.columns:
            t[c] = t[c].astype(float).round(1)
    if "weight" in t.columns:
        t["weight"] = t["weight"].astype(float).round(3)
    return t


def verdict_line(comparison) -> str:
    """The preferred model and the size of its lead over the next, in standard errors."""
    t = comparison.table
    names = list(t.index)
    if len(names) < 2:
        return f"Only one model: {names[0]}."
    diff, dse = -float(t["elpd_diff"].iloc[1]), float(t["dse"].iloc[1])
    z = diff / dse if dse > 0 else float("inf")
    strength = ("clearly" if z > 4 and diff > 4 else "probably" if z > 2 and diff > 4
                else "not distinguishably")
    caveat = (" These estimates are NOT reliable: see the Pareto k warnings."
              if comparison.warnings() else "")
    return (f"The data prefer **{names[0]}** over {names[1]} {strength}: elpd_loo higher by "
            f"{diff:.1f} ± {dse:.1f} ({z:.1f} standard errors; a difference below 4, or "
            f"below 2 standard errors, is no real preference).{caveat}")


def comparison_text(comparison) -> str:
    """The table and the warnings as plain text (what the command prints)."""
    lines = [_shown(comparison.table).to_string(), "", verdict_line(comparison).replace(
        "**", "")]
    lines += [f"  {name}: {m.diagnostic_line()}" for name, m in comparison.models.items()]
    lines += [f"warning: {w}" for w in comparison.warnings()]
    return "\n".join(lines)


def comparison_markdown(comparison, figure: str | None = "compare.png") -> str:
    """``compare.md``: verdict, table, Pareto k per model, warnings, figure."""
    t = _shown(comparison.table)
    header = "| model | " + " | ".join(t.columns) + " |"
    rows = [header, "|" + " --- |" * (len(t.columns) + 1)]
    for name, r in t.iterrows():
        rows.append(f"| {name} | " + " | ".join(
            f"{v:.10g}" if isinstance(v, float | np.floating) else str(v) for v in r) + " |")
    lines = ["# Model comparison (PSIS-LOO)", "", verdict_line(comparison), ""]
    lines += [f"- {w}" for w in comparison.warnings()] + ([""] if comparison.warnings() else [])
    lines += rows + ["", "## Pareto k and draws per model", ""]
    lines += [f"- **{name}**: {m.diagnostic_line()}" for name, m in comparison.models.items()]
    lines += ["", "elpd_loo: expected log predictive density of a left-out data point, summed "
              "over the points (higher is better); se its standard error; elpd_diff and dse "
              "the difference to the best model and its standard error; p the effective "
              "number of parameters; weight the stacking weight.", ""]
    if figure:
        lines += [f"![comparison]({figure})", ""]
    return "\n".join(lines)


def plot_comparison(comparison, path: str | Path) -> Path:
    """ArviZ's comparison plot (or the same drawn directly), saved atomically."""
    try:
        pc = az.plot_compare(comparison.table, backend="matplotlib")
        fig = pc.viz["figure"].item() if "figure" in pc.viz else plt.gcf()
        fig.set_size_inches(8.0, 1.6 + 0.5 * len(comparison.table))
        fig.tight_layout()  # ArviZ's title inside the figure
        return save_figure(fig, path)
    except Exception as exc:  # noqa: BLE001 - fall back to a plain figure
        logger.info("ArviZ comparison plot failed (%s: %s); drawing it directly",
                    type(exc).__name__, exc)
        plt.close("all")
        t = comparison.table
        fig, ax = plt.subplots(figsize=(6, 1.0 + 0.6 * len(t)))
        y = np.arange(len(t))
        ax.errorbar(t["elpd_diff"], y, xerr=t["dse"], fmt="o")
        ax.set_yticks(y)
        ax.set_yticklabels(list(t.index))
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_xlabel("elpd_loo difference to the best model")
    fig.suptitle("PSIS-LOO: elpd difference to the best model (± dse)", fontsize=9)
    return save_figure(fig, path)


def write_comparison(comparison, directory: str | Path) -> list[Path]:
    """``compare.csv``, ``compare.md`` and ``compare.png`` in ``directory`` (created)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    csv = d / "compare.csv"
    with atomic_target(csv, True, "comparison table") as tmp:
        comparison.table.to_csv(tmp, index_label="model")
    png = plot_comparison(comparison, d / "compare.png")
    md = d / "compare.md"
    with atomic_target(md, True, "comparison report") as tmp:
        tmp.write_text(comparison_markdown(comparison, png.name))
    logger.info("comparison written to %s", d)
    return [csv, md, png]
