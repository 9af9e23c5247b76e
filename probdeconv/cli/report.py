"""``probdeconv report``: redraw the figures and report.md of a run or posterior directory."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..config import Parameters
from ..errors import FileFormatError
from ..io.posterior import is_posterior_directory
from ..report import run as report
from ..shell.allsky_image import AllSkyImageModel
from ..shell.bkg_nodes import run_expectation
from .common import UsageError, load_data_directory, read_run_record
from .sample import posterior_report_command

__all__ = ["report_command", "read_iterations"]

BKG_RANGE = "deconvolution:parameter:background_normalization_optimization"


def report_command(args) -> str:
    """Redraw figures and report.md of a run directory from its saved outputs.

    Raises
    ------
    FileFormatError
        Not an output directory, or a damaged ``iterations.csv``, ``run.yml`` or image.
    UsageError
        The run recorded in ``run.yml`` has not finished (its files may mix two runs).
    """

    d = Path(args.directory)
    if not d.is_dir():
        raise FileFormatError(f"{d}: no such directory; give the --out directory of "
                              "`probdeconv run` or `probdeconv sample`.")
    meta = read_run_record(d)
    if meta.get("status") == "running":
        raise UsageError(f"{d}: the {meta.get('command', 'run')} recorded in run.yml has not "
                         "finished (interrupted, or still running), so its files may belong "
                         "to two runs; finish it with --resume (run) or rerun it with "
                         "--overwrite, then report.")
    if is_posterior_directory(d):  # written by `probdeconv sample`
        return posterior_report_command(args)
    if not (d / "image.hdf5").is_file() or not (d / "iterations.csv").is_file():
        raise FileFormatError(f"{d}: not a `probdeconv run` output directory (image.hdf5 and "
                              "iterations.csv expected).")
    image = AllSkyImageModel.open(d / "image.hdf5")
    history, rows = read_iterations(d / "iterations.csv")
    truth = None
    data_dir = args.data or meta.get("data")
    data = None
    if data_dir and Path(data_dir).is_dir():
        data, truth = load_data_directory(data_dir)
    bkg = history[-1].get("background_normalization", {})
    record = {"algorithm": "run", "iterations": len(history), **meta}
    if "background_range" not in meta:  # run.yml of an older probdeconv
        record["background_range"] = _fitted_ranges(d / "config.yml", bkg)
    expectation = None if data is None else run_expectation(data, image, bkg,
                                                            _nodes(d / "config.yml"))
    path = report.render_run_report(d, image=image, history=history, meta=record, truth=truth,
                                    event=None if data is None else data.event,
                                    expectation=expectation)
    return f"probdeconv: report written to {path.resolve()}"


def read_iterations(path: Path) -> tuple[list[dict], list[dict]]:
    """The per-iteration history of ``iterations.csv`` (and its raw rows).

    Raises
    ------
    FileFormatError
        The file is empty, lacks a column or holds a value that is not a number; the
        message names the line.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FileFormatError(f"{path}: damaged iteration table ({exc}); rerun the run with "
                              "--overwrite.") from exc
    if not rows:
        raise FileFormatError(f"{path}: no iterations (the file is empty or holds only its "
                              "header); rerun the run with --overwrite.")
    history = []
    for line, r in enumerate(rows, start=2):
        try:
            h = {"iteration": int(r["iteration"]),
                 "log-likelihood": [float(r["log_likelihood"])], "alpha": float(r["alpha"])}
            post = r.get("log_posterior")
            if post not in (None, "") and not math.isnan(float(post)):
                h["log-posterior"] = float(post)
            h["background_normalization"] = {k[4:]: float(v) for k, v in r.items()
                                             if k.startswith("bkg_")}
        except (KeyError, TypeError, ValueError) as exc:
            raise FileFormatError(f"{path}, line {line}: damaged iteration record ({r}): "
                                  f"{type(exc).__name__} {exc}; expected the numbers of the "
                                  "columns iteration, log_likelihood, alpha, log_posterior, "
                                  "bkg_<name>. Rerun the run with --overwrite.") from exc
        history.append(h)
    return history, rows


def _nodes(config: Path):
    """The background time-node setting of the run's config.yml (None: none)."""
    return Parameters.open(config).get(f"{BKG_RANGE}:nodes") if config.is_file() else None


def _fitted_ranges(config: Path, bkg: dict) -> dict:
    """Ranges of the fitted background norms in the run's config.yml ({} if not fitted)."""
    if not config.is_file():
        return {}
    params = Parameters.open(config)
    if not params.get(f"{BKG_RANGE}:activate", False):
        return {}
    ranges = params.get(f"{BKG_RANGE}:range") or {}
    ranges = ranges.to_dict() if hasattr(ranges, "to_dict") else dict(ranges)
    return {k: ranges.get(k, ranges.get(k.split(":node")[0], [0.0, 100.0])) for k in bkg}
