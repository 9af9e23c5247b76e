"""The ``probdeconv`` command line.

::

    probdeconv simulate --sky bulge511 --nside 8 --out sim/
    probdeconv run models/rl.yml --data sim/ --out results/ [--set key=value ...]
    probdeconv run models/rl.yml --data sim/ --out results/ --resume
    probdeconv sample models/nuts.yml --data sim/ --out post/ [--set key=value ...] [--seed N]
    probdeconv report results/          (a run or a posterior directory)
    probdeconv info FILE

Exit codes: 0 success, 2 bad input (a one-line message), 1 internal error; ``--debug``
prints the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

import h5py
import numpy as np

from ..errors import FileFormatError, ProbdeconvError
from ..io.histpy_h5 import read_histogram
from ..shell.response import FullDetectorResponse
from ..simulate import simulate
from ..version import __version__
from .common import setup_logging
from .report import report_command
from .run import run_command
from .sample import sample_command

__all__ = ["main", "build_parser"]

logger = logging.getLogger("probdeconv")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="probdeconv",
        description="All-sky image reconstruction for Compton telescopes (COSI): MAP imaging "
                    "with cosipy's algorithms, simulated data, reports.",
        epilog="Exit codes: 0 success, 2 bad input, 1 internal error. Use --debug for a "
               "traceback.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_flags(p, argparse.SUPPRESS)
    for name in ("debug", "quiet", "verbose"):
        p.set_defaults(**{name: False})
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    # global flags are accepted before and after the subcommand
    common = argparse.ArgumentParser(add_help=False)
    _global_flags(common, argparse.SUPPRESS)

    s = sub.add_parser("simulate", parents=[common],
                       help="simulate a COSI-like data set (histpy files)",
                       description="Simulate instrument, sky and Poisson counts; write the "
                                   "files a real analysis has (response, CCM, events, "
                                   "background, true sky).")
    s.add_argument("--sky", default="bulge511", help="sky preset (bulge511, points)")
    s.add_argument("--nside", type=int, default=None, help="HEALPix NSIDE of model and PsiChi")
    s.add_argument("--seed", type=int, default=0, help="random seed of the counts")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--overwrite", action="store_true", help="replace existing files")

    r = sub.add_parser("run", parents=[common],
                       help="MAP imaging run (RL, RLsimple, MAP_RL) from a YAML file",
                       description="Run the deconvolution of a parameter file (cosipy "
                                   "layout, see models/) on a data directory.")
    r.add_argument("config", help="parameter file (YAML), e.g. models/rl.yml")
    r.add_argument("--data", required=True,
                   help="data directory: a simulation (simulation.yml) or a dataset.yml "
                        "manifest {name, event, backgrounds: {key: file}, response, ccm}")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter by colon path, e.g. "
                        "deconvolution:parameter:iteration_max=50 (repeatable)")
    r.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --out")
    r.add_argument("--checkpoint-every", type=int, default=5, metavar="N",
                   help="write a checkpoint every N iterations (default 5)")
    r.add_argument("--float32", action="store_true", help="float32 arrays (default float64)")

    sp = sub.add_parser("sample", parents=[common],
                                       help="posterior sampling (NUTS, HMC, SVI, Laplace, "
                                       "bootstrap) from a YAML file",
                        description="Sample the posterior of the sky (uncertainty maps, ArviZ "
                                    "diagnostics) with the sampling: section of a YAML file "
                                    "(see models/nuts.yml).")
    sp.add_argument("config", help="YAML file with model_definition, prior and sampling "
                                   "sections, e.g. models/nuts.yml")
    sp.add_argument("--data", required=True,
                    help="data directory: a simulation (simulation.yml) or a dataset.yml "
                         "manifest")
    sp.add_argument("--out", required=True, help="output (posterior) directory")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter by colon path, e.g. sampling:num_samples=2000 "
                         "(repeatable)")
    sp.add_argument("--seed", type=int, default=None, help="random seed (sampling:seed)")
    sp.add_argument("--float32", action="store_true", help="float32 arrays (default float64)")

    rp = sub.add_parser("report", parents=[common],
                        help="figures and report.md of a run or posterior directory",
                        description="Redraw the figures and report.md of a `probdeconv run` "
                                    "or `probdeconv sample` output directory.")
    rp.add_argument("directory")
    rp.add_argument("--data", default=None,
                    help="data directory (default: the one recorded in run.yml)")

    i = sub.add_parser("info", parents=[common],
    help="axes, units and sums of a histogram/response/CCM file")
    i.add_argument("file")
    return p


def _global_flags(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--debug", action="store_true", default=default,
                   help="show tracebacks and debug logs")
    p.add_argument("--quiet", action="store_true", default=default,
                   help="no progress bar, warnings only")
    p.add_argument("--verbose", action="store_true", default=default,
                   help="log each iteration to the terminal")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging(args)
    try:
        if args.command == "simulate":
            return _cmd_simulate(args)
        if args.command == "run":

            print(run_command(args))  # one-line summary of what was written
            return 0
        if args.command == "sample":

            print(sample_command(args))  # one-line summary of what was written
            return 0
        if args.command == "info":
            return _cmd_info(args)
        if args.command == "report":

            print(report_command(args))  # one-line summary of what was written
            return 0
    except BrokenPipeError:
        # the reader of our output went away (`probdeconv info f.h5 | head`): not an error;
        # point stdout at /dev/null so that the flush at exit does not fail again
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("probdeconv: interrupted (a checkpoint, if any, is kept; use --resume)",
              file=sys.stderr)
        return 130
    except (ProbdeconvError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        if args.debug:
            raise
        msg = " ".join(str(exc).split())
        print(f"probdeconv: error: {msg}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence of a CLI
        if args.debug:
            raise
        print(f"probdeconv: internal error: {type(exc).__name__}: {exc} (run with --debug "
              "for the traceback)", file=sys.stderr)
        return 1
    return 2


def _cmd_simulate(args) -> int:
    sim = simulate(sky=args.sky, nside=args.nside, seed=args.seed, out=args.out,
                   overwrite=args.overwrite)
    print(f"simulated {args.sky} at NSIDE {sim.config.nside}, seed {args.seed}: "
          f"{int(sim.event.contents.sum())} counts; files in {Path(args.out).resolve()}")
    return 0


def _cmd_info(args) -> int:

    path = Path(args.file)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file.")
    try:
        with h5py.File(path, "r") as f:
            groups = list(f.keys())
            other = {k for k in groups if not (isinstance(f[k], h5py.Group)
                                               and {"axes", "contents"} <= set(f[k]))}
    except OSError as exc:
        raise FileFormatError(f"{path}: not an HDF5 file ({exc}).") from exc
    if "DRM" in groups:
        with FullDetectorResponse.open(path) as rsp:
            print(rsp)
            _print_axes(rsp.axes)
        return 0
    if "DRM" not in groups and other == set(groups):
        raise FileFormatError(f"{path}: no histogram (histpy groups with 'axes' and "
                              f"'contents') and no 'DRM' response; groups: {groups}.")
    for name in groups:
        if name in other:
            print(f"[{name}] not a histogram (skipped)")
            continue
        h = read_histogram(path, name=name)
        kind = "sparse" if h.is_sparse else "dense"
        total = float(h.contents.data.sum() if h.is_sparse else np.sum(np.asarray(h)))
        print(f"[{name}] {kind}, unit {h.unit}, shape {h.axes.shape}, sum {total:.6g}")
        _print_axes(h.axes)
    return 0


def _print_axes(axes) -> None:
    """One line per histpy axis: label, bins, range, unit, HEALPix NSIDE / scheme / frame."""
    for ax in axes:
        e = np.asarray(getattr(ax.edges, "value", ax.edges))
        extra = ""
        if hasattr(ax, "nside"):
            frame = getattr(ax.coordsys, "name", ax.coordsys)
            extra = f" nside {ax.nside} {ax.scheme} {frame or ''}".rstrip()
        print(f"  {ax.label}: {ax.nbins} bins [{e[0]:g}, {e[-1]:g}] {ax.unit or ''}{extra}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
