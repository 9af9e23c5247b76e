"""The main demo (``make demo``): simulate a 511 keV sky, reconstruct it with RL and MAP-RL.

1. ``probdeconv simulate --sky bulge511 --nside 8`` : instrument, survey, sky, counts;
2. ``probdeconv run models/rl.yml`` and ``probdeconv run models/map_rl_tsv.yml`` as
   shipped (LineSearch acceleration, stopping when an iteration gains less than 0.5):
   images, curves, residuals, report.md;
3. recovery figures: total flux against the truth, and for each point source its
   expected significance and the distance of the reconstructed peak from its position.

    python examples/demo_511.py [OUTDIR] [--iterations N (default: as the files say)]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import healpy as hp
import numpy as np

from probdeconv.cli.main import main as cli
from probdeconv.shell.allsky_image import AllSkyImageModel
from probdeconv.simulate import PointSource, load_simulation

ROOT = Path(__file__).resolve().parents[1]


def recovery(sim, image) -> list[str]:
    """Total flux ratio and point-source positions of a reconstruction."""
    truth = np.asarray(sim.truth, float).sum(axis=1)
    rec = np.asarray(image, float).sum(axis=1)
    lines = [f"total flux: reconstructed {rec.sum():.4g}, true {truth.sum():.4g} cm-2 s-1 sr-1 "
             f"summed over pixels (ratio {rec.sum() / truth.sum():.3f})"]
    nside = sim.config.nside
    sig = sim.detection_significance()
    pix_size = hp.nside2resol(nside, arcmin=True) / 60.0
    for comp in sim.components:
        if not isinstance(comp, PointSource):
            continue
        true_pix = hp.ang2pix(nside, comp.l, comp.b, lonlat=True)
        near = hp.query_disc(nside, hp.ang2vec(comp.l, comp.b, lonlat=True),
                             np.deg2rad(2.5 * pix_size))
        peak = near[np.argmax(rec[near])]
        neighbours = set(hp.get_all_neighbours(nside, true_pix).tolist()) | {true_pix}
        dist = np.rad2deg(hp.rotator.angdist(hp.pix2ang(nside, peak), hp.pix2ang(nside, true_pix)))
        found = "found" if peak in neighbours else "NOT found"
        lines.append(f"{comp.name}: expected significance {sig.get(comp.name, 0):.1f} sigma, "
                     f"peak {float(np.squeeze(dist)):.1f} deg from the true position ({found} "
                     f"within one pixel of {pix_size:.1f} deg)")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="probdeconv demo: 511 keV sky, RL and MAP-RL")
    ap.add_argument("out", nargs="?", default="results/demo511")
    ap.add_argument("--iterations", type=int, default=None,
                    help="iteration_max (default: the configuration's)")
    ap.add_argument("--nside", type=int, default=8)
    args = ap.parse_args(argv)
    out = Path(args.out)
    sim_dir = out / "sim"
    if not (sim_dir / "simulation.yml").is_file():
        print(f"[1/3] simulating a 511 keV sky at NSIDE {args.nside} in {sim_dir} ...")
        rc = cli(["--quiet", "simulate", "--sky", "bulge511", "--nside", str(args.nside),
                  "--seed", "0", "--out", str(sim_dir), "--overwrite"])
        if rc:
            return rc
    sim = load_simulation(sim_dir)
    runs = [("rl", "rl.yml"), ("map_rl", "map_rl_tsv.yml")]  # the shipped files, unchanged
    summary = []
    for i, (name, cfg) in enumerate(runs, start=2):
        print(f"[{i}/3] {name}: probdeconv run models/{cfg} ...")
        argv = ["--quiet", "run", str(ROOT / "models" / cfg), "--data", str(sim_dir),
                "--out", str(out / name), "--overwrite"]  # the demo redoes its runs
        if args.iterations is not None:
            argv += ["--set", f"deconvolution:parameter:iteration_max={args.iterations}"]
        rc = cli(argv)
        if rc:
            return rc
        image = AllSkyImageModel.open(out / name / "image.hdf5")
        with open(out / name / "iterations.csv") as f:
            done = sum(1 for _ in f) - 1
        lines = [f"{done} iterations", *recovery(sim, image)]
        summary += [f"## {name}", *lines, ""]
        for line in lines:
            print("   ", line)
    text = "# probdeconv demo: 511 keV sky\n\n" + "\n".join(summary)
    (out / "summary.md").write_text(text)
    print(f"Maps, figures and reports: {(out / 'rl').resolve()}/report.md, "
          f"{(out / 'map_rl').resolve()}/report.md; summary {(out / 'summary.md').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
