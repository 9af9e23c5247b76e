"""Every shipped configuration (``models/*.yml``) on the README's simulated sky: image quality.

Simulates the README's sky (``probdeconv simulate --sky bulge511 --nside 8 --seed 0``, or
reuses ``--sim DIR``), runs each configuration from the command line in its own process
(``probdeconv run`` for the imaging files, ``probdeconv sample`` for the samplers) and
measures what a careful analyst checks:

- total flux of the image (the posterior mean for samplers) against the truth;
- Pearson correlation of image and truth over the pixels;
- each point source: is a local maximum of the image (no brighter neighbour) in its true
  pixel or a neighbour (7.3° pixels at NSIDE 8);
- for runs: how often the maximised statistic (log-posterior if any, else log-likelihood)
  fell, the last change, and whether the stopping rule or the iteration limit ended it;
- for samplers: the largest R-hat and the 90 % interval of the total flux over the draws;
- wall time of the command.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_models.py [--nside 8] [--sim DIR]
        [--out DIR] [--models rl map_rl_tsv ...] [--timeout S] [--json FILE]
        [--set MODEL:KEY=VALUE ...]

Figures are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import healpy as hp
import numpy as np
import yaml

from probdeconv.results.posterior import Posterior
from probdeconv.shell.allsky_image import AllSkyImageModel
from probdeconv.simulate import PointSource, load_simulation

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(p.stem for p in (ROOT / "models").glob("*.yml"))


def sources_found(sim, values: np.ndarray) -> dict[str, bool]:
    """Per point source: a local maximum of the image lies in its true pixel or a neighbour.

    (A local maximum: no neighbour is brighter.)  Over-smoothed images fail it.
    """
    nside = sim.config.nside
    rec = np.asarray(values, float).sum(axis=1)

    def local_max(p: int) -> bool:
        nb = hp.get_all_neighbours(nside, p)
        return bool(rec[p] >= rec[nb[nb >= 0]].max())

    out = {}
    for comp in sim.components:
        if isinstance(comp, PointSource):
            true_pix = int(hp.ang2pix(nside, comp.l, comp.b, lonlat=True))
            near = [true_pix, *(int(p) for p in hp.get_all_neighbours(nside, true_pix)
                                if p >= 0)]
            out[comp.name] = any(local_max(p) for p in near)
    return out


def image_quality(sim, values: np.ndarray) -> dict:
    """Flux ratio, correlation with the truth and point sources found."""
    truth = np.asarray(sim.truth, float)
    found = sources_found(sim, values)
    return {"flux_ratio": float(values.sum() / truth.sum()),
            "correlation": float(np.corrcoef(truth.ravel(), values.ravel())[0, 1]),
            "sources_found": int(sum(found.values())), "sources": len(found)}


def run_figures(out: Path) -> dict:
    """Iterations, falls of the maximised statistic and the last change of a run."""
    with open(out / "iterations.csv") as f:
        rows = list(csv.DictReader(f))
    post = np.array([float(r["log_posterior"]) for r in rows])
    name, stat = ("log-posterior", post) if np.all(np.isfinite(post)) else (
        "log-likelihood", np.array([float(r["log_likelihood"]) for r in rows]))
    diff = np.diff(stat)
    meta = yaml.safe_load((out / "run.yml").read_text()) or {}
    return {"statistic": name, "iterations": len(rows), "falls": int(np.sum(diff < 0)),
            "largest_fall": float(-diff.min()) if np.any(diff < 0) else 0.0,
            "last_change": float(diff[-1]) if diff.size else float("nan"),
            "iteration_max": meta.get("iteration_max"),
            "final": float(stat[-1])}


def bench(model: str, sim_dir: Path, out: Path, sets: list[str], timeout: float) -> dict:
    cfg = ROOT / "models" / f"{model}.yml"
    command = "sample" if "sampling" in (yaml.safe_load(cfg.read_text()) or {}) else "run"
    argv = [sys.executable, "-m", "probdeconv", "--quiet", command, str(cfg), "--data",
            str(sim_dir), "--out", str(out), "--overwrite"]
    for s in sets:
        argv += ["--set", s]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"model": model, "command": command, "seconds": round(timeout, 1),
                "status": f"not finished in {timeout:.0f} s"}
    seconds = time.perf_counter() - t0
    row = {"model": model, "command": command, "seconds": round(seconds, 1),
           "overrides": sets}
    if r.returncode != 0:
        row["status"] = f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}"
        return row
    row["status"] = "ok"
    sim = load_simulation(sim_dir)
    if command == "run":
        values = np.asarray(AllSkyImageModel.open(out / "image.hdf5"), float)
        row.update(run_figures(out))
    else:
        post = Posterior.load(out)
        values = np.asarray(post.mean, float)
        row["max_rhat"] = float(np.nanmax(post.diagnostics().rhat))
        totals = post.store.read("image").sum(axis=(2, 3)).ravel()  # total flux per draw
        q05, q95 = np.quantile(totals, [0.05, 0.95]) / np.asarray(sim.truth, float).sum()
        row["total_flux_90"] = [float(q05), float(q95)]
    row.update(image_quality(sim, values))
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| model | command | s | flux / truth | r | sources | iterations | falls | "
             "last change | note |", "|" + " --- |" * 10]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['model']} | {r['command']} | {r['seconds']} | | | | | | | "
                         f"{r['status']} |")
            continue
        it = (f"{r['iterations']} of {r['iteration_max']}" if "iterations" in r else "")
        falls = (f"{r['falls']} ({r['statistic']})" if "falls" in r else "")
        last = f"{r['last_change']:.3g}" if "last_change" in r else ""
        note = (f"max R-hat {r['max_rhat']:.3f}; total flux 90 % interval "
                f"[{r['total_flux_90'][0]:.3f}, {r['total_flux_90'][1]:.3f}] x truth"
                if "max_rhat" in r else "")
        lines.append(f"| {r['model']} | {r['command']} | {r['seconds']} | "
                     f"{r['flux_ratio']:.3f} | {r['correlation']:.3f} | "
                     f"{r['sources_found']}/{r['sources']} | {it} | {falls} | {last} | {note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nside", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sim", type=Path, help="an existing simulation directory")
    ap.add_argument("--out", type=Path, default=Path("results/bench_models"))
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--set", action="append", default=[], metavar="MODEL:KEY=VALUE",
                    help="override for one model, e.g. nuts:sampling:num_samples=200")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per model")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sim_dir = args.sim or args.out / f"sim_nside{args.nside}"
    if not (sim_dir / "simulation.yml").is_file():
        subprocess.run([sys.executable, "-m", "probdeconv", "--quiet", "simulate", "--sky",
                        "bulge511", "--nside", str(args.nside), "--seed", str(args.seed),
                        "--out", str(sim_dir), "--overwrite"], check=True, cwd=ROOT)
    rows = []
    for model in args.models:
        sets = [s.split(":", 1)[1] for s in args.set if s.split(":", 1)[0] == model]
        row = bench(model, sim_dir, args.out / model, sets, args.timeout)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"nside": args.nside, "sim": str(sim_dir),
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
