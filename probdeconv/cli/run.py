"""``probdeconv run``: a MAP imaging run with logs, checkpoints, outputs and figures.

Outputs in ``--out``:

- ``image.hdf5`` (final AllSkyImageModel, histpy layout) and ``image_E<i>.fits`` (one
  HEALPix map per energy bin, column ``FLUX``, readable by ``healpy.read_map``; header:
  ``BUNIT``, ``E_MIN`` / ``E_MAX`` in keV, ``METHOD``, ``NITER``, ``CREATOR``, ``DATE``;
  :mod:`probdeconv.io.maps`);
- ``iterations.csv`` and ``iterations.fits`` (per-iteration scalars);
- ``config.yml`` (the exact parameters used), ``run.yml`` (package version, data, seed,
  timings, iteration limit, stopping rule, background ranges, warnings), ``run.log``;
- ``checkpoint.npz`` (every ``--checkpoint-every`` iterations, atomic) for ``--resume``;
- ``figures/``: truth, image and their difference on one scale (simulations), curves
  (statistic, step, backgrounds), data-space residuals;
- ``report.md``: the checks first (the statistic fell? stopped at the iteration limit
  before the stopping rule? a background on its bound? warnings from the log), then the
  summary (total flux and correlation against the truth for simulations) and figures.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import yaml

from ..config import Parameters
from ..errors import FileFormatError
from ..io.atomic import atomic_target
from ..io.maps import write_healpix_maps
from ..io.results import save_scalar_tables, write_iterations_csv
from ..report import run as report
from ..report.checks import WarningCollector
from ..shell.checks import frame_name
from ..shell.image_deconvolution import ImageDeconvolution
from ..shell.run_checks import stopping_rule
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
from .devices import process_out, refuse_unsplit, start_devices

__all__ = ["run_command", "write_outputs"]

logger = logging.getLogger(__name__)

# Seconds to pause after each iteration; set by the interruption tests only.
_DELAY = float(os.environ.get("PROBDECONV_ITERATION_DELAY", "0") or 0)


def run_command(args) -> str:
    """Validate the parameter file and the data, then claim ``--out`` and run.

    Nothing is created before the inputs are validated; ``--out`` is locked while the run
    writes into it, and ``run.yml`` says ``status: running`` until the outputs are complete.
    Warnings logged meanwhile (data, iterations) are repeated at the top of ``report.md``.
    """
    with WarningCollector.attached() as warned:
        return _run(args, warned.messages)


def _run(args, warned: list[str]) -> str:
    mesh = start_devices(args)  # before JAX starts (--devices, several hosts)
    args.out = str(process_out(args.out))
    out = Path(args.out)
    check_output_directory(out, overwrite=args.overwrite, resume=args.resume)
    params = Parameters.open(args.config)
    apply_overrides(params, args.set, args.config, ("model_definition", "deconvolution"))
    refuse_unsplit(params, mesh)
    data, truth = load_data_directory(args.data, dtype="float32" if args.float32 else "float64",
                                      precision=args.precision)
    fit_model_to_data(params, data, args.set)
    if mesh is not None:
        data.shard(mesh)
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
        write_outputs(out, algo, data, truth, params, args, elapsed, warned)
    return (f"probdeconv: {algo.iteration_count} iterations of {algo.algorithm_name}; outputs in "
            f"{out.resolve()}")


def _pause(algo) -> None:
    """Test hook: a pause after each iteration makes interruption tests deterministic."""
    time.sleep(_DELAY)


def write_outputs(out: Path, algo, data, truth, params, args, elapsed: float,
                  log_warnings: list[str] | tuple = ()) -> None:
    """Final image (HDF5 + FITS per energy bin), scalars (CSV + FITS), metadata, figures and
    report.md (the checks of :mod:`probdeconv.report.checks` at its top, with the warnings
    logged during the run, ``log_warnings``)."""

    image = algo.model
    with atomic_target(out / "image.hdf5", True, "image") as tmp:
        image.write(tmp, overwrite=True)
    values = np.asarray(image, dtype=float)
    nest = bool(getattr(image.axes[0], "is_nested", False))
    edges = image.axes[1].edges
    edges = np.asarray(getattr(edges, "value", edges), dtype=float)  # keV (the model's axis)
    for e in range(values.shape[1]):
        write_healpix_maps(out / f"image_E{e}.fits", {"FLUX": values[:, e]}, nest=nest,
                           unit=image.unit, coordsys=frame_name(image.axes[0]) or "galactic",
                           energy_range_kev=(edges[e], edges[e + 1]),
                           provenance={"METHOD": (algo.algorithm_name, "deconvolution "
                                                  "algorithm"),
                                       "NITER": (int(algo.iteration_count), "iterations")})
    history = algo.scalar_history()
    write_iterations_csv(out / "iterations.csv", history, list(algo.dict_bkg_norm))
    for r in history:
        r.setdefault("alpha", 1.0)
    save_scalar_tables(out / "iterations.fits", history, values=[("alpha", "ALPHA")],
                       dicts=[("background_normalization", "BKG_NORM")],
                       lists=[("log-likelihood", "LOG-LIKELIHOOD", [str(data.name)])])
    ranges = algo.dict_bkg_norm_range if algo.do_bkg_norm_optimization else {}
    meta = {"probdeconv_version": __version__, "python": platform.python_version(),
            "config": str(args.config), "data": str(args.data), "overrides": list(args.set),
            "algorithm": algo.algorithm_name, "iterations": algo.iteration_count,
            "iteration_max": algo.iteration_max, "stopping_rule": stopping_rule(algo),
            "background_range": {k: [float(b) for b in v] for k, v in ranges.items()},
            "log_warnings": list(log_warnings),
            "seconds": round(elapsed, 3), "resumed": bool(args.resume),
            "dtype": "float32" if args.float32 else "float64", "precision": args.precision,
            "status": "complete"}
    sim_cfg = Path(args.data) / "simulation.yml"
    if sim_cfg.is_file():
        meta["simulation_seed"] = ((yaml.safe_load(sim_cfg.read_text()) or {}).get("config")
                                   or {}).get("seed")
    write_text(out / "run.yml", yaml.safe_dump(meta, sort_keys=False))
    nodes = getattr(algo, "bkg_nodes", None)  # normalisations per time node, if any
    expectation = (data.calc_expectation(image, dict(algo.dict_bkg_norm)) if nodes is None
                   else nodes.expectation(data, 0, image, algo.dict_bkg_norm))
    report.render_run_report(out, image=image, history=history, meta=meta, truth=truth,
                             event=data.event, expectation=expectation)
