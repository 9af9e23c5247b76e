"""Time per RL iteration with the data space on 1 device and split over N host devices.

Each device count runs in its own process (JAX fixes its devices when it starts):

    python benchmarks/bench_sharding.py --devices 1 4 --iterations 20 --out sharding.json

The data: a spacecraft-frame problem of DC2 shape scaled down (NSIDE 4 model and PsiChi,
Phi 10, one energy bin, 48 ScAtt bins, 4 CCM weights per row, Poisson counts and a flat
background) and its galactic-frame counterpart (one time bin).  RL (``--acceleration``,
default none), float64; the time per iteration is the median after one compiled warm-up
iteration.  The log-likelihood after the iterations is printed for each device count (the
same to 1e-10 for plain RL; SQUAREM on this case amplifies rounding differences after ~18
iterations, on one device too: a 1e-15 change of the start image moves its log-likelihood
by 1e-6).

On a CPU the N "devices" share the same cores (``--xla_force_host_platform_device_count``):
this measures the cost of the split on one machine, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np

from probdeconv.algorithms import em
from probdeconv.forward import make_dataset
from probdeconv.forward.mesh import data_mesh
from probdeconv.forward.sharding import shard_dataset

N_SIDE, PHI, N_TIME = 4, 10, 48


def _dataset(frame: str):
    rng = np.random.default_rng(0)
    n_pix = 12 * N_SIDE**2
    data = (1, PHI, n_pix)
    response = rng.random((n_pix, 1, *data)) * (rng.random((n_pix, 1, *data)) < 0.2)
    shape = ((N_TIME,) if frame == "local" else ()) + data
    counts = rng.poisson(0.3, shape).astype(float)
    bkg = np.full(shape, 0.1)
    if frame == "galactic":
        return make_dataset(counts, response, [bkg])
    t = np.repeat(np.arange(N_TIME), 4 * n_pix)
    l = np.tile(np.repeat(np.arange(n_pix), 4), N_TIME)
    v = rng.integers(0, n_pix, t.size)
    return make_dataset(counts, response, [bkg], ccm=(np.stack([t, l, v]), rng.random(t.size)),
                        n_model_pixels=n_pix)


def _worker(n_devices: int, iterations: int, acceleration: str) -> dict:
    out = {}
    for frame in ("local", "galactic"):
        ds = _dataset(frame)
        if n_devices > 1:
            ds = shard_dataset(ds, data_mesh(n_devices))
        dss = (ds,)
        opts = em.EMOptions(acceleration=acceleration, optimize_bkg=True)
        params = em.make_params(dss, opts)
        state = em.init(jnp.ones(ds.model_shape), jnp.ones(1), dss, params)
        step = em.build_step(opts)
        t0 = time.perf_counter()
        state, info = step(state, dss, params)
        info.loglik.block_until_ready()
        first = time.perf_counter() - t0
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            state, info = step(state, dss, params)
            info.loglik.block_until_ready()
            times.append(time.perf_counter() - t0)
        out[frame] = {"first_s": first, "median_s": float(np.median(times)),
                      "loglik": float(info.loglik.sum())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 4])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--acceleration", default="none", help="RL accelerator (default none)")
    p.add_argument("--out", default=None, help="JSON file for the figures")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        print(json.dumps(_worker(args.worker, args.iterations, args.acceleration)))
        return
    results = {}
    for n in args.devices:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
                   JAX_PLATFORMS="cpu")
        cmd = [sys.executable, __file__, "--worker", str(n), "--iterations",
               str(args.iterations), "--acceleration", args.acceleration]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        results[n] = json.loads(r.stdout.strip().splitlines()[-1])
        for frame, f in results[n].items():
            print(f"{n} device(s), {frame:8s}: {1e3 * f['median_s']:8.1f} ms per iteration "
                  f"(first {f['first_s']:.1f} s), log-likelihood {f['loglik']:.12g}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
