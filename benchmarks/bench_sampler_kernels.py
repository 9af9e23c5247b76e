"""Which MCMC kernel gives the most effective draws per gradient on probdeconv's posteriors.

The target is the one every probdeconv sampler uses: the posterior of the whitened log-flux
``z`` (:func:`probdeconv.inference.latent.latent_log_density` around the start that
:func:`probdeconv.inference.start.prepare` finds).  On it, with the same start, the same
number of chains and draws, this script runs

- ``nuts``: NUTS with window adaptation of step size and diagonal mass (BlackJAX; the same
  algorithm as probdeconv's NumPyro NUTS, counted the same way);
- ``mala``: Metropolis-adjusted Langevin, step size by dual averaging to acceptance 0.574
  (identity mass: ``z`` is already whitened);
- ``nuts_lowrank``: the same NUTS on the target whitened by the low-rank plus diagonal
  Laplace covariance (``prepare(precondition="lowrank")``) instead of its diagonal;
- ``amclmc``: adjusted microcanonical HMC (BlackJAX ``adjusted_mclmc_dynamic``, step size
  and trajectory length by ``adjusted_mclmc_find_L_and_step_size``, diagonal mass);

NUTS runs ``--draws`` draws per chain; the other kernels then get the same number of
gradient evaluations for their draws (and for their warm-up), so the comparison is at equal
cost (``nuts_lowrank`` runs NUTS's draws).  Reported per kernel: the gradient evaluations
spent in the draws, the bulk and tail ESS of every log-space parameter ``u`` (ArviZ, over
the chains), ESS per 1000 gradients (smallest and median over parameters), max R-hat, and
the largest difference of the posterior means and standard deviations from NUTS in units
of NUTS's standard deviation (a kernel that is cheap but wrong shows there).

Problems (``--problems``): ``points2`` (``simulate(sky="points", nside=2)``, 49 parameters),
``bulge4`` (``simulate(sky="bulge511", nside=4)``, 193 parameters).

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sampler_kernels.py \\
        --json benchmarks/sampler_kernels_cpu.json

Gradient counts do not depend on the machine's load; the seconds printed do.
"""

from __future__ import annotations

import argparse
import json
import time

import arviz as az
import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation

import probdeconv
from probdeconv.inference.latent import latent_log_density
from probdeconv.inference.start import prepare
from probdeconv.simulate import simulate

jax.config.update("jax_enable_x64", True)

PROBLEMS = {
    "points2": dict(sky="points", nside=2, seed=1, phi_bins=6),
    "bulge4": dict(sky="bulge511", nside=4, seed=2, phi_bins=6),
}
MCLACHLAN_GRADIENTS = 2  # gradient evaluations per isokinetic McLachlan step
AMCLMC_STEPS = 2.5  # mean integration steps per adjusted-MCLMC draw (uniform on 1..2 avg, avg 2)


def make_problem(name: str):
    sim = simulate(**PROBLEMS[name])
    data = sim.dataif(name)
    return probdeconv.problem_from_dataif([data], bkg_free=True,
                                          bkg_range={"bkg": [0.5, 2.0]},
                                          image_prior="gamma", gamma=(1.0, float("inf")))


def make_target(problem, precondition: str):
    """The whitened log-density and the map from ``z`` to the log-space parameters ``u``
    (diagnostics are computed on ``u``, the same variables for every whitening)."""
    start = prepare(problem, precondition=precondition)
    latent, datasets, config = start.latent, problem.datasets, problem.config

    def logdensity(z):
        return latent_log_density(z, datasets, config, latent)

    def to_u(z):
        if latent.vectors is not None:
            z = z + (z @ latent.vectors) * latent.coef @ latent.vectors.T
        return np.asarray(latent.center + latent.scale * z)

    return logdensity, int(latent.center.shape[0]), to_u, start.notes


def _run_chains(step, states, keys):
    def one_chain(state, chain_keys):
        def body(s, k):
            s, info = step(k, s)
            return s, (s.position, info)
        return jax.lax.scan(body, state, chain_keys)

    return jax.jit(jax.vmap(one_chain))(states, keys)


