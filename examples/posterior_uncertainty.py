"""Posterior uncertainty maps for a simulated sky: NUTS, then Laplace for comparison.

    python examples/posterior_uncertainty.py [OUTDIR]

Simulates a small sky (NSIDE 2, point sources), samples the posterior of the image and of
the background normalisation with NUTS, prints the convergence diagnostics and the flux of
a region with its 68 % interval, compares with the Laplace approximation, and writes the
posterior (HDF5, FITS, netCDF) and a report with figures.

What to expect: the four sources give 1.5 % of the counts, the rest is background.  Under a
flat positive prior the 44 empty pixels have posteriors that sit above 0 (they cannot go
below it), their flux is taken from the background and from the bright pixels, so the
bright pixels' means are 10-25 % under the truth and the report's truth figure shows it
(zero-flux pixels are counted apart there).  Four chains of 1000 draws reach R-hat < 1.01
and ESS > 400 for every pixel (two chains of 500 did not: max R-hat 1.012).
"""

from __future__ import annotations

import sys
from pathlib import Path

import healpy as hp
import numpy as np

import probdeconv
from probdeconv.report.posterior import convergence_line
from probdeconv.simulate import simulate


def main(out: str = "results/posterior") -> int:
    sim = simulate(sky="points", nside=2, seed=1, phi_bins=6)
    data = sim.dataif("points")
    problem = probdeconv.problem_from_dataif([data], bkg_free=True,
                                             bkg_range={"bkg": [0.5, 2.0]},
                                             image_prior="gamma", gamma=(1.0, float("inf")))
    post = probdeconv.sample(problem, method="nuts", num_warmup=300, num_samples=1000,
                             chains=4, seed=0)
    print(convergence_line(post.diagnostics().summary()))
    # a 20-degree region around the brightest true pixel
    truth = np.asarray(sim.truth, float).sum(axis=1)
    centre = hp.pix2vec(2, int(np.argmax(truth)))
    region = np.zeros(np.asarray(post.mean_map).shape, bool)
    region[hp.query_disc(2, centre, np.deg2rad(20.0), inclusive=True)] = True
    true_flux = float(truth[region.any(axis=1)].sum() * hp.nside2pixarea(2))
    print(f"region flux, truth: {true_flux:.4g} cm-2 s-1")
    print("region flux (NUTS):", post.region_flux(region, prob=0.68))
    lap = probdeconv.sample(problem, method="laplace", num_samples=1000, seed=0)
    print("region flux (Laplace):", lap.region_flux(region, prob=0.68))
    print("background:", post.bkg_summary())
    post.save(out)
    post.report(out, truth=sim.truth)
    print(f"posterior and report in {Path(out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
