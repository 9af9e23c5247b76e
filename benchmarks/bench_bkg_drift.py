"""A background that drifts by ±20 % over the mission: one scalar normalisation against
time nodes (issue 12, item 1).

Simulates the README's sky (``bulge511``) with a background whose rate follows
``1 + 0.2 sin(2π t / duration)`` while the template given to the fit is flat in time
(``probdeconv simulate --bkg-drift 0.2 --time-chunks 10``: ScAtt bins made within 10
consecutive time intervals, so the data axis runs in time order).  Then fits it with
accelerated RL three ways:

- ``scalar``: one background normalisation for the whole mission (cosipy's model);
- ``nodes``: one per time interval (``nodes`` = the interval edges in bin index);
- ``nodes+walk``: MAP-RL (flat image prior) with the nodes tied by a random walk on
  ``log b`` with 5 % steps.

For each: the fitted normalisations against the true mean drift of their bins, with errors
from the Fisher information of (image, backgrounds) at the fit (``inference.fisher``), the
total sky flux against the truth, with its error (``z`` = (fit − truth) / error), and the
residual counts of each time interval in units of their Poisson error.  A control fits the
same sky and seed without drift with one scalar (what RL's flux is without any drift).

Run: ``python benchmarks/bench_bkg_drift.py [--nside 4] [--seeds 0 1 2] [--out
benchmarks/bkg_drift_nside4.json]`` (a few minutes per seed on two CPU cores at NSIDE 4).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import astropy.units as u
import jax.numpy as jnp
import numpy as np

from probdeconv import AllSkyImageModel, MAP_RichardsonLucy, RichardsonLucy
from probdeconv.inference.fisher import precision_matrix
from probdeconv.shell.problem import problem_from_dataif
from probdeconv.simulate import chunk_edges, simulate, survey_bins

logger = logging.getLogger("bench_bkg_drift")


def _fit(kind: str, data, model0, edges, iterations: int):
    bkg = {"activate": True, "range": {"bkg": [0.1, 10.0]}}
    par = {"iteration_max": iterations,
           "acceleration": {"activate": True, "algorithm": "LineSearch", "alpha_max": 10.0},
           "background_normalization_optimization": bkg}
    if kind != "scalar":
        bkg["nodes"] = {"bkg": edges}
    if kind == "nodes+walk":
        bkg["smoothness"] = 0.05
        par["prior"] = {}
        par["stopping_criteria"] = {"statistics": "log-posterior", "threshold": 1e-3}
        algo = MAP_RichardsonLucy(model0, [data], None, par)
    else:
        par["stopping_criteria"] = {"statistics": "log-likelihood", "threshold": 1e-3}
        algo = RichardsonLucy(model0, [data], None, par)
    algo.initialization()
    while not algo.iteration():
        pass
    return algo


def _errors(algo, data, kind: str, edges: list[int]):
    """Fisher errors (inverse of the Laplace precision of image and backgrounds at the
    fit, the walk's curvature included) of the total flux per energy and of the norms."""
    names = list(algo.dict_bkg_norm)
    opts = dict(bkg_free=True, bkg_norm=[algo.dict_bkg_norm[n] for n in names],
                bkg_range=[[0.1, 10.0]] * len(names))
    if kind != "scalar":
        opts["bkg_nodes"] = {"bkg": edges}
    if kind == "nodes+walk":
        opts["bkg_smoothness"] = 0.05
    problem = problem_from_dataif([data], **opts)
    image = np.asarray(algo.model.contents.to_value("cm-2 s-1 sr-1"))
    theta = np.concatenate([image.ravel()[problem.free_index],
                            [algo.dict_bkg_norm[n] for n in names]])
    prec = precision_matrix(problem, jnp.asarray(theta))
    cov = np.linalg.inv(prec)
    n_pix = problem.n_free
    area = problem.pixel_area
    n_e = image.shape[1]
    flux_sd = []
    for e in range(n_e):
        w = np.zeros(len(theta))
        sel = problem.free_index % n_e == e
        w[np.flatnonzero(sel)] = area
        flux_sd.append(float(np.sqrt(w @ cov @ w)))
    return np.asarray(flux_sd), np.sqrt(np.diag(cov)[n_pix:])


def _chunk_residuals(algo, data, counts, chunk) -> list[float]:
    """``(Σ d − Σ E) / √Σ E`` over the bins of each time interval at the fit."""
    e = np.asarray(algo.bkg_nodes.expectation(data, 0, algo.model, algo.dict_bkg_norm))
    e, d = e.reshape(e.shape[0], -1).sum(axis=1), counts.reshape(counts.shape[0], -1).sum(1)
    return [float((d[chunk == c].sum() - e[chunk == c].sum()) / np.sqrt(e[chunk == c].sum()))
            for c in range(int(chunk.max()) + 1)]


def run(nside: int, seed: int, iterations: int, chunks: int, drift: float, shape: str,
        kinds=("scalar", "nodes", "nodes+walk")) -> dict:
    start = time.perf_counter()
    sim = simulate(sky="bulge511", nside=nside, seed=seed, phi_bins=10, scatt_nside=1,
                   time_chunks=chunks, bkg_drift=drift, bkg_drift_shape=shape)
    bins, chunk, factor = survey_bins(sim.config)
    edges = chunk_edges(chunk)
    true_nodes = [float(np.average(factor[chunk == c], weights=bins.dwell[chunk == c]))
                  for c in range(chunks)]
    true_scalar = float(np.average(factor, weights=bins.dwell))
    area = 4 * np.pi / (12 * nside**2)
    truth = np.asarray(sim.truth.contents.to_value("cm-2 s-1 sr-1")).sum(axis=0) * area
    data = sim.dataif()
    model0 = AllSkyImageModel(nside, sim.config.energy_edges * u.keV)
    model0[:] = 1e-4 * model0.unit
    out = {"nside": nside, "seed": seed, "time_chunks": chunks, "drift": drift, "shape": shape,
           "n_time_bins": int(bins.n_bins), "node_edges": edges, "true_nodes": true_nodes,
           "true_scalar": true_scalar, "true_flux": truth.tolist(), "fits": {}}
    counts = np.asarray(sim.event.contents.todense() if hasattr(sim.event.contents, "todense")
                        else sim.event.contents)
    for kind in kinds:
        t0 = time.perf_counter()
        algo = _fit(kind, data, model0, edges, iterations)
        flux = (np.asarray(algo.model.contents.to_value("cm-2 s-1 sr-1")).sum(axis=0)
                * area)
        flux_sd, bkg_sd = _errors(algo, data, kind, edges)
        norms = [float(v) for v in algo.dict_bkg_norm.values()]
        true_b = [true_scalar] if kind == "scalar" else true_nodes
        out["fits"][kind] = {
            "iterations": algo.iteration_count, "seconds": round(time.perf_counter() - t0, 1),
            "flux": flux.tolist(), "flux_sd": flux_sd.tolist(),
            "flux_z": ((flux - truth) / flux_sd).tolist(),
            "flux_ratio": (flux / truth).tolist(),
            "norms": norms, "norms_sd": bkg_sd.tolist(),
            "norms_z": ((np.asarray(norms) - true_b) / bkg_sd).tolist(),
            "chunk_residual_z": _chunk_residuals(algo, data, counts, chunk),
            "log_likelihood": float(np.sum(algo.results[-1]["log-likelihood"]))}
        f = out["fits"][kind]
        logger.info("drift %g seed %d %-10s %3d it: flux/truth %s (z %s); norms z %s; "
                    "residual z per interval %s", drift, seed, kind, f["iterations"],
                    np.round(f["flux_ratio"], 4), np.round(f["flux_z"], 2),
                    np.round(f["norms_z"], 2), np.round(f["chunk_residual_z"], 1))
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nside", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--chunks", type=int, default=10)
    p.add_argument("--drift", type=float, default=0.2)
    p.add_argument("--shape", choices=("sine", "linear"), default="sine")
    p.add_argument("--out", default=None, help="JSON file for the figures")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    for s in args.seeds:  # the drifting sky, and the same sky without drift (scalar fit)
        results.append(run(args.nside, s, args.iterations, args.chunks, args.drift, args.shape))
        results.append(run(args.nside, s, args.iterations, args.chunks, 0.0, args.shape,
                           kinds=("scalar",)))
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
