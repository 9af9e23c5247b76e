"""Posterior sampling on simulated skies: NUTS convergence and ESS per second; SVI, Laplace.

For each NSIDE, simulate a spacecraft-frame data set (probdeconv.simulate, ``bulge511`` by
default), build the problem (flat image prior, free background) and run

- NUTS (2 chains by default): reports max R-hat, min bulk / tail ESS over all pixels,
  divergences, and ``min bulk ESS / sampling seconds`` (warm-up excluded; compile included
  in the warm-up figure);
- SVI (AutoNormal) and Laplace (log space): independent draws, so ESS = number of draws;
  reports ESS per second of the fit (+ draws).

Usage::

    python benchmarks/bench_sampling.py --nside 4 8 --json benchmarks/sampling.json
    python benchmarks/bench_sampling.py --nside 4 --warmup 500 --samples 1000 --methods nuts

Prints one table row per (NSIDE, method) and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import jax
import numpy as np

import probdeconv
from probdeconv.inference.start import prepare
from probdeconv.simulate import simulate


def build(nside: int, phi_bins: int, seed: int, sky: str):
    sim = simulate(sky=sky, nside=nside, seed=seed, phi_bins=phi_bins, scatt_nside=1,
                   psichi_oversampling=1)
    data = sim.dataif()
    problem = probdeconv.problem_from_dataif([data], bkg_free=True,
                                             bkg_range={"bkg": [0.01, 10.0]})
    return sim, problem


def run(nside: int, args) -> list[dict]:
    rows = []
    sim, problem = build(nside, args.phi_bins, args.seed, args.sky)
    t0 = time.perf_counter()
    start = prepare(problem)
    t_start = time.perf_counter() - t0
    base = {"nside": nside, "free_params": problem.n_params,
            "data_bins": int(np.prod(problem.datasets[0].counts.shape)),
            "counts": float(np.sum(np.asarray(problem.datasets[0].counts))),
            "start_s": round(t_start, 2)}
    if "nuts" in args.methods:
        post = probdeconv.sample(problem, "nuts", num_warmup=args.warmup,
                                 num_samples=args.samples, chains=args.chains, seed=args.seed,
                                 dense_mass=args.dense, target_accept=args.target_accept,
                                 progress_bar=False, start=start)
        s = post.diagnostics().summary()
        sampling = post.timings["sampling"]  # warm-up + draws (+ compilation)
        # NumPyro runs warm-up and draws in one call: split the time by iteration counts
        draw_s = sampling * args.samples / (args.samples + args.warmup)
        rows.append({**base, "method": "nuts", "chains": args.chains, "warmup": args.warmup,
                     "samples": args.samples, "max_rhat": s["max_rhat"],
                     "min_ess_bulk": s["min_ess_bulk"], "min_ess_tail": s["min_ess_tail"],
                     "median_ess_bulk": s["ess_bulk"]["q50"], "divergences": s["divergences"],
                     "mean_n_steps": float(np.mean(post.store.read("stats.n_steps"))),
                     "converged": s["converged"], "seconds_total": round(sampling, 2),
                     "seconds_draws_est": round(draw_s, 2),
                     "min_ess_bulk_per_s": round(s["min_ess_bulk"] / draw_s, 2),
                     "min_ess_bulk_per_s_incl_warmup": round(s["min_ess_bulk"] / sampling, 2)})
    if "svi" in args.methods:
        post = probdeconv.sample(problem, "svi", num_steps=args.svi_steps, num_samples=1000,
                                 seed=args.seed, progress_bar=False, start=start)
        t = post.timings["fit"] + post.timings["draws"]
        rows.append({**base, "method": "svi", "draws": 1000, "seconds_total": round(t, 2),
                     "min_ess_bulk_per_s": round(1000 / t, 1)})
    if "laplace" in args.methods:
        post = probdeconv.sample(problem, "laplace", num_samples=1000, seed=args.seed)
        t = post.timings["total"]
        rows.append({**base, "method": "laplace", "draws": 1000, "seconds_total": round(t, 2),
                     "min_ess_bulk_per_s": round(1000 / t, 1)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nside", type=int, nargs="+", default=[4])
    p.add_argument("--methods", nargs="+", default=["nuts", "svi", "laplace"])
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--dense", action="store_true", help="dense mass matrix")
    p.add_argument("--target-accept", type=float, default=0.8)
    p.add_argument("--svi-steps", type=int, default=5000)
    p.add_argument("--phi-bins", type=int, default=10)
    p.add_argument("--sky", default="bulge511")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for nside in args.nside:
        rows += run(nside, args)
        for r in rows[-len(args.methods):]:
            print(json.dumps(r), flush=True)
    meta = {"device": str(jax.devices()[0]), "platform": platform.platform(),
            "probdeconv": probdeconv.__version__}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("device:", meta["device"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
