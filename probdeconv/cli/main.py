"""The ``probdeconv`` command line.

::

    probdeconv simulate --sky bulge511 --nside 8 --out sim/
    probdeconv run models/rl.yml --data sim/ --out results/ [--set key=value ...]
    probdeconv run models/rl.yml --data sim/ --out results/ --resume
    probdeconv sample models/nuts.yml --data sim/ --out post/ [--set key=value ...] [--seed N]
    probdeconv report results/          (a run or a posterior directory)
    probdeconv compare post_a/ post_b/ --out cmp/
    probdeconv info FILE

Exit codes: 0 success, 2 bad input (a one-line message), 1 internal error; ``--debug``
prints the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from ..errors import ProbdeconvError
from ..io.atomic import os_error_hint
from ..io.checkpoint import read_checkpoint_header
from ..simulate import FILE_NAMES, simulate
from ..simulate.point_sources import point_source_from_text
from ..version import __version__
from .common import (
    Terminated,
    check_output_directory,
    claim_output_directory,
    setup_logging,
)
from .compare import WEIGHT_METHODS, compare_command
from .devices import add_device_flags
from .info import info_command
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
    s.add_argument("--point-source", action="append", default=None, metavar="L,B,FLUX[,NAME]",
                   help="a point source at its exact direction beside the sky (galactic deg, "
                        "ph cm-2 s-1 over the Ei axis); repeat for several")
    s.add_argument("--nside", type=int, default=None, help="HEALPix NSIDE of model and PsiChi")
    s.add_argument("--seed", type=int, default=0, help="random seed of the counts")
    s.add_argument("--phi-bins", type=int, default=None,
                   help="Compton scattering angle bins (default 30; 10 gives 3x lighter "
                        "data, e.g. for sampling on a laptop CPU)")
    s.add_argument("--scatt-nside", type=int, default=None,
                   help="HEALPix NSIDE of the attitude (ScAtt) binning (default 2; 1 gives "
                        "fewer attitude bins, lighter data)")
    s.add_argument("--bkg-drift", type=float, default=None,
                   help="relative background drift over the mission (0.2: ±20 %%; the "
                        "background template written stays flat)")
    s.add_argument("--bkg-drift-shape", choices=("sine", "linear"), default=None,
                   help="shape of the drift (default sine)")
    s.add_argument("--time-chunks", type=int, default=None,
                   help="bin attitudes within this many consecutive time intervals (ScAtt "
                        "axis in time order, for background time nodes; default 1)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the files of an earlier simulation in --out")

    r = sub.add_parser("run", parents=[common],
                       help="MAP imaging run (RL, RLsimple, MAP_RL) from a YAML file",
                       description="Run the deconvolution of a parameter file (cosipy "
                                   "layout, see models/) on a data directory.")
    r.add_argument("config", help="parameter file (YAML), e.g. models/rl.yml")
    r.add_argument("--data", required=True,
                   help="data directory: a simulation (simulation.yml) or a dataset.yml "
                        "manifest {name, event, backgrounds: {key: file}, response, ccm}")
    r.add_argument("--out", required=True,
                   help="output directory (created; must be empty unless --overwrite or "
                        "--resume)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of an earlier run in --out")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter by colon path, e.g. "
                        "deconvolution:parameter:iteration_max=50 (repeatable)")
    r.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --out")
    r.add_argument("--checkpoint-every", type=int, default=5, metavar="N",
                   help="write a checkpoint every N iterations (default 5)")
    r.add_argument("--float32", action="store_true", help="float32 arrays (default float64)")
    r.add_argument("--precision", choices=("full", "mixed"), default="full",
                   help="mixed: float32 response products, float64 likelihoods, sums and "
                        "images (half the response memory; default full)")
    add_device_flags(r)

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
    sp.add_argument("--out", required=True,
                    help="output (posterior) directory (created; must be empty unless "
                         "--overwrite)")
    sp.add_argument("--overwrite", action="store_true",
                    help="replace the outputs of an earlier run in --out")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter by colon path, e.g. sampling:num_samples=2000 "
                         "(repeatable)")
    sp.add_argument("--seed", type=int, default=None, help="random seed (sampling:seed)")
    sp.add_argument("--float32", action="store_true", help="float32 arrays (default float64)")
    add_device_flags(sp)
    sp.add_argument("--precision", choices=("full", "mixed"), default="full",
                    help="mixed: float32 response products, float64 likelihoods, sums and "
                         "images (default full)")

    rp = sub.add_parser("report", parents=[common],
                        help="figures and report.md of a run or posterior directory",
                        description="Redraw the figures and report.md of a `probdeconv run` "
                                    "or `probdeconv sample` output directory.")
    rp.add_argument("directory")
    rp.add_argument("--data", default=None,
                    help="data directory (default: the one recorded in run.yml)")

    cp = sub.add_parser("compare", parents=[common],
                        help="which model do the data prefer: PSIS-LOO of posterior "
                             "directories (ArviZ compare table and figure)",
                        description="Compare posterior directories of the same data written "
                                    "by `probdeconv sample` with PSIS-LOO: prints ArviZ's "
                                    "table (elpd_loo, se, dse, weight, Pareto k) and writes "
                                    "compare.csv, compare.md and compare.png into --out.")
    cp.add_argument("posteriors", nargs="+", metavar="POSTERIOR",
                    help="posterior directories (the --out of `probdeconv sample`)")
    cp.add_argument("--out", required=True, help="directory for compare.csv/.md/.png")
    cp.add_argument("--weights", choices=WEIGHT_METHODS, default="stacking",
                    help="model weights of the table (default stacking)")

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
    """Run the command line; returns the exit code (0, 1 internal error, 2 bad input,
    130 interrupted by Ctrl-C, 143 terminated by SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    previous = _on_sigterm_raise()
    try:
        setup_logging(args)
        return _dispatch(args)
    except BrokenPipeError:
        # the reader of our output went away (`probdeconv info f.h5 | head`): not an error;
        # point stdout at /dev/null so that the flush at exit does not fail again
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        print(f"probdeconv: {interruption_message(args, exc)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except (ProbdeconvError, OSError, MemoryError) as exc:
        if args.debug:
            raise
        print(f"probdeconv: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence of a CLI
        if args.debug:
            raise
        print(f"probdeconv: internal error: {type(exc).__name__}: {exc} (run with --debug "
              "for the traceback)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _dispatch(args) -> int:
    if args.command == "simulate":
        return _cmd_simulate(args)
    if args.command == "info":
        return info_command(args)
    command = {"run": run_command, "sample": sample_command, "report": report_command,
               "compare": compare_command}
    print(command[args.command](args))  # one-line summary of what was written
    return 0


def _on_sigterm_raise():
    """Make SIGTERM raise :class:`Terminated` (a KeyboardInterrupt) in the main thread, so
    that it ends like Ctrl-C: checkpoint kept, one line, no traceback.  Returns the
    previous handler (None when not in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)


def error_line(exc: BaseException) -> str:
    """One line for an error of bad input or of the environment, in command-line words."""
    if isinstance(exc, ProbdeconvError):
        msg = str(exc)
    elif isinstance(exc, MemoryError):
        msg = (f"out of memory ({exc or 'an allocation failed'}); use a smaller NSIDE, fewer "
               "bins or a smaller batch, or a machine with more memory")
    else:  # OSError: a file the environment does not let us read or write
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        msg = f"{where}{os_error_hint(exc)}"
    msg = " ".join(msg.split())
    for api, cli in (("pass overwrite=True", "add --overwrite"),
                     ("overwrite=True", "--overwrite"),
                     ("resume=True", "--resume")):
        msg = msg.replace(api, cli)
    return msg


def interruption_message(args, exc: KeyboardInterrupt) -> str:
    """What an interrupted command left behind and how to go on, true for each subcommand."""
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    if args.command == "run":
        ckpt = Path(args.out) / "checkpoint.npz"
        header = read_checkpoint_header(ckpt) if ckpt.is_file() else None
        if header is None:
            return (f"{what} before the first checkpoint; nothing to resume: run the command "
                    "again (with --overwrite).")
        again = ["probdeconv", "run", str(args.config), "--data", str(args.data), "--out",
                 str(args.out), *[a for item in args.set for a in ("--set", item)], "--resume"]
        return (f"{what}; the checkpoint {ckpt} of iteration {header.get('iteration_count')} "
                f"is kept: continue with `{shlex.join(again)}`.")
    if args.command == "sample":
        return (f"{what}; `probdeconv sample` cannot resume a sampler: run the command again "
                "with --overwrite.")
    if args.command == "simulate":
        return (f"{what}; the simulation in {args.out} is incomplete: run the command again "
                "with --overwrite.")
    return f"{what}."


def _cmd_simulate(args) -> int:
    owned = (*FILE_NAMES.values(), ".*.tmp")
    out = check_output_directory(args.out, overwrite=args.overwrite, owned=owned)
    lighter = {k: v for k, v in (("phi_bins", args.phi_bins),
                                 ("scatt_nside", args.scatt_nside),
                                 ("bkg_drift", args.bkg_drift),
                                 ("bkg_drift_shape", args.bkg_drift_shape),
                                 ("time_chunks", args.time_chunks)) if v is not None}
    if args.point_source:
        lighter["point_sources"] = [point_source_from_text(t) for t in args.point_source]
    sim = simulate(sky=args.sky, nside=args.nside, seed=args.seed, **lighter)
    with claim_output_directory(out, overwrite=args.overwrite, owned=owned):
        sim.write(out, overwrite=args.overwrite)
    print(f"simulated {args.sky} at NSIDE {sim.config.nside}, seed {args.seed}: "
          f"{int(sim.event.contents.sum())} counts; files in {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