def run_nuts(logdensity, n, chains, warmup, draws, key):
    k_warm, k_draw = jax.random.split(key)
    z0 = jnp.zeros(n)
    adapt = blackjax.window_adaptation(blackjax.nuts, logdensity)
    warm_keys = jax.random.split(k_warm, chains)
    (states, params), infos = jax.vmap(lambda k: adapt.run(k, z0, warmup))(warm_keys)
    warm_grads = int(np.sum(infos.info.num_integration_steps))

    def one(state, step_size, imm, chain_keys):
        kernel = blackjax.nuts(logdensity, step_size, imm)

        def body(s, k):
            s, info = kernel.step(k, s)
            return s, (s.position, info.num_integration_steps)
        return jax.lax.scan(body, state, chain_keys)

    keys = jax.random.split(k_draw, chains * draws).reshape(chains, draws, -1)
    _, (pos, steps) = jax.jit(jax.vmap(one))(states, params["step_size"],
                                             params["inverse_mass_matrix"], keys)
    return np.asarray(pos), int(np.sum(steps)), warm_grads, dict(
        step_size=float(np.mean(params["step_size"])))


def run_mala(logdensity, n, chains, warmup, draws, key):
    da_init, da_update, da_final = dual_averaging_adaptation(0.574)
    k_warm, k_draw = jax.random.split(key)

    def warm(chain_key):
        state = blackjax.mala.init(jnp.zeros(n), logdensity)
        da = da_init(0.5 / np.sqrt(n) ** (1 / 3))

        def body(c, k):
            s, d = c
            s, info = blackjax.mala(logdensity, jnp.exp(d.log_step_size)).step(k, s)
            d = da_update(d, info.acceptance_rate)
            return (s, d), None
        (state, da), _ = jax.lax.scan(body, (state, da), jax.random.split(chain_key, warmup))
        return state, da_final(da)

    states, steps = jax.jit(jax.vmap(warm))(jax.random.split(k_warm, chains))

    def one(state, step_size, chain_keys):
        kernel = blackjax.mala(logdensity, step_size)

        def body(s, k):
            s, info = kernel.step(k, s)
            return s, (s.position, info.acceptance_rate)
        return jax.lax.scan(body, state, chain_keys)

    keys = jax.random.split(k_draw, chains * draws).reshape(chains, draws, -1)
    _, (pos, acc) = jax.jit(jax.vmap(one))(states, steps, keys)
    return np.asarray(pos), chains * draws, chains * warmup, dict(
        step_size=float(np.mean(steps)), acceptance=float(np.mean(acc)))


def run_amclmc(logdensity, n, chains, warmup, draws, key):
    k_init, k_tune, k_draw = jax.random.split(key, 3)

    def integration_steps(k, avg):
        return jnp.ceil(jax.random.uniform(k) * 2.0 * avg).astype(jnp.int32)

    def kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix,
               integration_steps_params):
        return blackjax.mcmc.adjusted_mclmc_dynamic.build_kernel(
            integration_steps_fn=integration_steps)(
            rng_key, state, logdensity_fn, step_size, inverse_mass_matrix=inverse_mass_matrix,
            integration_steps_params=integration_steps_params)

    def tune(chain_key):
        ki, kt = jax.random.split(chain_key)
        state = blackjax.mcmc.adjusted_mclmc_dynamic.init(jnp.zeros(n), logdensity, ki)
        state, params, n_tune = blackjax.adjusted_mclmc_find_L_and_step_size(
            mclmc_kernel=kernel, logdensity_fn=logdensity, num_steps=warmup, state=state,
            rng_key=kt, target=0.9, frac_tune1=0.5, frac_tune2=0.3, frac_tune3=0.0)
        return state, params, n_tune

    tuned = [tune(k) for k in jax.random.split(k_tune, chains)]
    warm_grads = int(sum(int(t[2]) for t in tuned)) * MCLACHLAN_GRADIENTS

    def one(state, step_size, L, imm, chain_keys):
        def body(s, k):
            s, info = kernel(k, s, logdensity, step_size, imm, (L / step_size,))
            return s, (s.position, info.num_integration_steps, info.acceptance_rate)
        return jax.lax.scan(body, state, chain_keys)

    states = jax.tree.map(lambda *x: jnp.stack(x), *[t[0] for t in tuned])
    step = jnp.stack([t[1].step_size for t in tuned])
    L = jnp.stack([t[1].L for t in tuned])
    imm = jnp.stack([t[1].inverse_mass_matrix for t in tuned])
    keys = jax.random.split(k_draw, chains * draws).reshape(chains, draws, -1)
    _, (pos, nsteps, acc) = jax.jit(jax.vmap(one))(states, step, L, imm, keys)
    return np.asarray(pos), int(np.sum(nsteps)) * MCLACHLAN_GRADIENTS, warm_grads, dict(
        step_size=float(jnp.mean(step)), L=float(jnp.mean(L)), acceptance=float(np.mean(acc)))


