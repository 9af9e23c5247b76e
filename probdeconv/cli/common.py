"""What the subcommands share: usage errors, logging, the one ``--set`` parser, data loading,
and the output directory (checked, locked, cleared of an earlier run's outputs)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np
import yaml

from ..config import Parameters
from ..config.parameters import safe_load_yaml
from ..errors import FileFormatError, OutputError, ParameterError, ProbdeconvError
from ..io.atomic import atomic_target, os_error_hint
from ..io.histpy_h5 import read_histogram
from ..shell.allsky_image import AllSkyImageModel
from ..shell.dataif import DataIF_COSI_DC2
from ..shell.response import CoordsysConversionMatrix, FullDetectorResponse
from ..simulate import load_simulation

__all__ = ["UsageError", "Terminated", "OUTPUT_PATTERNS", "apply_overrides",
           "check_output_directory", "claim_output_directory", "fit_model_to_data",
           "load_data_directory", "mark_running", "read_run_record", "remove_outputs",
           "setup_logging", "start_run_log", "write_text"]

logger = logging.getLogger(__name__)

# What `probdeconv run` and `probdeconv sample` write into --out (and --overwrite removes).
OUTPUT_PATTERNS = ("image.hdf5", "image_E*.fits", "iterations.csv", "iterations.fits",
                   "checkpoint.npz", "posterior.h5", "draws.h5", "posterior.nc",
                   "posterior_E*.fits", "summary.yml", "config.yml", "run.yml", "run.log",
                   "report.md", "figures/*.png", ".*.tmp", ".tmp-*")


class UsageError(ProbdeconvError):
    """Bad command-line input."""


class Terminated(KeyboardInterrupt):  # noqa: N818 - it is an interruption, like Ctrl-C
    """SIGTERM, raised in the main thread like Ctrl-C (checkpoints are kept the same way)."""


def setup_logging(args, out: Path | None = None) -> None:
    """Console logging at the level of ``--debug`` / ``--verbose`` / ``--quiet``.

    Records are also buffered until :func:`start_run_log` writes them to ``run.log`` (the
    output directory is created only once the inputs are validated); with ``out`` that
    happens at once.
    """
    level = logging.DEBUG if args.debug else (logging.INFO if args.verbose else logging.WARNING)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(console)
    buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    buffer.setLevel(logging.INFO)
    root.addHandler(buffer)
    for noisy in ("jax", "matplotlib", "h5py", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if out is not None:
        start_run_log(out)


def start_run_log(out: Path) -> None:
    """Log to ``out/run.log`` (appending), starting with the records buffered so far."""
    root = logging.getLogger()
    fh = logging.FileHandler(out / "run.log")
    fh.setLevel(logging.INFO)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for h in list(root.handlers):
        if isinstance(h, logging.handlers.MemoryHandler):
            h.setTarget(fh)
            h.flush()
            root.removeHandler(h)
            h.close()
    root.addHandler(fh)


def check_output_directory(out: str | Path, *, overwrite: bool, resume: bool = False,
                           flag: str = "--out", owned: tuple[str, ...] | None = None) -> Path:
    """Check ``out`` before anything is read or written; creates nothing.

    Refused: an existing file (``/dev/null`` too), a path under a file, a directory that
    cannot be written, and a non-empty directory without ``overwrite`` or ``resume`` (with
    ``owned`` glob patterns: one that holds such files).

    Raises
    ------
    OutputError
        The path cannot be an output directory.
    UsageError
        ``overwrite`` and ``resume`` together, or a non-empty directory without either.
    """
    out = Path(out)
    if overwrite and resume:
        raise UsageError("--overwrite and --resume together: --resume continues the run in "
                         f"{out}, --overwrite replaces it; choose one.")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{flag} {out}: exists and is not a directory; give the path of a "
                          "directory (it is created if missing).")
    parent = out if out.exists() else next((p for p in out.absolute().parents if p.exists()),
                                           None)
    if parent is None or not parent.is_dir():
        raise OutputError(f"{flag} {out}: {parent} is a file, not a directory; choose a path "
                          "under a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = "the file system is read-only" if _read_only(parent) else "no permission"
        raise OutputError(f"{flag} {out}: cannot write into {parent} ({why}); choose a "
                          "directory you can write to.")
    if out.is_dir() and not (overwrite or resume):
        held = sorted(p.name for p in out.iterdir()) if owned is None else sorted(
            {p.name for pattern in owned for p in out.glob(pattern)})
        if held:
            shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
            raise UsageError(f"{flag} {out}: not empty (holds {shown}); add --overwrite to "
                             "replace the outputs of an earlier run, --resume to continue "
                             "it, or choose another directory.")
    return out


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


@contextlib.contextmanager
def claim_output_directory(out: str | Path, *, overwrite: bool, resume: bool = False,
                           flag: str = "--out",
                           owned: tuple[str, ...] | None = None) -> Iterator[Path]:
    """Create and lock ``out`` for one run; with ``overwrite``, remove an earlier run's outputs
    (the files matching ``owned``, default :data:`OUTPUT_PATTERNS`; others are kept).

    The lock (``flock`` on the directory) is held until the block ends: a second run into
    the same directory is refused while the first runs.  Call it only once the inputs are
    validated, so that a rejected run leaves no directory behind.

    Raises
    ------
    OutputError
        The directory cannot be created, or another run holds it.
    """
    out = check_output_directory(out, overwrite=overwrite, resume=resume, flag=flag,
                                 owned=owned)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDONLY)
    except OSError as exc:
        raise OutputError(f"{flag} {out}: cannot create the directory "
                          f"({os_error_hint(exc)}).") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OutputError(f"{flag} {out}: another probdeconv command is writing into it; "
                              "wait for it to finish or choose another directory.") from exc
        if overwrite:
            removed = remove_outputs(out, owned or OUTPUT_PATTERNS)
            if removed:
                logger.info("--overwrite: removed %d file(s) of an earlier run from %s",
                            removed, out)
        yield out
    finally:
        os.close(fd)


def remove_outputs(out: Path, patterns: tuple[str, ...] = OUTPUT_PATTERNS) -> int:
    """Remove what probdeconv writes into an output directory (files matching ``patterns``);
    other files are left alone.  Returns the number of files removed."""
    n = 0
    for pattern in patterns:
        for path in out.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
                n += 1
    figures = out / "figures"
    if figures.is_dir() and not any(figures.iterdir()):
        figures.rmdir()
    return n


def mark_running(out: Path, command: str) -> None:
    """Record in ``out/run.yml`` that a run is writing its outputs (``status: running``);
    the finished run replaces it with its full record (``status: complete``).  ``report``
    refuses a directory whose run has not finished: its files may belong to two runs."""
    write_text(out / "run.yml", yaml.safe_dump(
        {"status": "running", "command": command, "pid": os.getpid()}, sort_keys=False))


def read_run_record(directory: Path) -> dict:
    """The ``run.yml`` of an output directory as a dict (``{}`` when absent).

    Raises
    ------
    FileFormatError
        ``run.yml`` is not readable YAML or not a mapping.
    """
    path = Path(directory) / "run.yml"
    if not path.is_file():
        return {}
    try:
        meta = safe_load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FileFormatError(f"{path}: damaged run record ({' '.join(str(exc).split())}); "
                              "expected the YAML mapping probdeconv writes. Rerun the command "
                              "with --overwrite.") from exc
    if not isinstance(meta, Mapping):
        raise FileFormatError(f"{path}: damaged run record (top level is "
                              f"{type(meta).__name__}, expected a mapping such as 'algorithm: "
                              "RL'); rerun the command with --overwrite.")
    return dict(meta)


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


def load_data_directory(directory: str | Path, dtype: str = "float64", precision: str = "full"):
    """Datasets and (if simulated) the true sky of a data directory.

    Returns ``(data, truth)``; ``truth`` is None for real data.

    Raises
    ------
    FileFormatError
        No such directory, no simulation.yml or dataset.yml, a manifest entry of the wrong
        type, or a file that is missing, truncated or damaged.
    """

    d = Path(directory)
    if not d.is_dir():
        raise FileFormatError(f"--data {d}: no such directory (expected a simulation or a "
                              "dataset.yml manifest).")
    if (d / "simulation.yml").is_file():
        sim = load_simulation(d)
        return sim.dataif("simulation", dtype=dtype, precision=precision), sim.truth
    manifest = d / "dataset.yml"
    if not manifest.is_file():
        raise FileFormatError(f"--data {d}: neither simulation.yml nor dataset.yml found; "
                              "write a dataset.yml with name, event, backgrounds, response "
                              "and (spacecraft frame) ccm.")
    m = _read_manifest(manifest)
    event = read_histogram(d / m["event"])
    bkgs = {k: read_histogram(d / f) for k, f in m["backgrounds"].items()}
    ccm = CoordsysConversionMatrix.open(d / m["ccm"]) if m.get("ccm") else None
    rsp_path = d / m["response"]
    if _is_full_detector_response(rsp_path):
        with FullDetectorResponse.open(rsp_path) as rsp:
            data = DataIF_COSI_DC2.load(m["name"], event, bkgs, rsp, coordsys_conv_matrix=ccm,
                                        dtype=dtype, precision=precision)
    else:
        data = DataIF_COSI_DC2.load(m["name"], event, bkgs, read_histogram(rsp_path),
                                    coordsys_conv_matrix=ccm, dtype=dtype, precision=precision)
    truth = None
    if m.get("truth"):
        truth = AllSkyImageModel.open(d / m["truth"])
    return data, truth


_MANIFEST_EXAMPLE = ("name: my_data\nevent: event.h5\nbackgrounds: {bkg: background.h5}\n"
                     "response: response.h5\nccm: ccm.h5")


def _read_manifest(manifest: Path) -> dict:
    """The entries of a dataset.yml, each checked for its type."""
    m = Parameters.open(manifest).to_dict()
    example = f" A manifest looks like:\n{_MANIFEST_EXAMPLE}"
    for key in ("event", "response"):
        if key not in m:
            raise ParameterError(f"{manifest}: key {key!r} is missing; expected name, event, "
                                 "backgrounds, response, ccm (optional).")
    for key in ("event", "response", "ccm", "truth", "name"):
        value = m.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ParameterError(f"{manifest}: {key}: got {value!r} ({type(value).__name__}); "
                                 f"expected {'a name' if key == 'name' else 'a file name'} "
                                 "(text)." + example)
    bkgs = m.get("backgrounds") or {}
    if not isinstance(bkgs, Mapping) or not all(isinstance(k, str) and isinstance(f, str)
                                                for k, f in bkgs.items()):
        raise ParameterError(f"{manifest}: backgrounds: got {bkgs!r} "
                             f"({type(bkgs).__name__}); expected a mapping of background "
                             "names to files, e.g. backgrounds: {bkg: background.h5}." + example)
    m["backgrounds"] = dict(bkgs)
    m["name"] = m.get("name") or "data"
    return m


def _is_full_detector_response(path: Path) -> bool:
    """Whether ``path`` holds a full detector response (a ``DRM`` group)."""
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file; expected the response named in "
                              "dataset.yml.")
    try:
        with h5py.File(path, "r") as f:
            return "DRM" in f
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot be opened as HDF5 ({exc}); the response file "
                              "may be truncated or not HDF5 - re-copy or regenerate it.") from exc


MODEL_KEYS = {"nside": "model_definition:property:nside",
              "energy edges": "model_definition:property:energy_edges"}


def fit_model_to_data(params: Parameters, data, overrides: list[str] | tuple = ()) -> None:
    """Set the model's nside / energy edges to the data's (they must agree anyway).

    A value the parameter file gives is replaced (logged); one given with ``--set`` in
    ``overrides`` that differs from the data's is refused, naming both.

    Raises
    ------
    UsageError
        A ``--set`` of nside or energy edges that the data contradict.
    """
    axes = data.model_axes
    nside = axes["lb"].nside
    edges = np.asarray(getattr(axes["Ei"].edges, "value", axes["Ei"].edges)).tolist()
    prop = "model_definition:property"
    _refuse_contradicted_overrides(params, overrides, nside, edges)
    if params.get(f"{prop}:nside") != nside or params.get(f"{prop}:energy_edges:value") != edges:
        logger.info("model nside / energy edges set to the data's: nside %d, edges %s keV "
                    "(the parameter file had nside %s, edges %s)", nside, edges,
                    params.get(f"{prop}:nside"), params.get(f"{prop}:energy_edges:value"))
    params[f"{prop}:nside"] = nside
    params[f"{prop}:energy_edges"] = {"value": edges, "unit": "keV"}
    init = "model_definition:initialization:parameter:value"
    values = params.get(init)
    n = len(edges) - 1
    if isinstance(values, list) and len(values) != n:
        params[init] = [float(values[0])] * n


def _refuse_contradicted_overrides(params: Parameters, overrides, nside: int,
                                   edges: list[float]) -> None:
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key == MODEL_KEYS["nside"] and params.get(key) != nside:
            raise UsageError(f"--set {item}: the data have NSIDE {nside} (from their "
                             "response or coordinate-conversion matrix) and the model's NSIDE "
                             f"is taken from the data, so NSIDE {params.get(key)} cannot be "
                             "used; drop this --set, or use data binned at that NSIDE.")
        if key.startswith(MODEL_KEYS["energy edges"]):
            given = params.get(f"{MODEL_KEYS['energy edges']}:value")
            try:
                same = len(given) == len(edges) and np.allclose(np.asarray(given, float),
                                                                edges, rtol=1e-9)
            except (TypeError, ValueError):
                same = False
            if not same:
                raise UsageError(f"--set {item}: the data's energy edges are {edges} keV (the "
                                 "response's Ei axis) and the model's are taken from the "
                                 f"data, so {given} cannot be used; drop this --set.")
