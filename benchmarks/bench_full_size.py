"""Full-size benchmarks (issue 11 part 2): DC2 galactic 511 keV and spacecraft-frame problems
at NSIDE 16 and a 10 Ei × 10 Em continuum, float64 and mixed precision.

For each case, in a fresh subprocess (so that the peak resident set is the case's own):
time per iteration, time to a solution (from the start of the Python process to the
iteration where the relative log-likelihood change ``|L_k - L_{k-1}| / |L_k|`` first falls
below ``--rel-tol``, or the iteration limit), where those seconds go (imports, generation of
the synthetic problem — the stand-in for reading files —, ``make_dataset``, compilation,
iterations) and the peak memory.  Accelerated RL as in ``bench_rl_spacecraft.py``:
``MaxStep`` (``alpha_max`` 10), response weighting 0.5, background fitted.

Before running a case the script computes its bytes (response + data-space arrays) and
skips it, printing the figure, when it exceeds ``--mem-limit`` GB; sizes that fit no
24 GB machine are listed with their byte counts.  Mixed-precision cases are compared with
their float64 twin: log-likelihood and final-image differences.  The problems are those of
``dc2_synth.py``.

cosipy 0.4.3 (``--cosipy-python``, default ``/tmp/cosipy-venv/bin/python`` when it exists)
runs the galactic cases up to ``--cosipy-max-nside`` in the same run: the problem is
written as histpy-layout HDF5 files (event, background, a precomputed galactic response in
cm² s, a parameter file for ``RLadvanced``, MaxStep, the same settings), read with
``Histogram.open`` and ``DataIF_COSI_DC2.load``, and iterated with the same stopping rule
(``iteration()`` called until the rule or the limit; cosipy's own flag is ignored).

Examples::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_full_size.py --cases galactic:16 \\
        --precision full mixed --json benchmarks/full_size_cpu.json
    PYTHONPATH=. .venv/bin/python benchmarks/bench_full_size.py --cases continuum:8 \\
        spacecraft:16 --max-iter 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULT_TAG = "@@RESULT@@ "
ALPHA_MAX = 10.0
WEIGHTING_INDEX = 0.5
N_PHI = {"galactic": 60, "spacecraft": 60, "continuum": 30}
N_E = {"galactic": 1, "spacecraft": 1, "continuum": 10}
N_T = {"galactic": 1, "spacecraft": 278, "continuum": 1}


def process_age_s() -> float:
    """Seconds since this process started (``/proc/self/stat`` start time)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def case_bytes(kind: str, nside: int, precision: str, triangular: bool = True) -> dict:
    """Bytes of the response and of the data-space arrays of a case (computed, not run)."""
    npix = 12 * nside**2
    n_e, n_phi, n_t = N_E[kind], N_PHI[kind], N_T[kind]
    q = n_phi * npix
    blocks = n_e * (n_e + 1) // 2 if (kind == "continuum" and triangular) else n_e * n_e
    item = 4 if precision == "mixed" else 8
    response = npix * blocks * q * item
    dense64 = npix * n_e * n_e * q * 8
    data = n_t * n_e * q * 8 * 4  # counts, background, expectation, EM ratio (float64)
    return dict(response=response, dense_float64=dense64, data=data, total=response + data)


# --------------------------------------------------------------------------- worker


