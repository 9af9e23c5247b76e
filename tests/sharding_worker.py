"""Runs in a subprocess of tests/test_sharding.py (JAX's devices are fixed when it starts).

``python tests/sharding_worker.py devices OUT.json [SIM RUN]``: with 4 host devices (XLA_FLAGS
set by the caller), the computations of :func:`run_all` split over 4 devices, for both
frames, a short NUTS run, and (given a simulation directory) ``probdeconv run --devices 4``.
``python tests/sharding_worker.py host PORT PID OUT.json``: one of two processes
(``jax.distributed`` on 127.0.0.1); each builds only its slice of the data.
Results are written as JSON (process 0 only).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro  # noqa: F401  (before probdeconv, see NUMPYRO_FIRST)

from probdeconv.algorithms import em, map_em
from probdeconv.cli.main import main
from probdeconv.forward import make_dataset, sharding, summed_exposure, total_log_likelihood
from probdeconv.forward import mesh as fmesh
from probdeconv.forward.dataset import ALMOST_ZERO
from probdeconv.forward.model import backproject, expected_counts
from probdeconv.forward.problem import Problem
from probdeconv.inference import MAPOptions, map_run, sample_draws
from probdeconv.priors import TSVPrior

NUMPYRO_FIRST = """numpyro is imported before probdeconv: with `import probdeconv` first
(arviz_base's lazy loader, imported by probdeconv.report.predictive), numpyro.distributions
lacks its `distribution` attribute, which numpyro.factor needs; not a matter of sharding."""

N_PIX, N_TIME, DATA = 12, 5, (2, 3, 12)  # NSIDE 1; 5 time bins (uneven over 4 or 2 devices)
N_REAL = {True: N_TIME * 72, False: 78}  # data bins of each frame (spacecraft: True)
FULL = {"local": {}, "galactic": dict(maprl=False, gradient=False)}  # what each frame runs


def arrays(frame: str, seed: int = 1) -> dict:
    """Poisson counts, response, one background and (spacecraft frame) a CCM."""
    rng = np.random.default_rng(seed)
    data = DATA if frame == "local" else (2, 3, 13)  # 78 data bins: uneven over 4 devices
    shape = ((N_TIME,) if frame == "local" else ()) + data
    out = dict(counts=rng.poisson(0.6, shape).astype(float),
               response=0.3 * rng.random((N_PIX, 1, *data)), bkg=0.5 * rng.random(shape))
    if frame == "local":
        t = np.repeat(np.arange(N_TIME), N_PIX)
        l = np.tile(np.arange(N_PIX), N_TIME)
        out["ccm"] = (np.stack([t, l, rng.integers(0, N_PIX, t.size)]), rng.random(t.size))
    return out


def dataset(frame: str):
    a = arrays(frame)
    kw = dict(ccm=a["ccm"], n_model_pixels=N_PIX) if frame == "local" else {}
    return make_dataset(a["counts"], a["response"], [a["bkg"]], **kw)


def slice_dataset(frame: str, mesh):
    """This process's slice only, as a sharded dataset."""
    a = arrays(frame)
    if frame == "local":
        rows = fmesh.process_rows(N_TIME, mesh)
        coords, values = a["ccm"]
        keep = (coords[0] >= rows.start) & (coords[0] < rows.stop)
        return sharding.make_sharded_dataset(
            a["counts"][rows], a["response"], [a["bkg"][rows]], mesh=mesh, n=N_TIME,
            ccm=(coords[:, keep], values[keep]), n_model_pixels=N_PIX)
    n = a["counts"].size
    rows = fmesh.process_rows(n, mesh)
    resp = a["response"].reshape(N_PIX, 1, n)[..., rows]
    return sharding.make_sharded_dataset(a["counts"].reshape(-1)[rows], resp,
                                         [a["bkg"].reshape(-1)[rows]], mesh=mesh, n=n)


CLI_ARGS = ("--quiet", "run", str(Path(__file__).resolve().parents[1] / "models" /
                                   "rl_squarem.yml"), "--set",
            "deconvolution:parameter:iteration_max=3")


def run_all(ds, maprl: bool = True, gradient: bool = True) -> dict:
    """Forward products, RL with SQUAREM, MAP-RL (gamma + TSV, LineSearch; when ``maprl``)
    and gradient MAP on one dataset; arrays as lists."""
    dss = (ds,)
    rng = np.random.default_rng(7)
    lam = jnp.asarray(rng.random((N_PIX, 1)))
    b = jnp.array([0.8])
    out = {"loglik": float(total_log_likelihood(dss, lam, b)),
           "exposure": np.asarray(summed_exposure(dss)).ravel().tolist(),
           "n_bins": ds.n_bins}
    h = rng.random(N_REAL[ds.is_local])  # the real bins; padding bins get 0
    out["backproject"] = np.asarray(backproject(ds, sharding.pad_data(ds, h))).tolist()
    out["expected"] = sharding.trim_data(expected_counts(ds, lam, b), h.shape).tolist()
    clock = time.process_time()
    opts = em.EMOptions(acceleration="SQUAREM", optimize_bkg=True)
    params = em.make_params(dss, opts)
    state = em.init(jnp.ones((N_PIX, 1)), jnp.ones(1), dss, params)
    for _ in range(4):
        state, info = em.build_step(opts)(state, dss, params)
    out["rl_image"] = np.asarray(state.model).ravel().tolist()
    out["seconds_rl"], clock = time.process_time() - clock, time.process_time()
    out["rl_loglik"] = float(jnp.sum(info.loglik))
    problem = Problem.from_datasets(dss, image_prior="gamma", gamma=(1.5, 20.0), bkg_free=True,
                                    priors={"TSV": TSVPrior.build(1, 0.05)})
    if maprl:
        mparams = map_em.MAPParams(em=em.make_params(dss, em.EMOptions()),
                                   posterior=problem.config)
        mstate = map_em.init(jnp.ones((N_PIX, 1)), jnp.ones(1), dss, mparams)
        for _ in range(4):
            mstate, minfo = map_em.build_step(map_em.MAPOptions(acceleration="LineSearch"))(
                mstate, dss, mparams)
        out["maprl_image"] = np.asarray(mstate.model).ravel().tolist()
        out["maprl_logpost"] = float(minfo.log_posterior)
        out["seconds_maprl"], clock = time.process_time() - clock, time.process_time()
    if gradient:
        res = map_run(jnp.ones((N_PIX, 1)), None, dss, problem.config, MAPOptions(),
                      max_iterations=15)
        out["map_image"] = np.asarray(res.image).ravel().tolist()
        out["map_logpost"] = float(res.log_posterior[-1])
        out["seconds_map"] = time.process_time() - clock
    return out


def devices(path: str, sim: str | None = None, run_out: str | None = None) -> None:
    mesh = fmesh.data_mesh(4)
    results = {}
    for frame in ("local", "galactic"):
        split = sharding.shard_dataset(dataset(frame), mesh)
        results[frame] = run_all(split, **FULL[frame])
        results[frame]["n_devices"] = len(split.counts.sharding.device_set)
    clock = time.process_time()
    problem = Problem.from_datasets([sharding.shard_dataset(dataset("local"), mesh)],
                                    image_prior="gamma", gamma=(1.5, 20.0), bkg_free=True)
    draws = {}
    for method, kw in (("nuts", dict(num_warmup=8, num_samples=8, chains=1, map_iterations=20,
                                     mode_iterations=20, max_tree_depth=4)),):
        d = sample_draws(problem, method, progress_bar=False, **kw)
        image = d.store.read("image")
        draws[method] = {"finite": bool(np.all(np.isfinite(image))),
                         "shape": list(image.shape), "mean": float(image.mean())}
    results["samplers"] = draws
    results["seconds_nuts"], clock = time.process_time() - clock, time.process_time()
    if sim:
        results["cli_rc"] = main([*CLI_ARGS, "--data", sim, "--out", run_out, "--devices", "4"])
        results["seconds_cli"] = time.process_time() - clock
    results["epsilon"] = ALMOST_ZERO
    with open(path, "w") as f:
        json.dump(results, f)


def host(port: str, pid: int, path: str | None) -> None:
    fmesh.initialize_hosts(f"127.0.0.1:{port}", 2, pid)
    mesh = fmesh.data_mesh()
    results = {}
    for frame in ("local", "galactic"):
        ds = slice_dataset(frame, mesh)
        results[frame] = run_all(ds, maprl=False, gradient=False)
        results[frame]["n_devices"] = len(ds.counts.sharding.device_set)
        results[frame]["local_rows"] = int(ds.counts.addressable_shards[0].data.shape[
            0 if frame == "local" else 1])
    if pid == 0:
        with open(path, "w") as f:
            json.dump(results, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "devices":
        devices(*sys.argv[2:])
    else:
        host(sys.argv[2], int(sys.argv[3]), sys.argv[4])
