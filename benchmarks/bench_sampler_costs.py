"""The samplers' costs before and after the fixes of issue 15, each case in its own process.

Cases (``--cases``, default all):

- ``nuts_args`` / ``nuts_const``: a short NUTS run (1 chain, ``--warmup`` + ``--samples``)
  on a simulation directory (``--data``, e.g. ``probdeconv simulate --nside 8``; or
  ``--dc2``: the DC2-shape problem below, ``--tree-depth`` to bound the trees) with the
  datasets passed to the compiled sampler as arguments (``jit_model_args=True``, what
  probdeconv does) or compiled in as constants (NumPyro's default, the defect): wall time
  and peak resident memory;
- ``fisher``: the Fisher diagonal at the start's MAP from the squared response against
  the diagonal of the dense column-by-column matrix (time, largest relative difference);
- ``gradient_dense`` / ``gradient_observed``: one gradient of the log-likelihood at DC2
  shape (``bench_rl_spacecraft.make_problem``: 12.8 M data bins, 15 % observed) over the
  whole data space and over the observed bins;
- ``model_poisson`` / ``model_observed``: one gradient of the NumPyro model's log-density
  (what NUTS and SVI evaluate) at DC2 shape, with the counts as a ``Poisson(E)`` site over
  every bin (before) and as the observed-bin factor of ``sky_model`` (now);
- ``faint``: the ``--faint`` faintest pixels of a simulation (smallest log-space precision
  ``a`` at the mode): the log-space Laplace conditionals of each pixel (log-normal and
  gamma, precision ``a = H_jj``, the others at the mode) against its exact one-pixel
  conditional (quadrature along the pixel, the others at the mode): ratios of std, mean
  and 95 % quantile;
- ``bootstrap_dense`` / ``bootstrap_observed``: one batch of ``--batch`` RL bootstrap
  replicates at DC2 shape, ``--iterations`` iterations, over the whole data space (traced
  counts, the old way) and over the observed bins: time per replicate-iteration and peak
  memory.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sampler_costs.py --data sim/
    PYTHONPATH=. .venv/bin/python benchmarks/bench_sampler_costs.py --cases gradient_dense \\
        gradient_observed --json benchmarks/sampler_costs.json

Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = ("nuts_args", "nuts_const", "fisher", "gradient_dense", "gradient_observed",
         "model_poisson", "model_observed", "bootstrap_dense", "bootstrap_observed", "faint")
TAG = "@@RESULT@@ "


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _problem_from_sim(directory: str):
    from probdeconv.shell.problem import problem_from_parameters
    from probdeconv.simulate import load_simulation

    prior = {"image": {"kind": "gamma", "k": 1.0, "theta": float("inf")},
             "background": {"free": True, "range": {"bkg": [0.01, 10.0]}}}
    return problem_from_parameters([load_simulation(directory).dataif()], prior)


def _dc2_dataset():
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_rl_spacecraft import make_problem

    from probdeconv.forward import make_dataset

    p = make_problem(8)
    ds = make_dataset(p["counts"], p["response"], [p["bkg"]],
                      ccm=(p["ccm_coords"], p["ccm_values"]), n_model_pixels=768,
                      share_response=True)
    return ds, np.full((768, 1), p["init_value"])


def case_nuts(args, as_arguments: bool) -> dict:
    import numpyro.infer

    from probdeconv.inference import mcmc
    from probdeconv.inference.start import prepare

    if not as_arguments:  # the defect: NumPyro's default, datasets compiled in as constants
        real = numpyro.infer.MCMC

        def constants(*a, **k):
            k["jit_model_args"] = False
            return real(*a, **k)

        mcmc.MCMC = constants
    if args.dc2:  # DC2 shape; a rough start (a few mode steps from the flat image)
        from probdeconv.forward.problem import Problem

        ds, image = _dc2_dataset()
        problem = Problem.from_datasets([ds], bkg_free=True, bkg_range=[[0.0, 100.0]])
        start = prepare(problem, init="image", init_image=image, mode_iterations=3)
    else:
        problem = _problem_from_sim(args.data)
        start = prepare(problem, init="rl")
    rss_start = _peak_gb()
    t0 = time.perf_counter()
    draws = mcmc.run_mcmc(problem, num_warmup=args.warmup, num_samples=args.samples,
                          chains=1, progress_bar=False, start=start,
                          max_tree_depth=args.tree_depth)
    return {"seconds": round(time.perf_counter() - t0, 2), "peak_gb": round(_peak_gb(), 3),
            "peak_gb_before_sampling": round(rss_start, 3),
            "mean_leapfrog_steps": float(draws.store.read("stats.n_steps").mean()),
            "n_params": problem.n_params}


def case_fisher(args) -> dict:
    import numpy as np

    from probdeconv.inference import fisher
    from probdeconv.inference.latent import start_vector, theta_of
    from probdeconv.inference.start import prepare

    problem = _problem_from_sim(args.data)
    start = prepare(problem, init="rl", precondition="none")
    theta = theta_of(problem, start_vector(problem, start.map_image, start.map_bkg))
    t0 = time.perf_counter()
    fast = fisher.precision_matrix(problem, theta, diagonal=True)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = fisher.precision_matrix(problem, theta, diagonal=True)
    t_fast2 = time.perf_counter() - t0
    t0 = time.perf_counter()
    dense = np.diag(fisher.precision_matrix(problem, theta))
    t_dense = time.perf_counter() - t0
    return {"n_params": problem.n_params, "squared_response_s": round(t_fast, 2),
            "squared_response_again_s": round(t_fast2, 2), "columns_s": round(t_dense, 2),
            "speed_up": round(t_dense / t_fast2, 1),
            "max_rel_difference": float(np.max(np.abs(fast / dense - 1))),
            "peak_gb": round(_peak_gb(), 3)}


def case_gradient(args, observed: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from probdeconv import forward as fm

    ds, image = _dc2_dataset()
    bkg = jnp.ones(1)
    if observed:
        def f(x, b):
            return fm.observed_log_likelihood(ds, x, b)
    else:
        def f(x, b):
            return fm.log_likelihood(ds, fm.expected_counts(ds, x, b))
    grad = jax.jit(jax.grad(f, argnums=(0, 1)))
    x = jnp.asarray(image)
    t0 = time.perf_counter()
    jax.block_until_ready(grad(x, bkg))
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(grad(x, bkg))
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"data_bins": ds.n_bins, "observed_bins": ds.n_observed,
            "compile_and_first_s": round(first, 2), "median_s": round(times[len(times) // 2], 3),
            "min_s": round(times[0], 3), "peak_gb": round(_peak_gb(), 3)}


def case_model(args, observed: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer.util import log_density

    from probdeconv import forward as fm
    from probdeconv.forward.posterior import make_config
    from probdeconv.inference.model import sky_model

    ds, image = _dc2_dataset()
    cfg = make_config((768, 1), n_bkg=1, bkg_free=True, bkg_range=[[0.0, 100.0]])

    def poisson_model(datasets, config):  # the counts site as it was before the fix
        img = numpyro.sample("image", dist.ImproperUniform(dist.constraints.positive,
                                                           (), (768, 1)))
        b = numpyro.sample("bkg_norm", dist.Uniform(0.0, 100.0).expand((1,)).to_event(1))
        for i, d in enumerate(datasets):
            numpyro.sample(f"obs_{i}", dist.Poisson(fm.expected_counts(d, img, b)).to_event(2),
                           obs=d.counts)

    model = sky_model if observed else poisson_model

    def f(x, b, datasets, config):
        return log_density(model, (datasets, config), {}, {"image": x, "bkg_norm": b})[0]

    grad = jax.jit(jax.grad(f, argnums=(0, 1)))
    x, b = jnp.asarray(image), jnp.ones(1)
    t0 = time.perf_counter()
    jax.block_until_ready(grad(x, b, (ds,), cfg))
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(grad(x, b, (ds,), cfg))
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"data_bins": ds.n_bins, "observed_bins": ds.n_observed,
            "compile_and_first_s": round(first, 2), "median_s": round(times[len(times) // 2], 3),
            "min_s": round(times[0], 3), "peak_gb": round(_peak_gb(), 3)}


def case_bootstrap(args, observed: bool) -> dict:
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from probdeconv import forward as fm
    from probdeconv.algorithms import em

    ds, image = _dc2_dataset()
    opts = em.EMOptions(optimize_bkg=True)
    params = em.make_params((ds,), opts, mask=np.ones((768, 1), bool),
                            bkg_range=np.array([[0.0, 100.0]]), n_bkg=1)

    @functools.partial(jax.jit, static_argnames=("iterations",))
    def replicates(counts, dataset, image0, iterations):
        def one(c):
            d = fm.with_observed_counts(dataset, c) if observed else fm.with_counts(dataset, c)
            state = em.init(image0, jnp.ones(1), (d,), params)
            state, _ = jax.lax.scan(lambda s, _: (em.step(s, (d,), params, opts)[0], None),
                                    state, None, length=iterations)
            return state.model

        return jax.vmap(one)(counts)

    rng = np.random.default_rng(0)
    base = np.asarray(fm.observed_counts(ds)) if observed else np.asarray(ds.counts)
    counts = jnp.asarray(rng.poisson(base, (args.batch, *base.shape)).astype(float))
    rss_setup = _peak_gb()
    t0 = time.perf_counter()
    jax.block_until_ready(replicates(counts, ds, jnp.asarray(image), args.iterations))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(replicates(counts, ds, jnp.asarray(image), args.iterations))
    run = time.perf_counter() - t0
    return {"batch": args.batch, "iterations": args.iterations,
            "compile_and_first_s": round(first, 2), "seconds": round(run, 2),
            "seconds_per_replicate_iteration": round(run / (args.batch * args.iterations), 3),
            "peak_gb": round(_peak_gb(), 3), "peak_gb_after_setup": round(rss_setup, 3)}


def case_faint(args) -> dict:
    import jax.numpy as jnp
    import numpy as np
    from scipy.integrate import cumulative_trapezoid
    from scipy.stats import gamma, lognorm

    from probdeconv import forward as fm
    from probdeconv.inference.latent import log_space_precision
    from probdeconv.inference.start import prepare

    problem = _problem_from_sim(args.data)
    u = np.asarray(prepare(problem, init="rl").latent.center)
    theta, h = log_space_precision(problem, u, kind="observed", diagonal=True)
    n, ds = problem.n_free, problem.datasets[0]
    image = np.zeros(int(np.prod(problem.model_shape)))
    image[problem.free_index] = theta[:n]
    e_all = np.asarray(fm.expected_counts(ds, jnp.asarray(image.reshape(problem.model_shape)),
                                          jnp.asarray(theta[n:]))).ravel()
    d = np.asarray(ds.counts).ravel()
    exposure = np.asarray(fm.exposure(ds)).ravel()
    ratios = {k: [] for k in ("a", "lognormal_std", "gamma_std", "lognormal_mean",
                              "gamma_mean", "lognormal_q95", "gamma_q95")}
    for j in np.argsort(h[:n])[:args.faint]:
        pix = problem.free_index[j]
        unit = np.zeros_like(image)
        unit[pix] = 1.0
        col = np.asarray(fm.sky_counts(ds, jnp.asarray(unit.reshape(problem.model_shape)))
                         ).ravel()
        nz = col > 0
        rest = e_all[nz] - col[nz] * theta[j]  # E without pixel j
        a = h[j]
        ln = lognorm(s=np.sqrt(1 / a), scale=np.exp(u[j]))
        ga = gamma(a, scale=np.exp(u[j]) / a)
        lam = np.linspace(0.0, 2.0 * ln.ppf(1 - 1e-6), 4001)[1:]
        logp = np.concatenate([
            (d[nz][None] * np.log(rest[None] + col[nz][None] * lam[k:k + 100, None])).sum(1)
            - exposure[pix] * lam[k:k + 100] for k in range(0, lam.size, 100)])
        w = np.exp(logp - logp.max())
        norm = np.trapezoid(w, lam)
        mean = np.trapezoid(w * lam, lam) / norm
        std = np.sqrt(np.trapezoid(w * (lam - mean) ** 2, lam) / norm)
        cdf = cumulative_trapezoid(w, lam, initial=0.0)
        q95 = np.interp(0.95, cdf / cdf[-1], lam)
        for name, dist in (("lognormal", ln), ("gamma", ga)):
            ratios[f"{name}_std"].append(dist.std() / std)
            ratios[f"{name}_mean"].append(dist.mean() / mean)
            ratios[f"{name}_q95"].append(dist.ppf(0.95) / q95)
        ratios["a"].append(a)
    return {"pixels": args.faint, **{k: {"median": round(float(np.median(v)), 3),
                                         "min": round(float(np.min(v)), 3),
                                         "max": round(float(np.max(v)), 3)}
                                     for k, v in ratios.items()}}


def run_case(name: str, args) -> dict:
    if name in ("nuts_args", "nuts_const"):
        return case_nuts(args, name == "nuts_args")
    if name == "fisher":
        return case_fisher(args)
    if name == "faint":
        return case_faint(args)
    if name.startswith("gradient"):
        return case_gradient(args, name.endswith("observed"))
    if name.startswith("model"):
        return case_model(args, name.endswith("observed"))
    return case_bootstrap(args, name.endswith("observed"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--data", default="sim", help="simulation directory (nuts, fisher)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dc2", action="store_true", help="NUTS cases at DC2 shape")
    p.add_argument("--faint", type=int, default=20, help="pixels of the faint case")
    p.add_argument("--tree-depth", type=int, default=10, help="NUTS max_tree_depth")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(TAG + json.dumps({"case": args.worker, **run_case(args.worker, args)}),
              flush=True)
        return 0
    rows = []
    for name in args.cases:
        cmd = [sys.executable, __file__, "--worker", name, *[
            a for a in (argv if argv is not None else sys.argv[1:])]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(TAG)]
        row = json.loads(lines[-1][len(TAG):]) if lines else {
            "case": name, "error": proc.stderr.strip().splitlines()[-1:]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
