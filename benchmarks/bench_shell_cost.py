"""What the cosipy-compatible shell costs per iteration, against the pure jitted step.

The same NSIDE-8 spacecraft-frame problem of COSI DC2 shape as ``bench_rl_spacecraft.py``
(278 ScAtt bins, Phi 60, PsiChi NSIDE 8, accelerated RL with MaxStep, response weighting
0.5, background fitted, float64) is written as histpy files and run twice in one process:

- ``pure``: ``forward.make_dataset`` + ``algorithms.em`` ``init`` / compiled ``step``;
- ``shell``: the files opened as a cosipy user does (``Histogram.open``,
  ``FullDetectorResponse.open``, ``CoordsysConversionMatrix.open``), ``DataIF_COSI_DC2.load``,
  ``ImageDeconvolution`` with the parameter file, and each ``iteration()`` of the algorithm
  class timed: the jitted step plus the histograms it registers (model, delta, processed
  delta, alpha, background norms, log-likelihood).

The goal (issue: "the shell costs nothing") is a shell iteration within 5 % of the pure
step. Example::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_shell_cost.py --iterations 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_rl_spacecraft as base  # noqa: E402  (the shared synthetic problem)


def time_pure(directory: Path, iterations: int) -> dict:
    import jax
    import jax.numpy as jnp

    from probdeconv import forward as fm
    from probdeconv.algorithms import em

    p = base.read_files(directory)
    npix = 12 * p["nside"] ** 2
    ds = fm.make_dataset(p["counts"], p["response"], [p["bkg"]],
                         ccm=(p["ccm_coords"], p["ccm_values"]), n_model_pixels=npix,
                         share_response=True)
    init_value = p["init_value"]
    del p
    datasets = (ds,)
    opts = em.EMOptions(weighting=True, acceleration="MaxStep", optimize_bkg=True)
    params = em.make_params(datasets, opts, weighting_index=base.WEIGHTING_INDEX,
                            alpha_max=base.ALPHA_MAX, bkg_range=np.array([base.BKG_RANGE]))
    state = em.init(jnp.full((npix, 1), init_value), jnp.ones(1), datasets, params)
    step = em.build_step(opts)
    state, info = step(state, datasets, params)  # compile + warm-up
    jax.block_until_ready((state, info))
    times, loglik = [], []
    for _ in range(iterations):
        t = time.perf_counter()
        state, info = step(state, datasets, params)
        jax.block_until_ready((state, info))
        times.append(time.perf_counter() - t)
        loglik.append(float(info.loglik.sum()))
    return {"times": times, "loglik": loglik}


RUN_FILE = """\
model_definition:
  class: AllSkyImage
  property: {coordinate: galactic, nside: @NSIDE@, scheme: ring,
             energy_edges: {value: @EDGES@, unit: keV}, unit: "cm-2 s-1 sr-1"}
  initialization: {algorithm: flat, parameter: {value: [@INIT@], unit: "cm-2 s-1 sr-1"}}
deconvolution:
  algorithm: RL
  parameter:
    iteration_max: @N@
    minimum_flux: {value: 0.0, unit: "cm-2 s-1 sr-1"}
    acceleration: {activate: true, algorithm: MaxStep, alpha_max: @ALPHA@}
    response_weighting: {activate: true, index: @INDEX@}
    smoothing: {activate: false}
    background_normalization_optimization: {activate: true, range: {bkg: @RANGE@}}
    stopping_criteria: {statistics: log-likelihood, threshold: 0.0}
"""


def run_file(nside: int, n: int, init: float) -> str:
    """The RL parameter file of the benchmark (same options as the pure step)."""
    values = {"@NSIDE@": nside, "@N@": n, "@INIT@": repr(init),
              "@EDGES@": base.EI_EDGES.tolist(), "@ALPHA@": base.ALPHA_MAX,
              "@INDEX@": base.WEIGHTING_INDEX, "@RANGE@": list(base.BKG_RANGE)}
    text = RUN_FILE
    for key, value in values.items():
        text = text.replace(key, str(value))
    return text


def init_value(directory: Path) -> float:
    import json

    return json.loads((directory / base.FILES["meta"]).read_text())["init_value"]


def time_shell(directory: Path, iterations: int) -> dict:
    from probdeconv import (
        CoordsysConversionMatrix,
        DataIF_COSI_DC2,
        FullDetectorResponse,
        Histogram,
        ImageDeconvolution,
    )

    event = Histogram.open(directory / base.FILES["event"])
    bkg = Histogram.open(directory / base.FILES["bkg"])
    ccm = CoordsysConversionMatrix.open(directory / base.FILES["ccm"])
    with FullDetectorResponse.open(directory / base.FILES["response"]) as rsp:
        data = DataIF_COSI_DC2.load("bench", event, {"bkg": bkg}, rsp,
                                    coordsys_conv_matrix=ccm)
    deconv = ImageDeconvolution()
    deconv.set_dataset([data])
    nside = data.model_axes["lb"].nside
    (directory / "rl.yml").write_text(run_file(nside, iterations + 1, init_value(directory)))
    deconv.read_parameterfile(directory / "rl.yml")
    deconv.initialize()
    algo = deconv.deconvolution
    algo.initialization()
    algo.iteration()  # compile + warm-up
    times, loglik = [], []
    for _ in range(iterations):
        t = time.perf_counter()
        algo.iteration()
        times.append(time.perf_counter() - t)
        loglik.append(float(np.sum(algo.results[-1]["log-likelihood"])))
    return {"times": times, "loglik": loglik}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=10, help="timed iterations (default 10)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate pure/shell this many times (default 2)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-shell-") as tmp:
        directory = Path(tmp)
        t = time.perf_counter()
        problem = base.make_problem(8)
        base.write_files(problem, directory, args.iterations)
        del problem
        print(f"problem written in {time.perf_counter() - t:.1f} s", flush=True)
        res: dict[str, list[float]] = {"pure": [], "shell": []}
        logs: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for name, fn in (("pure", time_pure), ("shell", time_shell)):
                out = fn(directory, args.iterations)
                res[name] += out["times"]
                logs[name] = out["loglik"]
                print(f"round {r + 1} {name}: median {np.median(out['times']):.4f} s/it "
                      f"(min {np.min(out['times']):.4f})", flush=True)
    pure, shell = np.median(res["pure"]), np.median(res["shell"])
    same = np.allclose(logs["pure"], logs["shell"], rtol=1e-12, atol=0)
    print(f"\npure step {pure:.4f} s/it, shell iteration {shell:.4f} s/it: "
          f"shell/pure = {shell / pure:.3f} (goal <= 1.05); log-likelihood trajectories "
          f"{'identical to 1e-12' if same else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
