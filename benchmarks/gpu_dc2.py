"""DC2 NSIDE-16 Richardson-Lucy iteration on one GPU, both frames, float64 and mixed precision,
against the goals of issue 11: galactic frame ≤ 5 ms, spacecraft frame ≤ 50 ms per iteration.

One prepared run (about 3–5 minutes on an H200, most of it generating the synthetic
problems and moving the 4.5 GB responses): for each frame the problem of ``dc2_synth.py``
is generated once (float64), then for ``full`` and ``mixed`` precision a dataset is built,
the accelerated RL step (``MaxStep``, ``alpha_max`` 10, response weighting 0.5, background
fitted) compiled, run ``--warmup`` times and timed over ``--iterations`` iterations two ways:
each iteration waited for (latency, the median is the figure against the goal) and all of
them queued then waited for once (throughput).  Mixed precision is compared with float64
after the same iterations (relative log-likelihood and image differences).  Results go to
``--json`` (default ``$OUT/gpu_dc2.json`` when ``$OUT`` is set, else ``gpu_dc2.json``).

The GPU image has JAX, numpy and scipy but not astropy, histpy or healpy; when
``import probdeconv`` fails for that reason, only its array core (``probdeconv.forward``,
``probdeconv.algorithms``, which need JAX and numpy alone) is loaded.

Examples::

    # on the GPU machine, from the repository root (the device tool's run):
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_dc2.py --json $OUT/gpu_dc2.json
    # its test on a CPU (small sizes; seconds):
    PYTHONPATH=. .venv/bin/python benchmarks/gpu_dc2.py --nside 4 --n-scatt 20 --iterations 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

try:
    import probdeconv  # noqa: F401  (switches on float64)
    CORE_ONLY = False
except ImportError:  # no astropy/histpy here: load the array core without the package shell
    _spec = importlib.util.spec_from_loader("probdeconv", loader=None, is_package=True)
    _pkg = importlib.util.module_from_spec(_spec)
    _pkg.__path__ = [str(REPO / "probdeconv")]
    sys.modules["probdeconv"] = _pkg
    jax.config.update("jax_enable_x64", True)
    CORE_ONLY = True

import dc2_synth  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from probdeconv import forward as fm  # noqa: E402
from probdeconv.algorithms import em  # noqa: E402

GOALS_MS = {"galactic": 5.0, "spacecraft": 50.0}


def _median_ms(times: list[float]) -> float:
    return 1e3 * float(np.median(times))


def time_case(problem: dict, precision: str, warmup: int, iterations: int) -> dict:
    """Build the dataset, compile the step, time it; return figures and the final state."""
    t0 = time.perf_counter()
    ds = fm.make_dataset(problem["counts"], problem["response"], [problem["bkg"]],
                         ccm=problem["ccm"], n_model_pixels=problem["n_model_pixels"],
                         precision=precision)
    datasets = (ds,)
    opts = em.EMOptions(weighting=True, acceleration="MaxStep", optimize_bkg=True)
    params = em.make_params(datasets, opts, weighting_index=0.5, alpha_max=10.0,
                            bkg_range=np.array([[0.0, 100.0]]))
    state0 = em.init(jnp.full((ds.n_model_pixels, 1), problem["init_value"]), jnp.ones(1),
                     datasets, params)
    jax.block_until_ready(state0)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    step = em.build_step(opts).lower(state0, datasets, params).compile()
    compile_s = time.perf_counter() - t0
    state = state0
    for _ in range(warmup):
        state, info = step(state, datasets, params)
    jax.block_until_ready(state)
    latency = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        state, info = step(state, datasets, params)
        jax.block_until_ready((state, info))
        latency.append(time.perf_counter() - t0)
    logliks = float(info.loglik.sum())
    image = np.asarray(state.model)
    t0 = time.perf_counter()
    s = state
    for _ in range(iterations):  # queued: no wait between iterations
        s, info = step(s, datasets, params)
    jax.block_until_ready(s)
    throughput_ms = 1e3 * (time.perf_counter() - t0) / iterations
    out = dict(precision=precision, setup_s=setup_s, compile_s=compile_s,
               per_iter_ms=_median_ms(latency), min_iter_ms=1e3 * min(latency),
               queued_per_iter_ms=throughput_ms, iter_ms=[1e3 * t for t in latency],
               loglik=logliks, iterations_done=warmup + iterations,
               response_dtype=str(ds.response.dtype),
               response_gb=ds.response.size * ds.response.dtype.itemsize / 1e9)
    del ds, datasets, params, state, s, state0
    return out, image


def run(nside: int, n_scatt: int, warmup: int, iterations: int, frames: list[str]) -> dict:
    dev = jax.devices()[0]
    result = dict(device=f"{dev.platform}: {getattr(dev, 'device_kind', '')}",
                  jax=jax.__version__, python=platform.python_version(), nside=nside,
                  n_scatt=n_scatt, warmup=warmup, iterations=iterations,
                  core_only_import=CORE_ONLY, goals_ms=GOALS_MS, cases={})
    for frame in frames:
        t0 = time.perf_counter()
        if frame == "galactic":
            problem = dc2_synth.galactic_problem(nside, "float64")
        else:
            problem = dc2_synth.spacecraft_problem(nside, "float64", n_scatt=n_scatt)
        gen_s = time.perf_counter() - t0
        print(f"{frame}: generated NSIDE {nside} in {gen_s:.1f} s", flush=True)
        images = {}
        for precision in ("full", "mixed"):
            r, images[precision] = time_case(problem, precision, warmup, iterations)
            r["generate_s"] = gen_s
            r["goal_ms"] = GOALS_MS[frame]
            r["meets_goal"] = bool(r["per_iter_ms"] <= GOALS_MS[frame])
            result["cases"][f"{frame}/{precision}"] = r
            print(f"  {frame} {precision}: {r['per_iter_ms']:.2f} ms per iteration (median; "
                  f"queued {r['queued_per_iter_ms']:.2f} ms; goal {GOALS_MS[frame]:.0f} ms: "
                  f"{'met' if r['meets_goal'] else 'NOT met'}); compile {r['compile_s']:.1f} s,"
                  f" setup {r['setup_s']:.1f} s", flush=True)
        full, mixed = result["cases"][f"{frame}/full"], result["cases"][f"{frame}/mixed"]
        mixed["vs_float64"] = dict(
            rel_loglik_diff=abs(mixed["loglik"] - full["loglik"]) / abs(full["loglik"]),
            max_rel_image_diff=float(np.max(np.abs(images["mixed"] - images["full"]))
                                     / np.max(images["full"])),
            speedup=full["per_iter_ms"] / mixed["per_iter_ms"])
        print(f"  mixed vs float64: log L {mixed['vs_float64']['rel_loglik_diff']:.2e} "
              f"relative, image {mixed['vs_float64']['max_rel_image_diff']:.2e} of its max, "
              f"{mixed['vs_float64']['speedup']:.2f}x faster", flush=True)
        del problem
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nside", type=int, default=16, help="NSIDE (default 16, DC2)")
    ap.add_argument("--n-scatt", type=int, default=dc2_synth.N_SCATT,
                    help="spacecraft-frame ScAtt bins (default 278)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--frames", nargs="+", default=["galactic", "spacecraft"],
                    choices=["galactic", "spacecraft"])
    default_json = Path(os.environ["OUT"]) / "gpu_dc2.json" if os.environ.get("OUT") \
        else Path("gpu_dc2.json")
    ap.add_argument("--json", type=Path, default=default_json)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args.nside, args.n_scatt, args.warmup, args.iterations, args.frames)
    result["total_s"] = time.perf_counter() - t0
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json} ({result['total_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
