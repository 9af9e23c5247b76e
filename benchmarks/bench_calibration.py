"""Calibration of credible intervals on skies drawn from the prior (NSIDE 2 or 4).

One simulated instrument (spacecraft-frame response, survey CCM, background template;
probdeconv.simulate at NSIDE 2) is shared by every sky.  For each of ``--skies`` skies:

1. draw the true flux of every pixel from the prior ``Gamma(k, θ)`` (``θ`` chosen so a pixel
   gives about ``--counts`` sky counts on average), background normalisation 1 (fixed);
2. draw Poisson counts from the forward model;
3. run each method of ``--methods`` on the model with the same gamma prior: ``nuts``,
   ``laplace_dense``, ``laplace_lowrank`` (log-space Laplace, gamma marginals, fast start:
   SQUAREM EM + Newton-CG; low rank from rank ``--rank``), ``bootstrap`` (RL, 50
   iterations);
4. record whether each true pixel flux lies in the 68 % and 95 % equal-tailed intervals,
   and its posterior rank (fraction of draws below the truth: uniform when calibrated);
   with ``nuts`` among the methods (the long-NUTS reference), also each other method's
   posterior std over NUTS's std for the informative pixels (data-only log-space
   precision ``λ² F_jj ≥ 4``, :func:`probdeconv.inference.lowrank.informative`).

When the sampler and model are right, the pooled coverages equal 0.68 and 0.95 within the
binomial error ``√(p (1 − p) / N)`` (``N`` = skies × pixels), and the ranks are uniform
(Kolmogorov-Smirnov p-value).  ``--workers`` runs skies in parallel processes.
``--record`` merges the per-method coverage (and σ ratios) into
``probdeconv/report/calibration.json``, the table each posterior report shows.

Usage::

    python benchmarks/bench_calibration.py --skies 20 --warmup 300 --samples 500
    python benchmarks/bench_calibration.py --skies 32 --workers 16 --json calib.json
    python benchmarks/bench_calibration.py --nside 4 --skies 4 --samples 2000 \
        --methods nuts,laplace_dense,laplace_lowrank --rank 8 --record
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


METHODS = ("nuts", "laplace_dense", "laplace_lowrank", "bootstrap")
RECORD = Path(__file__).resolve().parents[1] / "probdeconv" / "report" / "calibration.json"


def _instrument(nside: int = 2):
    import probdeconv  # noqa: F401  (x64)
    from probdeconv import forward as fm
    from probdeconv.simulate import simulate

    ds = simulate(**{**SIM, "nside": nside}).forward_dataset()
    return ds, np.asarray(fm.exposure(ds))


def _one_sky(i: int, args: dict) -> dict:
    import jax.numpy as jnp

    import probdeconv
    from probdeconv import forward as fm
    from probdeconv.inference import Problem

    ds, s = _instrument(args["nside"])
    k = args["k"]
    theta = args["counts"] / (k * float(s.mean()))
    rng = np.random.default_rng(1000 + i)
    truth = rng.gamma(k, theta, size=s.shape)
    expected = np.asarray(fm.expected_counts(ds, jnp.asarray(truth), jnp.asarray([1.0])))
    counts = rng.poisson(expected).astype(float)
    data = fm.with_counts(ds, counts)
    problem = Problem.from_datasets([data], image_prior="gamma", gamma=(k, theta), n_bkg=1,
                                    bkg_free=False, bkg_norm=[1.0])
    out, informative, std = {"sky": i}, None, {}
    for method in args["methods"]:
        t0 = time.perf_counter()
        if method == "nuts":
            post = probdeconv.sample(problem, "nuts", num_warmup=args["warmup"],
                                     num_samples=args["samples"], chains=args["chains"],
                                     seed=i, progress_bar=False)
        elif method.startswith("laplace"):
            post = probdeconv.sample(problem, "laplace", curvature=method.split("_")[1],
                                     rank=args["rank"], num_samples=4000, seed=i,
                                     init="em", mode_method="newton", progress_bar=False)
            if informative is None:
                informative = _informative(problem, post.start)
        else:
            post = probdeconv.sample(problem, "bootstrap", num_samples=100, iterations=50,
                                     seed=i, progress_bar=False)
        seconds = time.perf_counter() - t0
        q = post.quantiles((0.025, 0.16, 0.84, 0.975))
        draws = post.store.read("image").reshape(-1, *truth.shape)
        rank = (draws < truth).mean(axis=0)
        std[method] = np.asarray(post.std)
        row = {"in68": int(np.sum((q[1] <= truth) & (truth <= q[2]))),
               "in95": int(np.sum((q[0] <= truth) & (truth <= q[3]))), "n": int(truth.size),
               "ranks": rank.ravel().tolist(), "seconds": round(seconds, 1)}
        if method == "nuts":
            s = post.diagnostics().summary()
            row.update(max_rhat=s["max_rhat"], min_ess_bulk=s["min_ess_bulk"],
                       divergences=s["divergences"])
        if method.startswith("laplace"):
            row.update(rank=post.settings.get("rank"))
        out[method] = row
    if "nuts" in std and informative is not None:
        for method in std:
            if method != "nuts":
                ratio = std[method].ravel()[informative] / std["nuts"].ravel()[informative]
                out[method]["sigma_ratio"] = ratio.tolist()
    return out


def _informative(problem, start) -> np.ndarray:
    """Informative free pixels as a mask over the image's flat entries."""
    from probdeconv.inference.fisher import data_diagonal_theta
    from probdeconv.inference.latent import theta_of
    from probdeconv.inference.lowrank import informative

    theta = theta_of(problem, np.asarray(start.latent.center))
    info = informative(problem, theta, data_diagonal_theta(problem, theta))[:problem.n_free]
    return problem.free_index[info]


