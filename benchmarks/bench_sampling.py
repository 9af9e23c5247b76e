"""Posterior sampling on simulated skies: NUTS convergence and ESS per second; SVI, Laplace.

For each NSIDE, simulate a spacecraft-frame data set (probdeconv.simulate, ``bulge511`` by
default), build the problem (flat image prior, free background) and run

- NUTS (2 chains by default): reports max R-hat, min bulk / tail ESS over all pixels,
  divergences, and ``min bulk ESS / sampling seconds`` (warm-up excluded; compile included
  in the warm-up figure);
- SVI (AutoNormal) and Laplace (log space): independent draws, so ESS = number of draws;
  reports draws per second of the whole run (``timings["total"]``: start, set-up,
  compilation, fit and draws) and, separately, of the method's own part (start excluded:
  compilation, fit and draws);
- bootstrap (RL, ``--boot-draws`` replicates of ``--boot-iterations`` iterations).

The start (MAP, log-space mode, whitening; ``start_s``) is prepared once and shared by
NUTS and SVI; the Laplace run prepares its own (it needs the dense precision at the mode).

Usage::

    python benchmarks/bench_sampling.py --nside 4 8 --json benchmarks/sampling.json
    python benchmarks/bench_sampling.py --nside 4 --warmup 500 --samples 1000 --methods nuts
    python benchmarks/bench_sampling.py --data sim/ --methods laplace svi  # a simulation dir

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
from probdeconv.simulate import load_simulation, simulate


def build(nside: int, phi_bins: int, seed: int, sky: str):
    sim = simulate(sky=sky, nside=nside, seed=seed, phi_bins=phi_bins, scatt_nside=1,
                   psichi_oversampling=1)
    data = sim.dataif()
    problem = probdeconv.problem_from_dataif([data], bkg_free=True,
                                             bkg_range={"bkg": [0.01, 10.0]})
    return sim, problem


def load(directory: str):
    sim = load_simulation(directory)
    problem = probdeconv.problem_from_dataif([sim.dataif()], bkg_free=True,
                                             bkg_range={"bkg": [0.01, 10.0]})
    return sim, problem


def run(nside: int | str, args) -> list[dict]:
    rows = []
    sim, problem = load(nside) if isinstance(nside, str) else build(
        nside, args.phi_bins, args.seed, args.sky)
    t0 = time.perf_counter()
    start = prepare(problem, init=args.init) if {"nuts", "svi"} & set(args.methods) else None
    t_start = time.perf_counter() - t0
    base = {"nside": nside, "free_params": problem.n_params,
            "data_bins": int(np.prod(problem.datasets[0].counts.shape)),
            "counts": float(np.sum(np.asarray(problem.datasets[0].counts))),
            "start_s": round(t_start, 2), "start_notes": start.notes if start else None}
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
        t = post.timings
        own = t["total"]  # the start was passed in: total = set-up, compile, fit, draws
        rows.append({**base, "method": "svi", "draws": 1000, "steps": args.svi_steps,
                     "timings": {k: round(v, 2) for k, v in t.items()},
                     "seconds_total": round(own, 2),
                     "draws_per_s": round(1000 / own, 1),
                     "draws_per_s_with_start": round(1000 / (own + t_start), 1)})
    if "laplace" in args.methods:
        post = probdeconv.sample(problem, "laplace", num_samples=1000, seed=args.seed,
                                 init=args.init)
        t = post.timings
        rows.append({**base, "method": "laplace", "draws": 1000,
                     "timings": {k: round(v, 2) for k, v in t.items()},
                     "seconds_total": round(t["total"], 2),
                     "draws_per_s_with_start": round(1000 / t["total"], 1)})
    if "bootstrap" in args.methods:
        post = probdeconv.sample(problem, "bootstrap", num_samples=args.boot_draws,
                                 iterations=args.boot_iterations, seed=args.seed,
                                 progress_bar=False)
        t = post.timings
        rows.append({**base, "method": "bootstrap", "draws": args.boot_draws,
                     "iterations": args.boot_iterations,
                     "timings": {k: round(v, 2) for k, v in t.items()},
                     "seconds_total": round(t["total"], 2),
                     "draws_per_s": round(args.boot_draws / t["total"], 2)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nside", type=int, nargs="+", default=[4])
    p.add_argument("--data", nargs="+", default=None,
                   help="simulation directories (probdeconv simulate) instead of --nside")
    p.add_argument("--init", default="map", help="start: map or rl")
    p.add_argument("--boot-draws", type=int, default=16)
    p.add_argument("--boot-iterations", type=int, default=50)
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
    for nside in args.data or args.nside:
        new = run(nside, args)
        rows += new
        for r in new:
            print(json.dumps(r, default=str), flush=True)
    meta = {"device": str(jax.devices()[0]), "platform": platform.platform(),
            "probdeconv": probdeconv.__version__}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1,
                                              default=str))
    print("device:", meta["device"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