def worker(kind: str, nside: int, precision: str, triangular: bool, max_iter: int,
           rel_tol: float, out: Path | None) -> dict:
    t_import0 = time.perf_counter()
    import dc2_synth
    import jax
    import jax.numpy as jnp

    from probdeconv import forward as fm
    from probdeconv.algorithms import em

    t = dict(python_start_to_import_s=process_age_s() - (time.perf_counter() - t_import0),
             import_s=time.perf_counter() - t_import0)
    rdtype = "float32" if precision == "mixed" else "float64"
    if kind == "galactic":
        p = dc2_synth.galactic_problem(nside, rdtype)
    elif kind == "spacecraft":
        p = dc2_synth.spacecraft_problem(nside, rdtype)
    else:
        p = dc2_synth.continuum_problem(nside, rdtype, triangular=triangular)
    t["generate_s"] = p["generate_s"]
    t0 = time.perf_counter()
    ds = fm.make_dataset(p["counts"], p["response"], [p["bkg"]], ccm=p["ccm"],
                         n_model_pixels=p["n_model_pixels"], precision=precision,
                         share_response=True)
    n_e = ds.n_energies
    init_value, truth = p["init_value"], p["truth"]
    del p
    datasets = (ds,)
    opts = em.EMOptions(weighting=True, acceleration="MaxStep", optimize_bkg=True)
    params = em.make_params(datasets, opts, weighting_index=WEIGHTING_INDEX,
                            alpha_max=ALPHA_MAX, bkg_range=np.array([[0.0, 100.0]]))
    state = em.init(jnp.full((ds.n_model_pixels, n_e), init_value), jnp.ones(1), datasets,
                    params)
    jax.block_until_ready(state)
    t["make_dataset_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = em.build_step(opts).lower(state, datasets, params).compile()
    t["compile_s"] = time.perf_counter() - t0
    logliks, times, stopped = [], [], "iteration limit"
    t_iter0 = time.perf_counter()
    for k in range(max_iter):
        t0 = time.perf_counter()
        state, info = compiled(state, datasets, params)
        jax.block_until_ready((state, info))
        times.append(time.perf_counter() - t0)
        logliks.append(float(info.loglik.sum()))
        if k and abs(logliks[-1] - logliks[-2]) < rel_tol * abs(logliks[-1]):
            stopped = "relative change"
            break
    t["iterations_s"] = time.perf_counter() - t_iter0
    solution_s = process_age_s()
    image = np.asarray(state.model)
    if out is not None:
        np.save(out, image)
    truth = np.asarray(truth).reshape(image.shape)
    corr = float(np.corrcoef(image.ravel(), truth.ravel())[0, 1])
    return dict(kind=kind, nside=nside, precision=precision, triangular=triangular,
                response_bytes=int(ds.response.nbytes) if hasattr(ds.response, "nbytes")
                else None, per_iter_s=float(np.median(times[1:] if len(times) > 1 else times)),
                first_iter_s=times[0], iter_times_s=times, n_iter=len(times), stopped=stopped,
                time_to_solution_s=solution_s, seconds=t, loglik=logliks,
                flux_ratio=float(image.sum() / truth.sum()), corr_truth=corr,
                peak_rss_gb=peak_rss_gb(), jax=jax.__version__,
                device=str(jax.devices()[0].platform))


def _axis(group, name: str, edges, label: str, unit: str | None = None,
          nside: int | None = None) -> None:
    ds = group.create_dataset(name, data=np.asarray(edges), track_times=False)
    if nside is None:
        ds.attrs["__class__"] = ("histpy.axis", "Axis")
    else:
        ds.attrs["__class__"] = ("histpy.healpix_axis", "HealpixAxis")
        ds.attrs["nside"] = np.int64(nside)
        ds.attrs["scheme"] = "RING"
        ds.attrs["coordsys"] = "galactic"
    ds.attrs["label"] = label
    ds.attrs["scale"] = "linear"
    if unit is not None:
        ds.attrs["unit"] = unit


def worker_write(nside: int, directory: Path, max_iter: int) -> dict:
    """Write the galactic problem for cosipy (histpy HDF5 layout, dense contents)."""
    import dc2_synth
    import h5py

    p = dc2_synth.galactic_problem(nside, "float64")
    npix, n_phi = 12 * nside**2, N_PHI["galactic"]
    directory.mkdir(parents=True, exist_ok=True)

    def data_axes(g):
        _axis(g, "0", [509.0, 513.0], "Em", unit="keV")
        _axis(g, "1", np.linspace(0.0, 180.0, n_phi + 1), "Phi", unit="deg")
        _axis(g, "2", np.arange(npix + 1), "PsiChi", nside=nside)

    for name, arr in (("event.h5", p["counts"]), ("bkg.h5", p["bkg"])):  # [Em, Phi, PsiChi]
        with h5py.File(directory / name, "w") as f:
            g = f.create_group("hist")
            g.attrs["format"] = "dense"
            data_axes(g.create_group("axes"))
            g.create_dataset("contents", data=arr)
    with h5py.File(directory / "response.h5", "w") as f:
        g = f.create_group("hist")
        g.attrs["format"] = "dense"
        g.attrs["unit"] = "cm2 s"
        a = g.create_group("axes")
        _axis(a, "0", np.arange(npix + 1), "NuLambda", nside=nside)
        _axis(a, "1", [509.0, 513.0], "Ei", unit="keV")
        _axis(a, "2", [509.0, 513.0], "Em", unit="keV")
        _axis(a, "3", np.linspace(0.0, 180.0, n_phi + 1), "Phi", unit="deg")
        _axis(a, "4", np.arange(npix + 1), "PsiChi", nside=nside)
        g.create_dataset("contents", data=p["response"])
    (directory / "parameters.yml").write_text(f"""\
model_definition:
  class: "AllSkyImage"
  property:
    coordinate: "galactic"
    nside: {nside}
    scheme: "ring"
    energy_edges:
      value: [509.0, 513.0]
      unit: "keV"
    unit: "cm-2 s-1 sr-1"
  initialization:
    algorithm: "flat"
    parameter:
      value: [{p["init_value"]!r}]
      unit: "cm-2 s-1 sr-1"
deconvolution:
  algorithm: "RLadvanced"
  parameter:
    iteration_max: {max_iter + 1}
    minimum_flux:
      value: 0.0
      unit: "cm-2 s-1 sr-1"
    acceleration:
      activate: true
      algorithm: "MaxStep"
      accel_factor_max: {ALPHA_MAX}
    response_weighting:
      activate: true
      index: {WEIGHTING_INDEX}
    smoothing:
      activate: false
    background_normalization_optimization:
      activate: true
      range: {{"bkg": [0.0, 100.0]}}
    stopping_criteria:
      statistics: "log-likelihood"
      threshold: 0.0
    save_results:
      activate: false
""")
    return dict(generate_s=p["generate_s"], peak_rss_gb=peak_rss_gb())


def worker_cosipy(directory: Path, max_iter: int, rel_tol: float) -> dict:
    """cosipy 0.4.3's RLadvanced on the written files, the same stopping rule."""
    import logging
    import warnings

    t_import0 = time.perf_counter()
    import cosipy
    from cosipy.image_deconvolution import DataIF_COSI_DC2, ImageDeconvolution
    from histpy import Histogram

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    np.seterr(invalid="ignore", divide="ignore")
    t = dict(python_start_to_import_s=process_age_s() - (time.perf_counter() - t_import0),
             import_s=time.perf_counter() - t_import0)
    t0 = time.perf_counter()
    data = DataIF_COSI_DC2.load(name="bench", event_binned_data=Histogram.open(
        directory / "event.h5"), dict_bkg_binned_data={"bkg": Histogram.open(
            directory / "bkg.h5")}, rsp=Histogram.open(directory / "response.h5"))
    imdec = ImageDeconvolution()
    imdec.set_dataset([data])
    imdec.read_parameterfile(directory / "parameters.yml")
    imdec.initialize()
    algo = imdec._deconvolution
    algo.initialization()
    t["load_s"] = time.perf_counter() - t0
    logliks, times, stopped = [], [], "iteration limit"
    t_iter0 = time.perf_counter()
    for k in range(max_iter):
        t0 = time.perf_counter()
        algo.iteration()
        times.append(time.perf_counter() - t0)
        logliks.append(float(np.sum(algo.results[-1]["log-likelihood"])))
        if k and abs(logliks[-1] - logliks[-2]) < rel_tol * abs(logliks[-1]):
            stopped = "relative change"
            break
    t["iterations_s"] = time.perf_counter() - t_iter0
    return dict(per_iter_s=float(np.median(times[1:] if len(times) > 1 else times)),
                first_iter_s=times[0], iter_times_s=times, n_iter=len(times), stopped=stopped,
                time_to_solution_s=process_age_s(), seconds=t, loglik=logliks,
                peak_rss_gb=peak_rss_gb(), cosipy=cosipy.__version__)


# --------------------------------------------------------------------------- driver


def _cpu_busy_s() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def mem_available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def run_case(args: list[str], python: str | None = None) -> dict | None:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if python is not None:  # cosipy's interpreter: not this repository's packages
        env.pop("PYTHONPATH")
    cmd = [python or sys.executable, os.path.abspath(__file__), *args]
    r0, b0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_busy_s(), time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    result = None
    for line in proc.stdout:
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
        elif line.strip():
            print("    | " + line.rstrip(), flush=True)
    if proc.wait() != 0:
        print(f"    case failed (exit status {proc.returncode})", flush=True)
        return None
    r1, b1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_busy_s(), time.monotonic()
    own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    result["foreign_cpu"] = max(0.0, (b1 - b0 - own) / (t1 - t0))
    result["load_avg"] = os.getloadavg()[0]
    return result


def report(r: dict) -> None:
    s = r["seconds"]
    print(f"  {r['kind']} NSIDE {r['nside']} {r['precision']}"
          f"{' triangular' if r['kind'] == 'continuum' and r['triangular'] else ''}: "
          f"{r['per_iter_s']:.3f} s/iteration (median; first {r['first_iter_s']:.3f} s), "
          f"{r['n_iter']} iterations ({r['stopped']}), time to solution "
          f"{r['time_to_solution_s']:.1f} s = import {s['import_s']:.1f} + generate "
          f"{s['generate_s']:.1f} + make_dataset/init {s['make_dataset_s']:.1f} + compile "
          f"{s['compile_s']:.1f} + iterations {s['iterations_s']:.1f} (+ interpreter "
          f"{s['python_start_to_import_s']:.1f}); peak RSS {r['peak_rss_gb']:.2f} GB; final "
          f"log L {r['loglik'][-1]:.6f}; flux/truth {r['flux_ratio']:.3f}, r {r['corr_truth']:.3f};"
          f" other processes kept {r['foreign_cpu']:.2f} cores busy", flush=True)


def run_cosipy(nside: int, args, tmp: Path, full: dict) -> dict | None:
    directory = tmp / f"cosipy_galactic{nside}"
    rest = ["--max-iter", str(args.max_iter), "--rel-tol", str(args.rel_tol)]
    if run_case(["--worker-write", str(nside), str(directory), *rest]) is None:
        return None
    c = run_case(["--worker-cosipy", str(directory), *rest], python=args.cosipy_python)
    if c is None:
        return None
    s = c["seconds"]
    c.update(kind="galactic", nside=nside, precision="cosipy")
    print(f"  cosipy {c['cosipy']} RLadvanced galactic NSIDE {nside}: {c['per_iter_s']:.3f} "
          f"s/iteration (median; first {c['first_iter_s']:.3f} s), {c['n_iter']} iterations "
          f"({c['stopped']}), time to solution {c['time_to_solution_s']:.1f} s = import "
          f"{s['import_s']:.1f} + load {s['load_s']:.1f} + iterations {s['iterations_s']:.1f}"
          f" (+ interpreter {s['python_start_to_import_s']:.1f}); peak RSS "
          f"{c['peak_rss_gb']:.2f} GB; final log L {c['loglik'][-1]:.6f}"
          + (f" (probdeconv float64: {full['loglik'][-1]:.6f})" if full else "")
          + f"; other processes kept {c['foreign_cpu']:.2f} cores busy", flush=True)
    for f in directory.iterdir():
        f.unlink()
    return c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=["galactic:8", "galactic:16",
                                                    "continuum:8", "spacecraft:16"],
                    metavar="KIND:NSIDE", help="galactic|spacecraft|continuum[-dense]:NSIDE")
    ap.add_argument("--precision", nargs="+", default=["full", "mixed"],
                    choices=["full", "mixed"])
    ap.add_argument("--max-iter", type=int, default=60, help="iteration limit (default 60)")
    ap.add_argument("--rel-tol", type=float, default=1e-6,
                    help="stop when |L_k - L_k-1| / |L_k| < this (default 1e-6)")
    ap.add_argument("--mem-limit", type=float, default=None, metavar="GB",
                    help="skip cases needing more (default: MemAvailable - 2 GB)")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    cosipy_default = "/tmp/cosipy-venv/bin/python"
    ap.add_argument("--cosipy-python", default=cosipy_default if Path(cosipy_default).exists()
                    else None, help="interpreter with cosipy 0.4.3 (default: the venv of "
                    "benchmarks/README.md when present)")
    ap.add_argument("--cosipy-max-nside", type=int, default=8,
                    help="run cosipy on galactic cases up to this NSIDE (default 8)")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS,
                    metavar=("KIND", "NSIDE", "PRECISION", "TRIANGULAR", "OUT"))
    ap.add_argument("--worker-write", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--worker-cosipy", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker_write is not None:
        res = worker_write(int(args.worker_write[0]), Path(args.worker_write[1]), args.max_iter)
        print(RESULT_TAG + json.dumps(res), flush=True)
        return 0
    if args.worker_cosipy is not None:
        res = worker_cosipy(args.worker_cosipy, args.max_iter, args.rel_tol)
        print(RESULT_TAG + json.dumps(res), flush=True)
        return 0
    if args.worker is not None:
        kind, nside, precision, tri, out = args.worker
        res = worker(kind, int(nside), precision, tri == "1", args.max_iter, args.rel_tol,
                     None if out == "-" else Path(out))
        print(RESULT_TAG + json.dumps(res), flush=True)
        return 0

    print(f"machine: {os.cpu_count()} CPUs, {mem_available_gb():.1f} GB available, load "
          f"{os.getloadavg()[0]:.2f}; stopping rule |dL|/|L| < {args.rel_tol:g}, at most "
          f"{args.max_iter} iterations", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_full_size_"))
    results, skipped = [], []
    for case in args.cases:
        kind, nside = case.split(":")
        nside = int(nside)
        triangular = not kind.endswith("-dense")
        kind = kind.removesuffix("-dense")
        full = {}
        for precision in args.precision:
            b = case_bytes(kind, nside, precision, triangular)
            limit = args.mem_limit if args.mem_limit is not None else mem_available_gb() - 2.0
            label = f"{kind}{'' if triangular else '-dense'} NSIDE {nside} {precision}"
            # generation holds the response once plus about two data-space copies
            need = b["total"] + (b["response"] if kind == "continuum" and precision == "full"
                                 and not triangular else 0)
            if need / 1e9 > limit:
                print(f"  {label}: not run, needs ~{need / 1e9:.1f} GB (response "
                      f"{b['response'] / 1e9:.2f} GB, data {b['data'] / 1e9:.2f} GB) > "
                      f"{limit:.1f} GB available", flush=True)
                skipped.append(dict(case=label, **b))
                continue
            out = tmp / f"{kind}{nside}{precision}{int(triangular)}.npy"
            r = run_case(["--worker", kind, str(nside), precision, "1" if triangular else "0",
                          str(out), "--max-iter", str(args.max_iter),
                          "--rel-tol", str(args.rel_tol)])
            if r is None:
                continue
            r.update(bytes=b)
            report(r)
            if precision == "full":
                full = dict(image=np.load(out), loglik=r["loglik"])
            elif full:
                img = np.load(out)
                n = min(len(full["loglik"]), len(r["loglik"]))
                dl = [abs(a - c) / abs(c) for a, c in zip(r["loglik"][:n], full["loglik"][:n])]
                r["vs_float64"] = dict(
                    max_rel_loglik_diff=max(dl), iterations_compared=n,
                    max_rel_image_diff=float(np.max(np.abs(img - full["image"]))
                                             / np.max(full["image"])),
                    same_iteration_count=len(full["loglik"]) == len(r["loglik"]))
                print(f"    mixed vs float64: max relative log L difference "
                      f"{max(dl):.2e} over {n} iterations, final image max |diff| / max "
                      f"{r['vs_float64']['max_rel_image_diff']:.2e}", flush=True)
            results.append(r)
        if kind == "galactic" and args.cosipy_python and nside <= args.cosipy_max_nside:
            c = run_cosipy(nside, args, tmp, full)
            if c is not None:
                results.append(c)
    for nside in (16, 32):
        for prec in ("full", "mixed"):
            b = case_bytes("continuum", nside, prec)
            skipped.append(dict(case=f"continuum NSIDE {nside} {prec} (computed only)", **b))
    if args.json is not None:
        args.json.write_text(json.dumps(dict(results=results, sizes=skipped), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
