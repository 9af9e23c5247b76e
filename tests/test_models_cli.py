"""Every shipped configuration (``models/*.yml``) runs from the command line and gives a
good image of a small simulated sky.

The README's sky (``bulge511``: bulge, disk, three point sources) is simulated at NSIDE 4
for the imaging files (run with their own settings) and at NSIDE 2 for the samplers (run
with fewer draws). A good image, stated as checks that can fail:

- imaging: the statistic it maximises (log-posterior if any, else log-likelihood) never
  falls; total flux within 20 % of the truth; correlation with the truth over the pixels
  r >= 0.95; the Crab- and Cygnus-like sources are local maxima within one pixel of their
  positions (at NSIDE 4 the Cen A-like one sits beside the disk); report.md starts with
  its checks;
- samplers: posterior mean flux within 20 % of the truth, r >= 0.95, finite standard
  deviations.

The figures on the README's NSIDE-8 sky are in benchmarks/README.md
(``benchmarks/bench_models.py``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import healpy as hp
import numpy as np
import pytest
import yaml

from probdeconv.cli.main import main
from probdeconv.results.posterior import Posterior
from probdeconv.shell.allsky_image import AllSkyImageModel
from probdeconv.simulate import PointSource, load_simulation

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.yml"))
# fewer draws for the samplers (CI budget); the imaging files run as shipped
LIGHT = {"nuts": ["sampling:num_warmup=100", "sampling:num_samples=100", "sampling:chains=1"],
         "svi": ["sampling:num_steps=300", "sampling:num_samples=100"],
         "laplace": ["sampling:num_samples=100"],
         "bootstrap_rl": ["sampling:num_samples=8"],
         "field_svi": ["sampling:num_steps=300", "sampling:num_samples=100"],
         "mgvi": ["sampling:rounds=3", "sampling:num_samples=100"]}


def _sampler(path: Path) -> bool:
    return "sampling" in (yaml.safe_load(path.read_text()) or {})


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    out = {}
    for nside in (2, 4):
        d = tmp_path_factory.mktemp(f"sim{nside}")
        assert main(["--quiet", "simulate", "--nside", str(nside), "--seed", "0", "--out",
                     str(d), "--overwrite"]) == 0
        out[nside] = d
    return out


def _local_max_near(nside: int, rec: np.ndarray, l: float, b: float) -> bool:
    true_pix = int(hp.ang2pix(nside, l, b, lonlat=True))
    for p in [true_pix, *hp.get_all_neighbours(nside, true_pix)]:
        if p < 0:
            continue
        nb = hp.get_all_neighbours(nside, p)
        if rec[p] >= rec[nb[nb >= 0]].max():
            return True
    return False


def test_every_model_file_is_covered():
    assert len(MODELS) >= 10 and all(p.stem in LIGHT for p in MODELS if _sampler(p))


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_model_runs_from_the_cli_and_gives_a_good_image(path, sims, tmp_path, capsys):
    sampler = _sampler(path)
    nside = 2 if sampler else 4
    out = tmp_path / path.stem
    argv = ["--quiet", "sample" if sampler else "run", str(path), "--data", str(sims[nside]),
            "--out", str(out)]
    for s in LIGHT.get(path.stem, []):
        argv += ["--set", s]
    assert main(argv) == 0, capsys.readouterr().err
    sim = load_simulation(sims[nside])
    truth = np.asarray(sim.truth, float)
    if sampler:
        post = Posterior.load(out)
        values = np.asarray(post.mean, float)
        assert np.all(np.isfinite(np.asarray(post.std, float)[post.mask]))
    else:
        values = np.asarray(AllSkyImageModel.open(out / "image.hdf5"), float)
        with open(out / "iterations.csv") as f:
            rows = list(csv.DictReader(f))
        # point sources fitted beside the image: their fluxes drawn into their pixels, as
        # the truth has them
        for src in (yaml.safe_load(path.read_text())["model_definition"]
                    .get("point_sources") or []):
            pix = int(hp.ang2pix(nside, src["l"], src["b"], lonlat=True))
            for e in range(values.shape[1]):
                values[pix, e] += (float(rows[-1][f"bkg_{src['name']}@E{e}"])
                                   / hp.nside2pixarea(nside))
        post = np.array([float(r["log_posterior"]) for r in rows])
        stat = post if np.all(np.isfinite(post)) else np.array(
            [float(r["log_likelihood"]) for r in rows])
        assert np.all(np.diff(stat) >= -1e-9 * np.abs(stat[1:])), np.diff(stat)
        report = (out / "report.md").read_text()
        assert report.index("## Checks") < report.index("## Summary")
        assert "Total flux: reconstructed" in report
        rec = values.sum(axis=1)
        for comp in sim.components:
            if isinstance(comp, PointSource) and comp.name in ("crab_like", "cygx1_like"):
                assert _local_max_near(nside, rec, comp.l, comp.b), comp.name
    ratio = values.sum() / truth.sum()
    r = np.corrcoef(truth.ravel(), values.ravel())[0, 1]
    sys.stderr.write(f"{path.stem}: flux ratio {ratio:.3f}, r {r:.3f}\n")
    assert 0.8 <= ratio <= 1.2, ratio
    assert r >= 0.95, r
