"""The fast start and the low-rank Laplace at NSIDE 8 (issue 14 parts 1, 2, 5).

Cases (``--case``):

- ``start``: the samplers' start before (``init="map"``: L-BFGS MAP, then the L-BFGS
  log-space mode) and after (``init="em"``: SQUAREM EM, then Newton-CG with the matrix-free
  Hessian), on one problem; seconds per phase and the log-density reached;
- ``laplace``: fast start, the low-rank Laplace (rank rule: doubling from 32 until the
  95th percentile of the relative change of the informative pixels' σ is < 1 %) and 1000
  draws, timed as a whole (``probdeconv.sample``);
- ``costs``: the unit costs (wall and process CPU seconds, after compilation) of one
  log-posterior gradient, one SQUAREM EM step and one Hessian-vector product in blocks of
  16, for extrapolating the phases on a machine too loaded to run them whole;
- ``dense``: at the fast start's mode, the low-rank σ (timed, with its rank history) and
  the dense Laplace σ (timed), and the distribution of their ratio over the informative
  pixels.

Problems: ``--data DIR`` (a ``probdeconv simulate`` directory, e.g. the README's
``probdeconv simulate --sky bulge511 --nside 8``, read from its files; gamma k = 1,
θ = ∞ image prior, free background in [0.01, 10]) or ``--dc2`` (the DC2-shape NSIDE-8
problem of bench_rl_spacecraft.py: 768 pixels, 278 ScAtt, 60 Phi; built in memory, free
background).

Usage::

    python benchmarks/bench_lowrank.py --data sim8/ --case start --case laplace --case dense
    python benchmarks/bench_lowrank.py --dc2 --case start --case laplace --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np


def _problem(args):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.dc2:
        from bench_sampler_costs import _dc2_dataset

        from probdeconv.forward.problem import Problem

        ds, _ = _dc2_dataset()
        return Problem.from_datasets([ds], bkg_free=True, bkg_range=[[0.01, 100.0]])
    from bench_sampler_costs import _problem_from_sim

    return _problem_from_sim(args.data)


def case_start(problem) -> dict:
    from probdeconv.inference.start import prepare

    out = {}
    for name, kw in (("before_lbfgs", dict(init="map")),
                     ("after_em_newton", dict(init="em", mode_method="newton"))):
        t0 = time.perf_counter()
        st = prepare(problem, fisher="observed", precondition="none", **kw)
        out[name] = {"seconds": round(time.perf_counter() - t0, 1),
                     "phases": {k: round(v, 1) for k, v in st.seconds.items()},
                     "log_density": st.log_density, "notes": st.notes}
        print(name, out[name], flush=True)
    return out


def case_laplace(problem) -> dict:
    import probdeconv

    t0 = time.perf_counter()
    post = probdeconv.sample(problem, method="laplace", curvature="lowrank", num_samples=1000,
                             init="em", mode_method="newton")
    total = time.perf_counter() - t0
    s = post.settings
    out = {"seconds_total": round(total, 1), "timings": {k: round(v, 1) for k, v in
                                                         post.timings.items()},
           "rank": s["rank"], "captured_variance": s["captured_variance"],
           "rank_history": s["rank_history"], "rank_converged": s["rank_converged"]}
    print("laplace lowrank", out, flush=True)
    return out


def _timed(fn, repeat: int = 3) -> dict:
    fn()  # compile
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return {"wall": round((time.perf_counter() - w0) / repeat, 3),
            "cpu": round((time.process_time() - c0) / repeat, 3)}


def case_costs(problem) -> dict:
    import jax
    import jax.numpy as jnp

    from probdeconv.algorithms import em
    from probdeconv.inference.curvature import log_precision_products
    from probdeconv.inference.latent import log_posterior_gradient, start_vector, theta_of
    from probdeconv.inference.start import flat_start

    cfg = problem.config
    image = flat_start(problem)
    u = start_vector(problem, image, np.asarray(cfg.bkg_fixed) if not cfg.bkg_free
                     else np.ones(cfg.n_bkg))
    theta = theta_of(problem, u)
    vs = np.random.default_rng(0).standard_normal((16, problem.n_params))
    opts = em.EMOptions(optimize_bkg=bool(cfg.bkg_free), acceleration="SQUAREM")
    params = em.make_params(problem.datasets, opts, mask=problem.mask,
                            bkg_range=np.asarray(cfg.bkg_range), n_bkg=cfg.n_bkg)
    state = em.init(jnp.asarray(image), cfg.bkg_fixed, problem.datasets, params)
    step = em.build_step(opts)
    out = {"gradient": _timed(lambda: log_posterior_gradient(problem, theta)),
           "squarem_step": _timed(lambda: jax.block_until_ready(
               step(state, problem.datasets, params)[0].model)),
           "hvp_block_16": _timed(lambda: log_precision_products(problem, u, vs))}
    print("costs", out, flush=True)
    return out


def case_dense(problem) -> dict:
    import scipy.linalg as sla

    from probdeconv.inference.fisher import cholesky_precision
    from probdeconv.inference.latent import log_space_precision
    from probdeconv.inference.lowrank import lowrank_precision
    from probdeconv.inference.start import prepare

    st = prepare(problem, init="em", mode_method="newton", fisher="observed",
                 precondition="none")
    u = np.asarray(st.latent.center)
    t0 = time.perf_counter()
    lr = lowrank_precision(problem, u)
    t_low = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, h = log_space_precision(problem, u, kind="observed")
    chol = cholesky_precision(h)
    sd = np.sqrt(np.sum(sla.solve_triangular(chol, np.eye(len(u)), lower=True) ** 2, 0))
    ratio = lr.sd[lr.informative] / sd[lr.informative]
    every = lr.sd / sd
    out = {"lowrank_seconds": round(t_low, 1), "rank": lr.rank,
           "captured_variance": lr.captured,
           "history": [(k, c, round(t, 1)) for k, c, t in lr.history],
           "dense_seconds": round(time.perf_counter() - t0, 1),
           "informative": int(lr.informative.sum()),
           "ratio_informative_min_5_50_95_max": np.percentile(ratio, [0, 5, 50, 95, 100]
                                                              ).tolist(),
           "ratio_all_min_5_50_95_max": np.percentile(every, [0, 5, 50, 95, 100]).tolist(),
           "informative_within_1pc": float(np.mean(np.abs(ratio - 1) < 0.01)),
           "informative_within_10pc": float(np.mean(np.abs(ratio - 1) < 0.1))}
    print("dense", out, flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="probdeconv simulate directory")
    p.add_argument("--dc2", action="store_true", help="the DC2-shape NSIDE-8 problem")
    p.add_argument("--case", action="append", choices=("start", "laplace", "dense", "costs"),
                   required=True)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if not (args.data or args.dc2):
        p.error("give --data DIR or --dc2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import probdeconv  # noqa: F401  (x64)

    t0 = time.perf_counter()
    problem = _problem(args)
    result = {"problem": "dc2" if args.dc2 else args.data, "n_params": problem.n_params,
              "load_seconds": round(time.perf_counter() - t0, 1)}
    if "start" in args.case:
        result["start"] = case_start(problem)
    if "laplace" in args.case:
        result["laplace"] = case_laplace(problem)
    if "dense" in args.case:
        result["dense"] = case_dense(problem)
    if "costs" in args.case:
        result["costs"] = case_costs(problem)
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