KERNELS = {"nuts": run_nuts, "nuts_lowrank": run_nuts, "mala": run_mala,
           "amclmc": run_amclmc}


def summarise(pos: np.ndarray) -> dict:
    ds = az.convert_to_datatree({"z": pos})
    ess_b = np.asarray(az.ess(ds, method="bulk")["z"])
    ess_t = np.asarray(az.ess(ds, method="tail")["z"])
    rhat = np.asarray(az.rhat(ds)["z"])
    return dict(ess_bulk=ess_b, ess_tail=ess_t, rhat=rhat)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    results = []
    for name in args.problems:
        problem = make_problem(name)
        targets = {"diagonal": make_target(problem, "diagonal")}
        ref, budget = None, None
        for kname in ["nuts"] + [k for k in args.kernels if k != "nuts"]:
            whitening = "lowrank" if kname == "nuts_lowrank" else "diagonal"
            if whitening not in targets:
                targets[whitening] = make_target(problem, whitening)
            logdensity, n, to_u, notes = targets[whitening]
            t0 = time.perf_counter()
            draws, warmup = args.draws, args.warmup
            if budget is not None and kname != "nuts_lowrank":  # equal gradient budget
                per_draw = 1.0 if kname == "mala" else MCLACHLAN_GRADIENTS * AMCLMC_STEPS
                draws = int(np.ceil(budget[0] / (args.chains * per_draw)))
                warmup = int(np.ceil(budget[1] / (args.chains * per_draw)))
            pos, grads, warm_grads, extra = KERNELS[kname](
                logdensity, n, args.chains, warmup, draws, jax.random.PRNGKey(args.seed))
            if kname == "nuts":
                budget = (grads, warm_grads)
            seconds = time.perf_counter() - t0
            pos = to_u(pos)
            if whitening == "lowrank":
                extra.update(rank=notes.get("lowrank_rank"),
                             captured=notes.get("lowrank_captured"))
            s = summarise(pos)
            mean, sd = pos.mean(axis=(0, 1)), pos.std(axis=(0, 1))
            row = dict(problem=name, kernel=kname, n_params=n, chains=args.chains,
                       draws=draws, gradients=grads, warmup_gradients=warm_grads,
                       seconds=round(seconds, 1),
                       min_ess_bulk=float(s["ess_bulk"].min()),
                       median_ess_bulk=float(np.median(s["ess_bulk"])),
                       min_ess_tail=float(s["ess_tail"].min()),
                       min_ess_bulk_per_1000_grad=1000 * float(s["ess_bulk"].min()) / grads,
                       median_ess_bulk_per_1000_grad=1000 * float(np.median(s["ess_bulk"]))
                       / grads,
                       max_rhat=float(s["rhat"].max()), **extra)
            if kname == "nuts":
                ref = (mean, sd)
            elif ref is not None:
                row["max_mean_diff_in_nuts_sd"] = float(np.max(np.abs(mean - ref[0]) / ref[1]))
                row["sd_ratio_to_nuts_median"] = float(np.median(sd / ref[1]))
                row["sd_ratio_to_nuts_range"] = [float(np.min(sd / ref[1])),
                                                 float(np.max(sd / ref[1]))]
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
