"""A bright point source on a diffuse bulge: fitted beside the image, or left to the image.

Simulates a 511 keV Gaussian bulge (FWHM 30°, 1e-3 ph cm-2 s-1 at the Galactic centre) and
a point source of the same flux at (l, b) = (17°, 9°) on its wing, at its exact direction
(``probdeconv simulate --sky ... --point-source 17,9,1e-3``; NSIDE 8, 10 Phi bins, ScAtt
NSIDE 1), then fits

- ``rl``: ``models/rl.yml`` as shipped, no point source (the image must take it);
- ``rl+ps``: the same with ``model_definition:point_sources`` at the true position (the
  spacecraft-frame response interpolated from the CCM rows, what a YAML run does);
- ``rl+ps exact``: the same with the source direction rotated per ScAtt attitude;
- ``map_rl TSV``: ``models/map_rl_tsv.yml`` with the TSV coefficient ``--tsv``, without
  and with the source (exact);
- ``laplace TSV``: Laplace posterior with a TSV prior (coefficient ``--tsv``, background
  free), with the point source (exact) and without; the point source's flux and the
  image flux near it with their standard deviations; with ``--flat`` also the flat image
  prior with the point source (the error of the unregularised fit's flux).

For each fit: the image flux within ``--radius`` degrees of the source (truth: the bulge
there) and over the whole sky, and the source's fitted flux (truth 1e-3).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_point_sources.py [--nside 8]
        [--seed 1] [--tsv 1e6] [--no-laplace] [--flat] [--json FILE]

Figures are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import healpy as hp
import numpy as np

import probdeconv as pd
from probdeconv import ImageDeconvolution
from probdeconv.io.atomic import atomic_target
from probdeconv.shell.problem import problem_from_parameters
from probdeconv.simulate import simulate
from probdeconv.simulate.point_sources import point_source_truth, scatt_attitudes

SOURCE = {"name": "bright", "l": 17.0, "b": 9.0}
BULGE = {"kind": "gaussian", "name": "bulge", "flux": 1.0e-3, "line": 511.0, "l": 0.0,
         "b": 0.0, "fwhm_l": 30.0, "fwhm_b": 30.0}
ROOT = Path(__file__).resolve().parents[1]


def _values(h) -> np.ndarray:
    c = h.contents
    return np.asarray(getattr(c, "value", c), dtype=np.float64)


def _fluxes(image: np.ndarray, nside: int, disc: np.ndarray) -> tuple[float, float]:
    area = 4 * np.pi / hp.nside2npix(nside)
    return float(image[disc].sum() * area), float(image.sum() * area)


def _run_rl(data, nside: int, model: str = "rl", tsv: float = 0.0
            ) -> tuple[np.ndarray, dict, int, float]:
    start = time.perf_counter()
    deconv = ImageDeconvolution()
    deconv.set_dataset([data])
    deconv.read_parameterfile(ROOT / "models" / f"{model}.yml")
    deconv.override_parameter(f"model_definition:property:nside = {nside}")
    if tsv > 0:
        deconv.override_parameter(f"deconvolution:parameter:prior:TSV:coefficient = {tsv!r}")
    deconv.initialize()
    res = deconv.run_deconvolution(progress=False)
    return (_values(res[-1]["model"]), dict(res[-1]["background_normalization"]), len(res),
            time.perf_counter() - start)


def _laplace(data, tsv: float, disc: np.ndarray, nside: int, draws: int) -> dict:
    start = time.perf_counter()
    prior = {"background": {"free": True, "range": {"bkg": [0.5, 2.0]}}}
    if tsv > 0:
        prior["TSV"] = {"coefficient": tsv}
    post = pd.sample(problem_from_parameters([data], prior), method="laplace",
                     num_samples=draws)
    area = 4 * np.pi / hp.nside2npix(nside)
    images = post.store.read("image")[..., 0]  # [chain, draw, lb] (one Ei bin)
    near = images[..., disc].sum(axis=-1).ravel() * area
    total = images.sum(axis=-1).ravel() * area
    out = {"near_mean": float(near.mean()), "near_std": float(near.std(ddof=1)),
           "total_mean": float(total.mean()), "total_std": float(total.std(ddof=1)),
           "seconds": time.perf_counter() - start}
    summary = post.bkg_summary()
    if "bright@E0" in summary:
        out["ps_mean"] = float(summary["bright@E0"]["mean"])
        out["ps_std"] = float(summary["bright@E0"]["std"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nside", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--flux", type=float, default=1e-3, help="point-source flux")
    ap.add_argument("--radius", type=float, default=15.0, help="deg around the source")
    ap.add_argument("--tsv", type=float, default=1e6)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--no-laplace", action="store_true")
    ap.add_argument("--flat", action="store_true",
                    help="also a Laplace fit with the point source and a flat image prior")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    t0 = time.perf_counter()
    src = {**SOURCE, "flux": args.flux}
    sim = simulate(sky=[BULGE], nside=args.nside, seed=args.seed, phi_bins=10, scatt_nside=1,
                   point_sources=[src])
    print(f"simulated {sim.event.contents.sum():.0f} counts in {time.perf_counter() - t0:.0f} s;"
          f" truth {point_source_truth(sim.config)}", flush=True)
    vec = hp.ang2vec(SOURCE["l"], SOURCE["b"], lonlat=True)
    disc = hp.query_disc(args.nside, vec, np.radians(args.radius))
    truth_near, truth_total = _fluxes(_values(sim.truth)[:, 0], args.nside, disc)
    rows = {"truth": {"near": truth_near, "total": truth_total, "ps": args.flux}}
    base = sim.dataif()
    position = [{"name": "bright", "l": SOURCE["l"], "b": SOURCE["b"]}]
    fits = {"rl": base, "rl+ps": base.with_point_sources(position),
            "rl+ps exact": base.with_point_sources(position,
                                                   attitudes=scatt_attitudes(sim.scatt))}
    runs = [(name, data, "rl", 0.0) for name, data in fits.items()]
    runs += [("map_rl TSV", base, "map_rl_tsv", args.tsv),
             ("map_rl TSV+ps exact", fits["rl+ps exact"], "map_rl_tsv", args.tsv)]
    for name, data, model, tsv in runs:
        image, norms, n_iter, sec = _run_rl(data, args.nside, model, tsv)
        near, total = _fluxes(image[:, 0], args.nside, disc)
        rows[name] = {"near": near, "total": total, "ps": norms.get("bright@E0"),
                      "bkg": norms["bkg"], "iterations": n_iter, "seconds": sec}
        print(name, json.dumps(rows[name]), flush=True)
    if not args.no_laplace:
        runs = [("laplace TSV", base, args.tsv), ("laplace TSV+ps", fits["rl+ps exact"], args.tsv)]
        if args.flat:
            runs.append(("laplace flat+ps", fits["rl+ps exact"], 0.0))
        for name, data, tsv in runs:
            rows[name] = _laplace(data, tsv, disc, args.nside, args.draws)
            print(name, json.dumps(rows[name]), flush=True)
    if args.json:
        with atomic_target(args.json, True, "benchmark results") as tmp:
            tmp.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)},
                                       "source": src, "bulge": BULGE, "results": rows},
                                      indent=1))


if __name__ == "__main__":
    main()