def _summary(rows: list[dict], method: str) -> dict:
    from scipy.stats import kstest

    rows = [r[method] for r in rows]
    n = sum(r["n"] for r in rows)
    out = {"skies": len(rows), "pixels": n}
    for level, key in ((0.68, "in68"), (0.95, "in95")):
        cov = sum(r[key] for r in rows) / n
        err = float(np.sqrt(level * (1 - level) / n))
        per_sky = np.array([r[key] / r["n"] for r in rows])
        out[key] = {"coverage": cov, "nominal": level, "binomial_error": err,
                    "z": (cov - level) / err, "per_sky_std_error": float(
                        per_sky.std(ddof=1) / np.sqrt(len(rows))) if len(rows) > 1 else None}
    ranks = np.concatenate([r["ranks"] for r in rows])
    out["rank_ks_pvalue"] = float(kstest(ranks, "uniform").pvalue)
    if method == "nuts":
        out["max_rhat"] = max(r["max_rhat"] for r in rows)
        out["min_ess_bulk"] = min(r["min_ess_bulk"] for r in rows)
        out["divergences"] = sum(r["divergences"] for r in rows)
    if all("sigma_ratio" in r for r in rows):
        ratio = np.concatenate([r["sigma_ratio"] for r in rows])
        if ratio.size:
            q05, q50, q95 = np.percentile(ratio, [5, 50, 95])
            out["sigma_ratio"] = {"pixels": int(ratio.size), "q05": q05, "q50": q50,
                                  "q95": q95, "within_10pc": float(np.mean(
                                      np.abs(ratio - 1) <= 0.1))}
    if method.startswith("laplace"):
        out["ranks_used"] = sorted({r["rank"] for r in rows})
    out["seconds_per_sky"] = float(np.mean([r["seconds"] for r in rows]))
    return out


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
    p.add_argument("--nside", type=int, default=2, choices=(2, 4))
    p.add_argument("--methods", default="nuts",
                   help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--rank", type=int, default=8, help="first rank of laplace_lowrank")
    p.add_argument("--record", action="store_true",
                   help=f"merge the per-method coverage into {RECORD}")
    p.add_argument("--record-skip", default="",
                   help="comma-separated methods not to record (e.g. nuts run short, only as "
                        "the σ reference, keeping a longer NUTS calibration on record)")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    bad = sorted(set(args.methods) - set(METHODS))
    if bad:
        p.error(f"unknown method(s) {bad}; valid: {', '.join(METHODS)}")
    opts = vars(args)
    t0 = time.perf_counter()
    if args.workers > 1:
        with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as ex:
            rows = list(ex.map(_one_sky, range(args.skies), [opts] * args.skies))
    else:
        rows = [_one_sky(i, opts) for i in range(args.skies)]
    out = {"settings": {**opts, "simulation": {**SIM, "nside": args.nside}},
           "seconds": round(time.perf_counter() - t0, 1),
           "methods": {m: _summary(rows, m) for m in args.methods}}
    print(json.dumps(out["methods"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({**out, "skies": rows}, indent=1))
    if args.record:
        _record(out, args)
    return 0


def _record(out: dict, args) -> None:
    """Merge the per-method summaries into the report's calibration file (atomically)."""
    from probdeconv.io.atomic import atomic_target

    try:
        current = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        current = {"methods": {}}
    skip = set(args.record_skip.split(","))
    for method, summ in out["methods"].items():
        if method in skip:
            continue
        key = method
        current["methods"][key] = {**summ, "nside": args.nside, "k": args.k,
                                   "counts_per_pixel": args.counts,
                                   "recorded": time.strftime("%Y-%m-%d")}
    current["written_by"] = "benchmarks/bench_calibration.py --record"
    with atomic_target(RECORD, True, "calibration record") as tmp:
        tmp.write_text(json.dumps(current, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
