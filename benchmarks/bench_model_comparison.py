"""PSIS-LOO of approximate posteriors against NUTS on one small simulation.

The simulation of ``tests/test_sampling.py`` (``points`` sky, NSIDE 1, 4 Phi bins, ScAtt
NSIDE 1: 12 pixels + 1 background, 1152 data bins), with a flat image prior and a free
background, sampled by

- ``laplace gamma``: log-space Laplace with gamma marginals (1000 draws),
- ``laplace lognormal``: the same with log-normal marginals (1000 draws),
- ``svi lowrank``: low-rank Gaussian guide, 3000 Adam steps (1000 draws),
- ``nuts``: 2 chains x (300 warm-up + 500 draws),

each with its PSIS-LOO (:func:`probdeconv.results.compare.loo`; SVI and Laplace corrected by
their importance weights): ``elpd_loo``, its standard error, the Pareto k of the points
(max, how many above ArviZ's ``good_k``) and, for the approximations, the Pareto k of the
importance weights themselves (above 0.7: the approximation is too far from the posterior
for the correction).  Then :func:`probdeconv.compare` of all four.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_model_comparison.py [--json FILE]

Figures are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import probdeconv as pd
from probdeconv.io.atomic import atomic_target
from probdeconv.results.compare import loo
from probdeconv.shell.problem import problem_from_parameters
from probdeconv.simulate import simulate

TINY = dict(sky="points", nside=1, seed=1, phi_bins=4, duration=86400.0, n_samples=2000,
            scatt_nside=1, psichi_oversampling=1)
PRIOR = {"image": {"kind": "gamma", "k": 1.0, "theta": float("inf")},
         "background": {"free": True, "range": {"bkg": [0.01, 10.0]}}}
RUNS = {
    "laplace lognormal": dict(method="laplace", marginals="lognormal", num_draws=1000),
    "laplace gamma": dict(method="laplace", num_draws=1000),
    "svi lowrank": dict(method="svi", guide="lowrank", num_steps=3000, num_draws=1000,
                        progress_bar=False),
    "nuts": dict(method="nuts", num_warmup=300, num_samples=500, chains=2,
                 progress_bar=False),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()
    problem = problem_from_parameters([simulate(**TINY).dataif()], PRIOR)
    posts, rows = {}, {}
    for name, options in RUNS.items():
        t0 = time.perf_counter()
        posts[name] = pd.sample(problem, **options)
        m = loo(posts[name], name)
        rows[name] = {"seconds": round(time.perf_counter() - t0, 1), "elpd_loo": m.elpd.elpd,
                      "se": m.elpd.se, "pareto_k_max": float(m.pareto_k.max()),
                      "n_k_above_good": m.n_bad_k, "good_k": m.good_k,
                      "weights_pareto_k": m.approx_k}
        print(f"{name}: {m.diagnostic_line()} elpd_loo {m.elpd.elpd:.1f} ± {m.elpd.se:.1f} "
              f"({rows[name]['seconds']} s)", flush=True)
    table = pd.compare(posts).table
    print(table.to_string())
    if args.json:
        with atomic_target(args.json, True, "benchmark figures") as tmp:
            tmp.write_text(json.dumps({"runs": rows, "compare": json.loads(
                table.to_json(orient="index"))}, indent=1))


if __name__ == "__main__":
    main()
