"""What the subcommands share: usage errors, logging, the one ``--set`` parser, data loading."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import h5py
import numpy as np

from ..config import Parameters
from ..errors import FileFormatError, ParameterError, ProbdeconvError
from ..io.atomic import atomic_target
from ..io.histpy_h5 import read_histogram
from ..shell.allsky_image import AllSkyImageModel
from ..shell.dataif import DataIF_COSI_DC2
from ..shell.response import CoordsysConversionMatrix, FullDetectorResponse
from ..simulate import load_simulation

__all__ = ["UsageError", "apply_overrides", "fit_model_to_data", "load_data_directory",
           "setup_logging", "write_text"]

logger = logging.getLogger(__name__)


class UsageError(ProbdeconvError):
    """Bad command-line input."""


def setup_logging(args, out: Path | None = None) -> None:
    level = logging.DEBUG if args.debug else (logging.INFO if args.verbose else logging.WARNING)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if out is not None else level)
    for h in list(root.handlers):
        root.removeHandler(h)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(console)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(out / "run.log")
        fh.setLevel(logging.INFO)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    for noisy in ("jax", "matplotlib", "h5py", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def apply_overrides(params: Parameters, items: list[str], config, sections) -> None:
    """Apply ``--set KEY=VALUE`` items (colon paths) to ``params``: the one ``--set`` parser.

    A key must exist in the file or lie under one of ``sections``.
    """
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. "
                             "deconvolution:parameter:iteration_max=50.")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in params and key.split(":")[0] not in sections:
            raise UsageError(f"--set {key!r}: no such key in {config}; use a colon path under "
                             f"{', '.join(sections)}, e.g. deconvolution:parameter:iteration_max.")
        params.override(f"{key} = {value}")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_target(path, overwrite=True, what="file") as tmp:
        tmp.write_text(text)


def load_data_directory(directory: str | Path, dtype: str = "float64"):
    """Datasets and (if simulated) the true sky of a data directory.

    Returns ``(data, truth)``; ``truth`` is None for real data.
    """

    d = Path(directory)
    if not d.is_dir():
        raise FileFormatError(f"--data {d}: no such directory (expected a simulation or a "
                              "dataset.yml manifest).")
    if (d / "simulation.yml").is_file():
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
    event = read_histogram(d / m["event"])
    bkgs = {k: read_histogram(d / f) for k, f in (m.get("backgrounds") or {}).items()}
    ccm = CoordsysConversionMatrix.open(d / m["ccm"]) if m.get("ccm") else None
    with h5py.File(d / m["response"], "r") as f:
        is_drm = "DRM" in f
    if is_drm:
        with FullDetectorResponse.open(d / m["response"]) as rsp:
            data = DataIF_COSI_DC2.load(m.get("name", "data"), event, bkgs, rsp,
                                        coordsys_conv_matrix=ccm, dtype=dtype)
    else:
        data = DataIF_COSI_DC2.load(m.get("name", "data"), event, bkgs,
                                    read_histogram(d / m["response"]),
                                    coordsys_conv_matrix=ccm, dtype=dtype)
    truth = None
    if m.get("truth"):
        truth = AllSkyImageModel.open(d / m["truth"])
    return data, truth


def fit_model_to_data(params: Parameters, data) -> None:
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


