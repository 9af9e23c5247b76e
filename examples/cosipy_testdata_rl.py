"""Quick start on cosipy's own test files: accelerated RL in both data spaces.

Run with ``make demo`` (or ``python examples/cosipy_testdata_rl.py [TESTDATA] [OUTDIR]``).
It prints the log-likelihood of each iteration, writes the images (histpy HDF5, one
group per iteration), a FITS table of the per-iteration scalars and a Mollweide PNG.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import healpy as hp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from probdeconv import (  # noqa: E402
    AllSkyImageModel,
    CoordsysConversionMatrix,
    DataIF_COSI_DC2,
    FullDetectorResponse,
    Histogram,
    RichardsonLucy,
)

HERE = Path(__file__).resolve().parent
TESTDATA = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "shared" / \
    "cosipy-testdata"
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("results") / "demo"

PARAMETERS = {
    "iteration_max": 10,
    "acceleration": {"activate": True, "alpha_max": 10.0},
    "response_weighting": {"activate": True, "index": 0.5},
    "stopping_criteria": {"statistics": "log-likelihood", "threshold": 1e-2},
    "background_normalization_optimization": {"activate": True, "range": {"bkg": [0.9, 1.1]}},
}


def run(name, data, mask=None, **extra):
    model = AllSkyImageModel(data.model_axes["lb"].nside, data.model_axes["Ei"].edges)
    model[:] = 1.0 * model.unit
    par = dict(PARAMETERS, **extra,
               save_results={"activate": True, "directory": str(OUT / name)})
    algo = RichardsonLucy(model, [data], mask, par)
    algo.initialization()
    while not algo.iteration():
        r = algo.results[-1]
        print(f"  {name} iteration {r['iteration']:2d}: log-likelihood "
              f"{r['log-likelihood'][0]:.10f}  alpha {r['alpha']:.4f}  "
              f"background {r['background_normalization']['bkg']:.6f}")
    algo.finalization()
    final = algo.results[-1]
    print(f"  {name}: {final['iteration']} iterations, final log-likelihood "
          f"{final['log-likelihood'][0]:.10f}")
    image = np.asarray(final["model"]).sum(axis=1)
    hp.mollview(image, title=f"{name}: RL image summed over energy", unit=str(model.unit))
    plt.savefig(OUT / name / "image.png", dpi=80)
    plt.close("all")
    return algo


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    if not TESTDATA.exists():
        print(f"cosipy test data not found at {TESTDATA}; pass its path as first argument.")
        return 2
    OUT.mkdir(parents=True, exist_ok=True)

    print("Galactic data space (precomputed response):")
    ev = Histogram.open(TESTDATA / "test_event_histogram_galacticCDS.hdf5")
    ev = ev.project(["Em", "Phi", "PsiChi"])
    rsp = Histogram.open(TESTDATA / "test_precomputed_response.h5")
    data = DataIF_COSI_DC2.load("galactic", ev, {"bkg": ev * 0.1}, rsp)
    run("galactic", data, smoothing={"activate": True, "FWHM": {"value": 2.0, "unit": "deg"}})

    print("Spacecraft frame (full detector response + coordinate-conversion matrix):")
    ev = Histogram.open(TESTDATA / "image_deconvolution" / "test_event_histogram_localCDS_scatt.h5")
    ccm = CoordsysConversionMatrix.open(
        TESTDATA / "image_deconvolution" / "ccm_scatt_use_averaged_pointing_True_test.hdf5")
    with FullDetectorResponse.open(TESTDATA / "test_full_detector_response.h5") as frsp:
        data = DataIF_COSI_DC2.load("spacecraft", ev, {"bkg": ev * 1.0}, frsp,
                                    coordsys_conv_matrix=ccm)
    run("spacecraft", data)
    print(f"Results (HDF5 images, results.fits, image.png) are in {OUT.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
