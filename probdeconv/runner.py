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
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from tqdm.auto import tqdm

from . import __version__
from .config import Parameters
from .errors import FileFormatError, ParameterError

__all__ = ["run_command", "report_command", "load_data_directory", "write_outputs"]

logger = logging.getLogger(__name__)

# Seconds to pause after each iteration; set by the interruption tests only.
_DELAY = float(os.environ.get("PROBDECONV_ITERATION_DELAY", "0") or 0)


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_data_directory(directory: str | Path, dtype: str = "float64"):
    """Datasets and (if simulated) the true sky of a data directory.

    Returns ``(data, truth)``; ``truth`` is None for real data.
    """
    from .dataif import DataIF_COSI_DC2
    from .histogram import Histogram
    from .response import CoordsysConversionMatrix, FullDetectorResponse

    d = Path(directory)
    if not d.is_dir():
        raise FileFormatError(f"--data {d}: no such directory (expected a simulation or a "
                              "dataset.yml manifest).")
    if (d / "simulation.yml").is_file():
        from .simulate import load_simulation

        sim = load_simulation(d)
        return sim.dataif("simulation", dtype=dtype), sim.truth
    manifest = d / "dataset.yml"
    if not manifest.is_file():
        raise FileFormatError(f"--data {d}: neither simulation.yml nor dataset.yml found; "
                              "write a dataset.yml with name, event, backgrounds, response "
                              "and (spacecraft frame) ccm.")
    m = Parameters.open(manifest).to_dict()
    for key in ("event", "response"):
        if key not in m:
            raise ParameterError(f"{manifest}: key {key!r} is missing; expected name, event, "
                                 "backgrounds, response, ccm (optional).")
    event = Histogram.open(d / m["event"])
    bkgs = {k: Histogram.open(d / f) for k, f in (m.get("backgrounds") or {}).items()}
    ccm = CoordsysConversionMatrix.open(d / m["ccm"]) if m.get("ccm") else None
    import h5py

    with h5py.File(d / m["response"], "r") as f:
        is_drm = "DRM" in f
    if is_drm:
        with FullDetectorResponse.open(d / m["response"]) as rsp:
            data = DataIF_COSI_DC2.load(m.get("name", "data"), event, bkgs, rsp,
                                        coordsys_conv_matrix=ccm, dtype=dtype)
    else:
        data = DataIF_COSI_DC2.load(m.get("name", "data"), event, bkgs,
                                    Histogram.open(d / m["response"]),
                                    coordsys_conv_matrix=ccm, dtype=dtype)
    truth = None
    if m.get("truth"):
        from .sky import AllSkyImageModel

        truth = AllSkyImageModel.open(d / m["truth"])
    return data, truth


def _fit_model_to_data(params: Parameters, data) -> None:
    """Set the model's nside / energy edges to the data's (they must agree anyway)."""
    axes = data.model_axes
    nside = axes["lb"].nside
    edges = np.asarray(getattr(axes["Ei"].edges, "value", axes["Ei"].edges)).tolist()
    prop = "model_definition:property"
    if params.get(f"{prop}:nside") != nside or params.get(f"{prop}:energy_edges:value") != edges:
        logger.info("model nside / energy edges set to the data's: nside %d, edges %s keV",
                    nside, edges)
    params[f"{prop}:nside"] = nside
    params[f"{prop}:energy_edges"] = {"value": edges, "unit": "keV"}
    init = "model_definition:initialization:parameter:value"
    values = params.get(init)
    n = len(edges) - 1
    if isinstance(values, list) and len(values) != n:
        params[init] = [float(values[0])] * n


def run_command(args) -> str:
    from .cli import UsageError, _setup_logging
    from .deconvolution import ImageDeconvolution

    out = Path(args.out)
    _setup_logging(args, out)
    params = Parameters.open(args.config)
    for item in args.set:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. "
                             "deconvolution:parameter:iteration_max=50.")
        key, value = item.split("=", 1)
        section = key.strip().split(":")[0]
        if key.strip() not in params and section not in ("model_definition", "deconvolution"):
            raise UsageError(f"--set {key.strip()!r}: no such key in {args.config}; "
                             "use a colon path such as deconvolution:parameter:iteration_max.")
        params.override(f"{key.strip()} = {value}")
    data, truth = load_data_directory(args.data, dtype="float32" if args.float32 else "float64")
    _fit_model_to_data(params, data)
    params["deconvolution:parameter:save_results:activate"] = False
    deconv = ImageDeconvolution()
    deconv.set_dataset([data])
    deconv._parameter = params
    deconv.initialize()
    algo = deconv.deconvolution
    ckpt = out / "checkpoint.npz"
    t0 = time.perf_counter()
    algo.initialization()
    if args.resume:
        if not ckpt.is_file():
            raise FileFormatError(f"--resume: no checkpoint at {ckpt}; run without --resume.")
        start = algo.restore_checkpoint(ckpt)
        logger.info("resumed from %s at iteration %d", ckpt, start)
    params.dump(out / "config.yml")
    stop = algo.iteration_count >= algo.iteration_max
    bar = tqdm(total=algo.iteration_max, initial=algo.iteration_count, desc=algo.algorithm_name,
               disable=args.quiet, unit="it")
    try:
        while not stop:
            stop = algo.iteration()
            if _DELAY:
                time.sleep(_DELAY)  # test hook: makes interruption tests deterministic
            r = algo.results[-1]
            stat = r.get("log-posterior", float(np.sum(r["log-likelihood"])))
            bar.update(1)
            bar.set_postfix(stat=f"{stat:.8g}", alpha=f"{float(r.get('alpha', 1.0)):.3g}")
            if stop or algo.iteration_count % max(args.checkpoint_every, 1) == 0:
                algo.save_checkpoint(ckpt)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    write_outputs(out, algo, data, truth, params, args, elapsed)
    return (f"probdeconv: {algo.iteration_count} iterations of {algo.algorithm_name}; outputs in "
          f"{out.resolve()}")


def write_outputs(out: Path, algo, data, truth, params, args, elapsed: float) -> None:
    """Final image (HDF5 + FITS per energy bin), scalars (CSV + FITS), metadata, figures."""
    import healpy as hp

    from . import report
    from .io.results import save_scalar_tables

    image = algo.model
    tmp = out / ".tmp-image.hdf5"
    image.write(tmp, overwrite=True)
    os.replace(tmp, out / "image.hdf5")
    values = np.asarray(image, dtype=float)
    nest = bool(getattr(image.axes[0], "nest", False))
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
    _atomic_text(out / "iterations.csv", buf.getvalue())
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
    _atomic_text(out / "run.yml", yaml.safe_dump(meta, sort_keys=False))
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


def report_command(args) -> str:
    """Redraw figures and report.md of a run directory from its saved outputs."""
    from . import report
    from .sky import AllSkyImageModel

    d = Path(args.directory)
    from .io.posterior import is_posterior_directory

    if is_posterior_directory(d):  # written by `probdeconv sample`
        from .sampling_runner import posterior_report_command

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
