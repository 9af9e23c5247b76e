"""The field prior with learnt power spectrum against fixed TSV weights, and its calibration.

Two benchmarks (figures in benchmarks/README.md, "Field prior"):

- ``recovery``: a simulated diffuse sky (``probdeconv.simulate``: broad bulge, thick disk,
  isotropic part; no point sources) at NSIDE 4; the field prior's posterior mean (MGVI and
  NUTS) against gradient MAPs with a fixed TSV weight (several weights).  Error figures:
  relative L2 of the image, Pearson r, and the flux of three regions (inner Galaxy
  ``|l| < 30°, |b| < 15°``, rest of the plane ``|b| < 15°``, high latitudes) against the truth.
- ``calibration``: skies drawn from the field prior itself (NSIDE 2, a smooth-PSF response
  over the pixels), coverage of the 68 % / 95 % equal-tailed intervals of every pixel by
  NUTS and MGVI.

Run: ``.venv/bin/python benchmarks/bench_field.py recovery`` (or ``calibration --skies 10``);
writes ``benchmarks/field_<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import healpy as hp
import jax.numpy as jnp
import numpy as np

from probdeconv.forward import make_dataset
from probdeconv.forward.field import build_field, field_log_flux
from probdeconv.forward.problem import ImageGrid, Problem
from probdeconv.inference.sampling import sample_draws
from probdeconv.inference.start import find_map
from probdeconv.shell.problem import problem_from_parameters
from probdeconv.simulate import simulate

HERE = Path(__file__).resolve().parent
DIFFUSE = (
    {"kind": "gaussian", "name": "bulge", "flux": 2.0e-3, "line": 511.0, "l": 0.0, "b": 0.0,
     "fwhm_l": 30.0, "fwhm_b": 25.0},
    {"kind": "gaussian", "name": "disk", "flux": 3.0e-3, "line": 511.0, "l": 0.0, "b": 0.0,
     "fwhm_l": 160.0, "fwhm_b": 20.0},
    {"kind": "isotropic", "name": "iso", "flux": 5.0e-4, "line": 511.0},
)
BKG = {"background": {"free": True, "range": {"bkg": [0.01, 10.0]}}}


def _regions(nside: int) -> dict[str, np.ndarray]:
    l, b = hp.pix2ang(nside, np.arange(12 * nside**2), lonlat=True)
    l = (l + 180.0) % 360.0 - 180.0
    inner = (np.abs(l) < 30) & (np.abs(b) < 15)
    plane = (np.abs(b) < 15) & ~inner
    return {"inner": inner, "plane": plane, "high_latitude": np.abs(b) >= 15}


def _figures(image: np.ndarray, truth: np.ndarray, regions, area: float) -> dict:
    img, tru = image.sum(axis=1), truth.sum(axis=1)
    out = {"relative_l2": float(np.linalg.norm(img - tru) / np.linalg.norm(tru)),
           "r": float(np.corrcoef(img, tru)[0, 1]),
           "total_ratio": float(img.sum() / tru.sum())}
    for name, sel in regions.items():
        out[f"{name}_flux_ratio"] = float(img[sel].sum() / tru[sel].sum())
    return out


def recovery(nside: int, seed: int, tsv: list[float], nuts: bool) -> dict:
    sim = simulate(sky=list(DIFFUSE), nside=nside, seed=seed, phi_bins=6)
    data = sim.dataif()
    truth = np.asarray(sim.truth, float)
    regions = _regions(nside)
    results = {"nside": nside, "seed": seed, "truth_total": float(truth.sum())}
    field = problem_from_parameters([data], {"image": {"kind": "field"}, **BKG})
    runs = [("field_mgvi", "mgvi", {"num_samples": 400})]
    if nuts:
        runs.append(("field_nuts", "nuts", {"num_warmup": 300, "num_samples": 300,
                                            "chains": 1}))
    for name, method, opts in runs:
        t0 = time.perf_counter()
        d = sample_draws(field, method, progress_bar=False, **opts)
        mean = d.store.mean("image")
        results[name] = _figures(mean, truth, regions, field.pixel_area)
        results[name].update(seconds=time.perf_counter() - t0,
                             amplitude=float(d.store.mean("field.amplitude")),
                             slope=float(d.store.mean("field.slope")))
        print(name, results[name], flush=True)
    for c in tsv:
        p = problem_from_parameters([data], {"image": {"kind": "flat"}, **BKG,
                                             "TSV": {"coefficient": c}})
        t0 = time.perf_counter()
        res = find_map(p, max_iterations=1000)
        key = f"tsv_map_{c:g}"
        results[key] = _figures(np.asarray(res.image), truth, regions, p.pixel_area)
        results[key]["seconds"] = time.perf_counter() - t0
        print(key, results[key], flush=True)
    return results


def _prior_problem(nside: int, rng) -> tuple[Problem, np.ndarray]:
    npix = 12 * nside**2
    v = np.array(hp.pix2vec(nside, np.arange(npix))).T
    psf = np.exp(4.0 * (v @ v.T))
    psf /= psf.sum(axis=1, keepdims=True)
    resp = (3e4 * psf)[:, None, None, None, :]
    prior = build_field(nside, 1, offset_loc=np.log(1e-2), offset_scale=1.0)
    x = rng.standard_normal(prior.size)
    truth = np.exp(np.asarray(field_log_flux(jnp.asarray(x), prior)))
    area = 4 * np.pi / npix
    counts = rng.poisson(truth[:, 0] @ resp[:, 0, 0, 0, :] * area)[None, None, :].astype(float)
    ds = make_dataset(counts, resp, pixel_area=area)
    p = Problem.from_datasets([ds], image_prior="field", field=prior,
                              grid=ImageGrid(nside, (500.0, 520.0)))
    return p, truth


def calibration(nside: int, skies: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    hits = {m: {"68": [], "95": []} for m in ("nuts", "mgvi")}
    hyper = {m: [] for m in hits}
    for k in range(skies):
        p, truth = _prior_problem(nside, rng)
        for m, opts in (("nuts", {"num_warmup": 300, "num_samples": 400, "chains": 1}),
                        ("mgvi", {"num_samples": 400})):
            d = sample_draws(p, m, progress_bar=False, seed=k, **opts)
            draws = d.store.read("image")[0]  # [n, pix, 1]
            for prob, key in ((0.68, "68"), (0.95, "95")):
                lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
                hits[m][key].append(float(np.mean((truth >= lo) & (truth <= hi))))
            hyper[m].append(float(d.store.mean("field.amplitude")))
        print(k, {m: {q: v[-1] for q, v in h.items()} for m, h in hits.items()}, flush=True)
    return summarise(nside, hits, hyper)


def summarise(nside: int, hits: dict, hyper: dict) -> dict:
    """Coverage per method and level: the mean over skies, the binomial σ as if every pixel
    were independent, and the standard error from the spread between skies (the pixels of
    one sky share its field, so their hits are correlated: this is the honest error)."""
    n_pix = 12 * nside**2
    skies = len(next(iter(hits.values()))["68"])
    out = {"nside": nside, "skies": skies, "pixels_per_sky": n_pix, "methods": {}}
    for m, h in hits.items():
        rec = out["methods"][m] = {}
        for key, values in h.items():
            prob = int(key) / 100
            v = np.asarray(values)
            rec[f"coverage_{key}"] = float(v.mean())
            rec[f"binomial_sigma_{key}"] = float(np.sqrt(prob * (1 - prob) / (skies * n_pix)))
            rec[f"sky_standard_error_{key}"] = float(v.std(ddof=1) / np.sqrt(skies))
            rec[f"per_sky_{key}"] = [float(x) for x in v]
        rec["mean_amplitude"] = float(np.mean(hyper[m]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=("recovery", "calibration"))
    ap.add_argument("--nside", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skies", type=int, default=10)
    ap.add_argument("--tsv", type=float, nargs="*", default=[1e5, 1e6, 1e7, 1e8])
    ap.add_argument("--no-nuts", action="store_true")
    args = ap.parse_args()
    if args.which == "recovery":
        res = recovery(args.nside or 4, args.seed, args.tsv, not args.no_nuts)
    else:
        res = calibration(args.nside or 2, args.skies, args.seed)
    path = HERE / f"field_{args.which}.json"
    path.write_text(json.dumps(res, indent=1))
    print(f"written {path}")


if __name__ == "__main__":
    main()
