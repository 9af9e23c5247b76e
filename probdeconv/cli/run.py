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
from ..io.results import save_scalar_tables
from ..report import run as report
from ..shell.image_deconvolution import ImageDeconvolution
from ..version import __version__
from .common import (
    apply_overrides,
    fit_model_to_data,
    load_data_directory,
    setup_logging,
    write_text,
)

__all__ = ["run_command", "write_outputs"]

logger = logging.getLogger(__name__)

# Seconds to pause after each iteration; set by the interruption tests only.
_DELAY = float(os.environ.get("PROBDECONV_ITERATION_DELAY", "0") or 0)


def run_command(args) -> str:

    out = Path(args.out)
    setup_logging(args, out)
    params = Parameters.open(args.config)
    apply_overrides(params, args.set, args.config, ("model_definition", "deconvolution"))
    data, truth = load_data_directory(args.data, dtype="float32" if args.float32 else "float64")
    fit_model_to_data(params, data)
    params["deconvolution:parameter:save_results:activate"] = False
    ckpt = out / "checkpoint.npz"
    if args.resume and not ckpt.is_file():
        raise FileFormatError(f"--resume: no checkpoint at {ckpt}; run without --resume.")
    deconv = ImageDeconvolution()
    deconv.set_dataset([data])
    deconv.parameter = params
    deconv.initialize()
    params.dump(out / "config.yml")
    t0 = time.perf_counter()
    # the one iteration loop (progress, log lines, checkpoints, resume) is ImageDeconvolution's
    deconv.run_deconvolution(checkpoint=ckpt, checkpoint_every=max(args.checkpoint_every, 1),
                             resume=args.resume, progress=not args.quiet,
                             callback=_pause if _DELAY else None)
    elapsed = time.perf_counter() - t0
    algo = deconv.deconvolution
    write_outputs(out, algo, data, truth, params, args, elapsed)
    return (f"probdeconv: {algo.iteration_count} iterations of {algo.algorithm_name}; outputs in "
            f"{out.resolve()}")


def _pause(algo) -> None:
    """Test hook: a pause after each iteration makes interruption tests deterministic."""
    time.sleep(_DELAY)


def write_outputs(out: Path, algo, data, truth, params, args, elapsed: float) -> None:
    """Final image (HDF5 + FITS per energy bin), scalars (CSV + FITS), metadata, figures."""

    image = algo.model
    tmp = out / ".tmp-image.hdf5"
    image.write(tmp, overwrite=True)
    os.replace(tmp, out / "image.hdf5")
    values = np.asarray(image, dtype=float)
    nest = bool(getattr(image.axes[0], "is_nested", False))
    for e in range(values.shape[1]):
        path = out / f"image_E{e}.fits"
        tmp = out / f".tmp-image_E{e}.fits"
        hp.write_map(tmp, values[:, e], nest=nest, coord="G", overwrite=True,
                     column_units=str(image.unit), dtype=np.float64)
        os.replace(tmp, path)
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
            "dtype": "float32" if args.float32 else "float64"}
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
    lines = [f"{algo.algorithm_name}: {algo.iteration_count} iterations in {elapsed:.1f} s; "
             f"final log-likelihood {float(np.sum(history[-1]['log-likelihood'])):.6f}."]
    if truth is not None:
        t, rec = np.asarray(truth, float), values
        lines.append(f"Total flux: reconstructed {rec.sum():.4g}, true {t.sum():.4g} "
                     f"(ratio {rec.sum() / t.sum():.3f}).")
    report.write_run_report(out, "probdeconv run", meta,
                            ["figures/image.png", "figures/curves.png",
                             "figures/residuals.png"], lines)
