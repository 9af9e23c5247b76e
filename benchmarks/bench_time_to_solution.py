"""Time to a solution: from starting Python on the files to cosipy's 30-iteration result.

On the NSIDE-8 DC2-shape spacecraft-frame problem of ``bench_rl_spacecraft.py`` (files
written by its ``--write``; generated here when absent), each case runs in a fresh
interpreter, timed from the moment the parent starts it:

- ``cosipy``: cosipy 0.4.3 as its users run it (``Histogram.open``,
  ``FullDetectorResponse.open``, ``DataIF_COSI_DC2.load``, ``ImageDeconvolution`` with the
  files' parameter file, RLadvanced/MaxStep, ``iteration_max`` 30: ``initialization()``
  then ``iteration()`` until it stops, as ``run_deconvolution`` does).  Its final
  log-likelihood is the target.
- ``probdeconv``: the same user code with ``probdeconv`` imports, with the fastest
  settings (``--accelerator``, ``--alpha-max``, a relative stopping rule
  ``--threshold``); the JAX compilation cache in a fresh directory, first empty
  (``cold``), then filled by that run (``warm``); and once with the cache off.
- ``cli``: ``probdeconv run`` on a ``dataset.yml`` beside the files, with the same
  settings (its outputs include figures and a report).

Reported per case: when each phase ended (import, file reading, conversion to arrays,
algorithm set-up with the first expectation, first iteration, each iteration), the
seconds to the first iteration whose log-likelihood reaches cosipy's 30-iteration value,
the seconds to the end of the run (stopping rule), and the machine load (1-minute load
average, and the cores other processes kept busy meanwhile).

Examples::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_time_to_solution.py \\
        --dir /tmp/bench_sc/nside8 --cosipy-python /tmp/cosipy-venv/bin/python --json out.json

This module imports only the standard library and numpy at the top, so that the cosipy
worker can run it with an interpreter that has no JAX.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TAG = "@@TTS@@ "
COSIPY_ITERATIONS = 30


def _emit(obj: dict) -> None:
    print(TAG + json.dumps(obj), flush=True)


def _user_run(lib: str, directory: Path, overrides: list[str]) -> None:
    """The code a user writes, with time stamps (epoch seconds) after each phase."""
    marks = [("start of worker", time.time())]

    def mark(name):
        marks.append((name, time.time()))

    if lib == "cosipy":
        import logging
        import warnings

        from cosipy.image_deconvolution import (
            CoordsysConversionMatrix,
            DataIF_COSI_DC2,
            ImageDeconvolution,
        )
        from cosipy.response import FullDetectorResponse
        from histpy import Histogram

        logging.disable(logging.WARNING)  # cosipy logs every step at INFO
        warnings.filterwarnings("ignore", category=RuntimeWarning)  # MaxStep's 0/0
        np.seterr(invalid="ignore", divide="ignore")
    else:
        from probdeconv import (
            CoordsysConversionMatrix,
            DataIF_COSI_DC2,
            FullDetectorResponse,
            Histogram,
            ImageDeconvolution,
        )
        from probdeconv.compile_cache import compilation_cache_status
    mark("import")
    event = Histogram.open(directory / "event.h5")
    bkg = Histogram.open(directory / "bkg.h5")
    ccm = CoordsysConversionMatrix.open(directory / "ccm.h5")
    rsp = FullDetectorResponse.open(directory / "response.h5")
    mark("files opened")
    data = DataIF_COSI_DC2.load(name="bench", event_binned_data=event,
                                dict_bkg_binned_data={"bkg": bkg}, rsp=rsp,
                                coordsys_conv_matrix=ccm)
    rsp.close()
    mark("DataIF load (conversion)")
    imdec = ImageDeconvolution()
    imdec.set_dataset([data])
    imdec.read_parameterfile(directory / "parameters.yml")
    for o in overrides:
        imdec.override_parameter(o)
    imdec.initialize()
    if lib != "cosipy":
        imdec.progress = False
    algo = imdec.deconvolution if lib != "cosipy" else imdec._deconvolution
    mark("ImageDeconvolution.initialize")
    algo.initialization()
    mark("algorithm initialization")
    logliks, times = [], []
    stop = False
    while not stop:  # run_deconvolution's loop
        stop = algo.iteration()
        times.append(time.time())
        logliks.append(float(np.sum(algo.results[-1]["log-likelihood"])))
    algo.finalization()
    mark("end")
    out = dict(marks=marks, iter_times=times, loglik=logliks)
    if lib != "cosipy":
        out["cache"] = str(compilation_cache_status())
    _emit(out)


def _cpu_busy_s() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - (v[4] if len(v) > 4 else 0)) / os.sysconf("SC_CLK_TCK")


def run_case(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` in a fresh process; its result, times relative to the start, and load."""
    import resource

    load1 = os.getloadavg()[0]
    r0, b0 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_busy_s()
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    t1 = time.time()
    r1, b1 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_busy_s()
    own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    res = {"wall_s": t1 - t0, "load1_before": load1, "cpu_s": own,
           "others_cores": max(0.0, (b1 - b0 - own) / (t1 - t0)), "rc": proc.returncode}
    lines = [x for x in proc.stdout.splitlines() if x.startswith(TAG)]
    if proc.returncode != 0:
        res["error"] = (proc.stderr or proc.stdout)[-3000:] or (
            f"killed by signal {-proc.returncode}" + (" (out of memory?)"
                                                      if proc.returncode == -9 else "")
            if proc.returncode < 0 else f"exit status {proc.returncode}")
    if lines:
        r = json.loads(lines[-1][len(TAG):])
        res["marks"] = [(n, t - t0) for n, t in r["marks"]]
        res["iter_s"] = [t - t0 for t in r["iter_times"]]
        res["loglik"] = r["loglik"]
        res["cache"] = r.get("cache")
    return res


