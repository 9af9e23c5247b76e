"""``probdeconv report``: redraw the figures and report.md of a run or posterior directory."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from ..errors import FileFormatError
from ..io.posterior import is_posterior_directory
from ..report import run as report
from ..shell.allsky_image import AllSkyImageModel
from .common import load_data_directory
from .sample import posterior_report_command

__all__ = ["report_command"]


def report_command(args) -> str:
    """Redraw figures and report.md of a run directory from its saved outputs."""

    d = Path(args.directory)

    if is_posterior_directory(d):  # written by `probdeconv sample`
        return posterior_report_command(args)
    if not (d / "image.hdf5").is_file() or not (d / "iterations.csv").is_file():
        raise FileFormatError(f"{d}: not a `probdeconv run` output directory (image.hdf5 and "
                              "iterations.csv expected).")
    meta = yaml.safe_load((d / "run.yml").read_text()) if (d / "run.yml").is_file() else {}
    image = AllSkyImageModel.open(d / "image.hdf5")
    with open(d / "iterations.csv") as f:
        rows = list(csv.DictReader(f))
    history = [{"iteration": int(r["iteration"]), "log-likelihood": [float(r["log_likelihood"])],
                "alpha": float(r["alpha"])} for r in rows]
    if rows and rows[0].get("log_posterior") not in (None, "nan"):
        for h, r in zip(history, rows):
            h["log-posterior"] = float(r["log_posterior"])
    figures = ["figures/image.png", "figures/curves.png"]
    truth = None
    data_dir = args.data or meta.get("data")
    data = None
    if data_dir and Path(data_dir).is_dir():
        data, truth = load_data_directory(data_dir)
    report.plot_image(image, d / "figures" / "image.png", truth=truth)
    report.plot_curves(history, d / "figures" / "curves.png")
    if data is not None:
        bkg = {k[4:]: float(v) for k, v in rows[-1].items() if k.startswith("bkg_")}
        report.plot_residuals(data.event, data.calc_expectation(image, bkg),
                              d / "figures" / "residuals.png")
        figures.append("figures/residuals.png")
    path = report.write_run_report(d, "probdeconv run", meta or {"directory": str(d)}, figures,
                                   [f"{len(history)} iterations; final log-likelihood "
                                    f"{history[-1]['log-likelihood'][0]:.6f}."])
    return f"probdeconv: report written to {path.resolve()}"
