"""Shared fixtures: the cosipy test files (skipped when absent) and tiny synthetic problems."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# no test depends on compiled programs an earlier run left on disk (set it to opt in)
os.environ.setdefault("PROBDECONV_JAX_CACHE", "off")

import probdeconv  # noqa: E402, F401  (switches JAX to float64)

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "cosipy-testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """Directory of cosipy's small test files (``../shared/cosipy-testdata``)."""
    if not (TESTDATA / "test_precomputed_response.h5").exists():
        pytest.skip(f"cosipy test data not found at {TESTDATA} (expected ../shared beside the "
                    "checkout, as in CI)")
    return TESTDATA


@pytest.fixture(scope="session")
def galactic(testdata):
    """cosipy's galactic test problem: data, flat model, mask (pixel 0 of energy bin 0 off)."""
    from probdeconv import AllSkyImageModel, DataIF_COSI_DC2, Histogram

    ev = Histogram.open(testdata / "test_event_histogram_galacticCDS.hdf5")
    ev = ev.project(["Em", "Phi", "PsiChi"])
    rsp = Histogram.open(testdata / "test_precomputed_response.h5")
    data = DataIF_COSI_DC2.load("galactic", ev, {"bkg": ev * 0.1}, rsp)
    model = AllSkyImageModel(1, rsp.axes["Ei"].edges)
    model[:] = 1.0 * model.unit
    mask = Histogram(model.axes, contents=np.ones(model.axes.shape, bool))
    mask[0, 0] = False
    return data, model, mask


def synthetic_arrays(seed: int = 0, local: bool = False, n_pix: int = 12, n_e: int = 2,
                     data_shape=(2, 3, 12), n_t: int = 3, n_bkg: int = 1):
    """Random counts, response, backgrounds (and CCM) of a tiny problem."""
    rng = np.random.default_rng(seed)
    response = rng.random((n_pix, n_e, *data_shape)) * (rng.random((n_pix, n_e, *data_shape))
                                                        > 0.3)
    shape = ((n_t,) if local else ()) + tuple(data_shape)
    counts = rng.poisson(3.0, shape).astype(float)
    bkgs = [rng.random(shape) + 0.1 for _ in range(n_bkg)]
    ccm = None
    if local:
        t = np.repeat(np.arange(n_t), n_pix * 4)
        l = np.tile(np.repeat(np.arange(n_pix), 4), n_t)
        v = rng.integers(0, n_pix, t.size)
        ccm = (np.array([t, l, v]), rng.random(t.size) * 10.0)
    return counts, response, bkgs, ccm