def _settings(args) -> list[str]:
    p = "deconvolution:parameter:"
    return [f"{p}iteration_max = {args.iteration_max}",
            f"{p}acceleration:algorithm = {args.accelerator}",
            f"{p}acceleration:accel_factor_max = {args.alpha_max}",
            f"{p}stopping_criteria:threshold = {args.threshold}",
            f"{p}stopping_criteria:relative = true"]


def _first_reaching(res: dict, target: float) -> tuple[int | None, float | None]:
    for i, (ll, t) in enumerate(zip(res.get("loglik", []), res.get("iter_s", []))):
        if ll >= target:
            return i + 1, t
    return None, None


def _print_case(name: str, res: dict, target: float | None) -> None:
    print(f"\n  {name}: wall {res['wall_s']:.1f} s (process start to exit), load average "
          f"{res['load1_before']:.1f} before, other processes kept {res['others_cores']:.2f} "
          "cores busy", flush=True)
    if res.get("rc"):
        print("    FAILED:\n" + res.get("error", ""))
        return
    prev = 0.0
    for n, t in res.get("marks", []):
        if n == "end":
            continue
        print(f"    {n:32s} at {t:7.2f} s (+{t - prev:.2f})")
        prev = t
    its = res.get("iter_s", [])
    if its:
        print(f"    first iteration done            at {its[0]:7.2f} s (+{its[0] - prev:.2f})")
        if len(its) > 1:
            d = np.diff(its)
            print(f"    iterations 2..{len(its)}: median {np.median(d):.3f} s, total "
                  f"{its[-1] - its[0]:.2f} s")
        print(f"    log-likelihood after {len(its)} iterations: {res['loglik'][-1]:.3f}")
    if target is not None and its:
        k, t = _first_reaching(res, target)
        res["reached_iteration"], res["reached_s"] = k, t
        print(f"    reaches cosipy's {COSIPY_ITERATIONS}-iteration log-likelihood "
              + (f"at iteration {k}, {t:.2f} s after start" if k else "NOT reached"))
    if res.get("cache"):
        print(f"    compilation cache: {res['cache']}")


def _ensure_files(directory: Path, env: dict) -> None:
    if all((directory / f).is_file() for f in ("event.h5", "bkg.h5", "ccm.h5", "response.h5",
                                               "parameters.yml")):
        return
    print(f"writing the NSIDE-8 problem to {directory} (bench_rl_spacecraft.py) ...", flush=True)
    subprocess.run([sys.executable, str(HERE / "bench_rl_spacecraft.py"), "--worker",
                    "generate", "--nside", "8", "--dir", str(directory), "--iterations",
                    str(COSIPY_ITERATIONS - 1)], env=env, check=True)


