"""``probdeconv run``: a MAP imaging run with logs, checkpoints, outputs and figures.

Outputs in ``--out``:

- ``image.hdf5`` (final AllSkyImageModel, histpy layout) and ``image_E<i>.fits`` (one
  HEALPix map per energy bin, readable by ``healpy.read_map``);
- ``iterations.csv`` and ``iterations.fits`` (per-iteration scalars);
- ``config.yml`` (the exact parameters used), ``run.yml`` (package version, data, seed,
  timings), ``run.log``;
- ``checkpoint.npz`` (every ``--checkpoint-every`` iterations, atomic) for ``--resume``;
- ``figures/``: image (beside the truth for simulations), curves, data-space residuals.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import platform
import time
from pathlib import Path

import healpy as hp
import numpy as np
import yaml

from ..config import Parameters
from ..errors import FileFormatError
from ..io.atomic import atomic_target
from ..io.results import save_scalar_tables
from ..report import run as report
from ..shell.image_deconvolution import ImageDeconvolution
from ..version import __version__
from .common import (
    apply_overrides,
    check_output_directory,
    claim_output_directory,
    fit_model_to_data,
    load_data_directory,
    mark_running,
    start_run_log,
    write_text,
)

__all__ = ["bound_warnings", "run_command", "summary_lines", "write_outputs"]

logger = logging.getLogger(__name__)

# Seconds to pause after each iteration; set by the interruption tests only.
_DELAY = float(os.environ.get("PROBDECONV_ITERATION_DELAY", "0") or 0)


def run_command(args) -> str:
    """Validate the parameter file and the data, then claim ``--out`` and run.

    Nothing is created before the inputs are validated; ``--out`` is locked while the run
    writes into it, and ``run.yml`` says ``status: running`` until the outputs are complete.
    """
    out = Path(args.out)
    check_output_directory(out, overwrite=args.overwrite, resume=args.resume)
    params = Parameters.open(args.config)
    apply_overrides(params, args.set, args.config, ("model_definition", "deconvolution"))
    data, truth = load_data_directory(args.data, dtype="float32" if args.float32 else "float64")
    fit_model_to_data(params, data, args.set)
    params["deconvolution:parameter:save_results:activate"] = False
    ckpt = out / "checkpoint.npz"
    if args.resume and not ckpt.is_file():
        raise FileFormatError(f"--resume: no checkpoint at {ckpt}; run without --resume.")
    deconv = ImageDeconvolution()
    deconv.set_dataset([data])
    deconv.parameter = params
    deconv.initialize()
    if args.resume:  # before anything in --out changes
        deconv.check_resumable(ckpt, deconv.resume_identity(),
                               deconv.deconvolution.algorithm_name)
    with claim_output_directory(out, overwrite=args.overwrite, resume=args.resume):
        start_run_log(out)
        if not args.resume:
            mark_running(out, "run")
            params.dump(out / "config.yml")
        t0 = time.perf_counter()
        # the one iteration loop (progress, log lines, checkpoints, resume) is
        # ImageDeconvolution's
        deconv.run_deconvolution(checkpoint=ckpt,
                                 checkpoint_every=max(args.checkpoint_every, 1),
                                 resume=args.resume, progress=not args.quiet,
                                 callback=_pause if _DELAY else None)
        elapsed = time.perf_counter() - t0
        algo = deconv.deconvolution
        if args.resume:
            mark_running(out, "run")
            params.dump(out / "config.yml")
        write_outputs(out, algo, data, truth, params, args, elapsed)
    return (f"probdeconv: {algo.iteration_count} iterations of {algo.algorithm_name}; outputs in "
            f"{out.resolve()}")


def _pause(algo) -> None:
    """Test hook: a pause after each iteration makes interruption tests deterministic."""
    time.sleep(_DELAY)


def write_outputs(out: Path, algo, data, truth, params, args, elapsed: float) -> None:
    """Final image (HDF5 + FITS per energy bin), scalars (CSV + FITS), metadata, figures."""

    image = algo.model
    with atomic_target(out / "image.hdf5", True, "image") as tmp:
        image.write(tmp, overwrite=True)
    values = np.asarray(image, dtype=float)
    nest = bool(getattr(image.axes[0], "is_nested", False))
    for e in range(values.shape[1]):
        with atomic_target(out / f"image_E{e}.fits", True, "FITS map") as tmp:
            hp.write_map(tmp, values[:, e], nest=nest, coord="G", overwrite=True,
                         column_units=str(image.unit), dtype=np.float64)
    history = algo.scalar_history()
    keys = list(algo.dict_bkg_norm)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["iteration", "log_likelihood", "alpha", "log_posterior",
                *[f"bkg_{k}" for k in keys]])
    for r in history:
        w.writerow([r["iteration"], repr(float(np.sum(r["log-likelihood"]))),
                    repr(float(r.get("alpha", 1.0))), repr(float(r.get("log-posterior",
                                                                        float("nan")))),
                    *[repr(float(r["background_normalization"][k])) for k in keys]])
    write_text(out / "iterations.csv", buf.getvalue())
    for r in history:
        r.setdefault("alpha", 1.0)
    save_scalar_tables(out / "iterations.fits", history, values=[("alpha", "ALPHA")],
                       dicts=[("background_normalization", "BKG_NORM")],
                       lists=[("log-likelihood", "LOG-LIKELIHOOD", [str(data.name)])])
    meta = {"probdeconv_version": __version__, "python": platform.python_version(),
            "config": str(args.config), "data": str(args.data), "overrides": list(args.set),
            "algorithm": algo.algorithm_name, "iterations": algo.iteration_count,
            "seconds": round(elapsed, 3), "resumed": bool(args.resume),
            "dtype": "float32" if args.float32 else "float64", "status": "complete"}
    sim_cfg = Path(args.data) / "simulation.yml"
    if sim_cfg.is_file():
        meta["simulation_seed"] = ((yaml.safe_load(sim_cfg.read_text()) or {}).get("config")
                                   or {}).get("seed")
    write_text(out / "run.yml", yaml.safe_dump(meta, sort_keys=False))
    figs = out / "figures"
    report.plot_image(image, figs / "image.png", truth=truth)
    report.plot_curves(history, figs / "curves.png")
    expectation = data.calc_expectation(image, dict(algo.dict_bkg_norm))
    report.plot_residuals(data.event, expectation, figs / "residuals.png")
    ranges = algo.dict_bkg_norm_range if algo.do_bkg_norm_optimization else {}
    warnings = bound_warnings(dict(algo.dict_bkg_norm), ranges)
    for w in warnings:
        logger.warning("%s", w)
    lines = [f"**Warning:** {w}" for w in warnings] + summary_lines(
        algo.algorithm_name, algo.iteration_count, elapsed,
        float(np.sum(history[-1]["log-likelihood"])), values, truth)
    report.write_run_report(out, "probdeconv run", meta,
                            ["figures/image.png", "figures/curves.png",
                             "figures/residuals.png"], lines)


def summary_lines(algorithm: str, iterations: int, elapsed: float | None,
                  log_likelihood: float, values: np.ndarray, truth) -> list[str]:
    """The lines at the top of a run's report.md (also when ``probdeconv report`` redraws
    it): algorithm, iterations, final log-likelihood and, for a simulation, the total flux
    against the truth."""
    took = "" if elapsed is None else f" in {elapsed:.1f} s"
    lines = [f"{algorithm}: {iterations} iterations{took}; final log-likelihood "
             f"{log_likelihood:.6f}."]
    if truth is not None:
        t, rec = np.asarray(truth, float), np.asarray(values, float)
        lines.append(f"Total flux: reconstructed {rec.sum():.4g}, true {t.sum():.4g} "
                     f"(ratio {rec.sum() / t.sum():.3f}).")
    return lines


def bound_warnings(bkg_norm: dict, ranges: dict) -> list[str]:
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
