"""Calibration of NUTS credible intervals on skies drawn from the prior (NSIDE 2).

One simulated instrument (spacecraft-frame response, survey CCM, background template;
probdeconv.simulate at NSIDE 2) is shared by every sky.  For each of ``--skies`` skies:

1. draw the true flux of every pixel from the prior ``Gamma(k, θ)`` (``θ`` chosen so a pixel
   gives about ``--counts`` sky counts on average), background normalisation 1 (fixed);
2. draw Poisson counts from the forward model;
3. run NUTS on the model with the same gamma prior;
4. record whether each true pixel flux lies in the 68 % and 95 % equal-tailed intervals,
   and its posterior rank (fraction of draws below the truth: uniform when calibrated).

When the sampler and model are right, the pooled coverages equal 0.68 and 0.95 within the
binomial error ``√(p (1 − p) / N)`` (``N`` = skies × pixels), and the ranks are uniform
(Kolmogorov-Smirnov p-value).  ``--workers`` runs skies in parallel processes.

Usage::

    python benchmarks/bench_calibration.py --skies 20 --warmup 300 --samples 500
    python benchmarks/bench_calibration.py --skies 32 --workers 16 --json calib.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

SIM = dict(sky="points", nside=2, seed=0, phi_bins=4, scatt_nside=1, psichi_oversampling=1,
           duration=5 * 86400.0)


def _instrument():
    import probdeconv  # noqa: F401  (x64)
    from probdeconv import forward as fm
    from probdeconv.simulate import simulate

    ds = simulate(**SIM).forward_dataset()
    return ds, np.asarray(fm.exposure(ds))


def _one_sky(i: int, args: dict) -> dict:
    import jax.numpy as jnp

    import probdeconv
    from probdeconv import forward as fm
    from probdeconv.inference import Problem

    ds, s = _instrument()
    k = args["k"]
    theta = args["counts"] / (k * float(s.mean()))
    rng = np.random.default_rng(1000 + i)
    truth = rng.gamma(k, theta, size=s.shape)
    expected = np.asarray(fm.expected_counts(ds, jnp.asarray(truth), jnp.asarray([1.0])))
    counts = rng.poisson(expected).astype(float)
    data = fm.with_counts(ds, counts)
    problem = Problem.from_datasets([data], image_prior="gamma", gamma=(k, theta), n_bkg=1,
                                    bkg_free=False, bkg_norm=[1.0])
    t0 = time.perf_counter()
    post = probdeconv.sample(problem, "nuts", num_warmup=args["warmup"],
                             num_samples=args["samples"], chains=args["chains"], seed=i,
                             progress_bar=False)
    seconds = time.perf_counter() - t0
    q = post.quantiles((0.025, 0.16, 0.84, 0.975))
    draws = post.store.read("image").reshape(-1, *truth.shape)
    rank = (draws < truth).mean(axis=0)
    s = post.diagnostics().summary()
    return {"sky": i, "in68": int(np.sum((q[1] <= truth) & (truth <= q[2]))),
            "in95": int(np.sum((q[0] <= truth) & (truth <= q[3]))), "n": int(truth.size),
            "ranks": rank.ravel().tolist(), "max_rhat": s["max_rhat"],
            "min_ess_bulk": s["min_ess_bulk"], "divergences": s["divergences"],
            "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skies", type=int, default=20)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--k", type=float, default=2.0, help="gamma prior shape")
    p.add_argument("--counts", type=float, default=50.0, help="mean sky counts per pixel")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    opts = vars(args)
    t0 = time.perf_counter()
    if args.workers > 1:
        with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as ex:
            rows = list(ex.map(_one_sky, range(args.skies), [opts] * args.skies))
    else:
        rows = [_one_sky(i, opts) for i in range(args.skies)]
    from scipy.stats import kstest

    n = sum(r["n"] for r in rows)
    out = {"settings": {**opts, "simulation": SIM}, "pixels": n,
           "seconds": round(time.perf_counter() - t0, 1)}
    for level, key in ((0.68, "in68"), (0.95, "in95")):
        cov = sum(r[key] for r in rows) / n
        err = float(np.sqrt(level * (1 - level) / n))
        per_sky = np.array([r[key] / r["n"] for r in rows])
        out[key] = {"coverage": cov, "nominal": level, "binomial_error": err,
                    "z": (cov - level) / err, "per_sky_std_error": float(
                        per_sky.std(ddof=1) / np.sqrt(len(rows)))}
    ranks = np.concatenate([r["ranks"] for r in rows])
    out["rank_ks_pvalue"] = float(kstest(ranks, "uniform").pvalue)
    out["max_rhat"] = max(r["max_rhat"] for r in rows)
    out["min_ess_bulk"] = min(r["min_ess_bulk"] for r in rows)
    out["divergences"] = sum(r["divergences"] for r in rows)
    out["seconds_per_sky"] = float(np.mean([r["seconds"] for r in rows]))
    print(json.dumps({k: v for k, v in out.items() if k != "settings"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({**out, "skies": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