def _write_manifest(directory: Path) -> None:
    (directory / "dataset.yml").write_text(
        "name: bench\nevent: event.h5\nbackgrounds: {bkg: bkg.h5}\nresponse: response.h5\n"
        "ccm: ccm.h5\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "bench_tts",
                    help="directory of the NSIDE-8 files (written when absent)")
    ap.add_argument("--cosipy-python", default=None, help="interpreter with cosipy 0.4.3")
    ap.add_argument("--target", type=float, default=None,
                    help="log-likelihood to reach when cosipy is not run (or fails); "
                         "-4991433.431 on the files bench_rl_spacecraft.py writes")
    ap.add_argument("--accelerator", default="LineSearch",
                    choices=["MaxStep", "LineSearch", "SQUAREM"])
    ap.add_argument("--alpha-max", type=float, default=100.0)
    ap.add_argument("--threshold", type=float, default=5e-6,
                    help="relative stopping threshold (gain / |log-likelihood|)")
    ap.add_argument("--iteration-max", type=int, default=100)
    ap.add_argument("--cases", nargs="+", default=["cosipy", "cold", "warm", "nocache", "cli"],
                    choices=["cosipy", "cold", "warm", "nocache", "cli"])
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--worker", choices=["cosipy", "probdeconv"], help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        _user_run(args.worker, args.dir, args.set)
        return 0

    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent) + (os.pathsep + env["PYTHONPATH"]
                                            if env.get("PYTHONPATH") else "")
    env.pop("PROBDECONV_JAX_CACHE", None)
    _ensure_files(args.dir, env)
    _write_manifest(args.dir)
    print(f"machine: {os.cpu_count()} CPUs; files in {args.dir}; probdeconv settings: "
          f"{args.accelerator}, alpha_max {args.alpha_max}, relative threshold "
          f"{args.threshold}", flush=True)
    results: dict = {"settings": vars(args) | {"dir": str(args.dir), "json": None}}
    target = args.target
    me = [sys.executable, str(Path(__file__).resolve()), "--dir", str(args.dir)]
    if "cosipy" in args.cases:
        if not args.cosipy_python:
            print("--cosipy-python not given: cosipy skipped")
        else:
            cos_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            r = run_case([args.cosipy_python, *me[1:], "--worker", "cosipy", "--set",
                          f"deconvolution:parameter:iteration_max = {COSIPY_ITERATIONS}"],
                         cos_env)
            _print_case(f"cosipy 0.4.3, {COSIPY_ITERATIONS} iterations", r, None)
            results["cosipy"] = r
            if r.get("loglik"):
                target = r["loglik"][-1]
    cache = Path(tempfile.mkdtemp(prefix="probdeconv_jax_cache_"))
    sets = sum((["--set", s] for s in _settings(args)), [])
    try:
        for case in [c for c in args.cases if c != "cosipy"]:
            case_env = dict(env)
            case_env["PROBDECONV_JAX_CACHE"] = "off" if case == "nocache" else str(cache)
            if case == "cli":
                out = Path(tempfile.mkdtemp(prefix="bench_tts_cli_"))
                cmd = [sys.executable, "-m", "probdeconv", "--quiet", "run",
                       str(args.dir / "parameters.yml"), "--data", str(args.dir), "--out",
                       str(out), "--overwrite"]
                cmd += sum((["--set", s.replace(" = ", "=")] for s in _settings(args)), [])
                r = run_case(cmd, case_env)
                csv = out / "iterations.csv"
                if csv.is_file():
                    rows = csv.read_text().splitlines()
                    head = rows[0].split(",")
                    col = head.index("log_likelihood")
                    r["loglik"] = [float(x.split(",")[col]) for x in rows[1:]]
                    k = next((i + 1 for i, v in enumerate(r["loglik"])
                              if target is not None and v >= target), None)
                    r["reached_iteration"] = k
                shutil.rmtree(out, ignore_errors=True)
                print(f"\n  probdeconv run (command line, cache warm): wall {r['wall_s']:.1f} s, "
                      f"{len(r.get('loglik', []))} iterations, log-likelihood "
                      f"{r.get('loglik', [float('nan')])[-1]:.3f}, reaches the target at "
                      f"iteration {r.get('reached_iteration')}; load average "
                      f"{r['load1_before']:.1f}, others {r['others_cores']:.2f} cores"
                      + (f"\n    FAILED: {r.get('error')}" if r.get("rc") else ""), flush=True)
            else:
                r = run_case([*me, "--worker", "probdeconv", *sets], case_env)
                _print_case(f"probdeconv, compilation cache {case}", r, target)
            r["cache_entries"] = sum(1 for _ in cache.glob("*-cache"))
            if case != "nocache":
                print(f"    compilation cache entries after this case: {r['cache_entries']}",
                      flush=True)
            results[case] = r
            if args.json:  # after each case: a later failure keeps what was measured
                args.json.write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    cos = results.get("cosipy")
    if cos and cos.get("iter_s"):
        its = cos["iter_s"]
        cos_iters = its[-1] - its[0] + (its[0] - dict(cos["marks"])[
            "algorithm initialization"])
        print(f"\nsummary: cosipy {COSIPY_ITERATIONS} iterations: {cos['wall_s']:.1f} s from "
              f"process start ({cos_iters:.1f} s in its iterations alone)")
        for case in ("cold", "warm", "nocache"):
            r = results.get(case)
            if r and r.get("reached_s"):
                print(f"  probdeconv ({case}): cosipy's log-likelihood {r['reached_s']:.1f} s "
                      f"after start -> {cos['wall_s'] / r['reached_s']:.1f}x less than cosipy's "
                      f"whole run, {cos_iters / r['reached_s']:.1f}x less than its iterations; "
                      f"run ends by its rule at {r['wall_s']:.1f} s "
                      f"({cos['wall_s'] / r['wall_s']:.1f}x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
