"""cosipy's own figures on cosipy's test files (../shared/cosipy-testdata/README.md)."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from probdeconv import (
    AllSkyImageModel,
    CoordsysConversionMatrix,
    DataIF_COSI_DC2,
    FullDetectorResponse,
    Histogram,
    ImageDeconvolution,
    RichardsonLucy,
)

RL_GALACTIC = {
    "iteration_max": 3,
    "minimum_flux": {"value": 0.0, "unit": "cm-2 s-1 sr-1"},
    "acceleration": {"activate": True, "alpha_max": 10.0},
    "response_weighting": {"activate": True, "index": 0.5},
    "smoothing": {"activate": True, "FWHM": {"value": 2.0, "unit": "deg"}},
    "stopping_criteria": {"statistics": "log-likelihood", "threshold": 1e-2},
    "background_normalization_optimization": {"activate": True, "range": {"bkg": [0.9, 1.1]}},
}




@pytest.mark.parametrize("accel, expected", [(True, 5259.242894137228),
                                             (False, 5226.135408675148)])
def test_galactic_rl_reproduces_cosipy(galactic, accel, expected, tmp_path):
    data, model, mask = galactic
    par = dict(RL_GALACTIC, acceleration={"activate": accel, "alpha_max": 10.0},
               save_results={"activate": True, "directory": str(tmp_path)})
    algo = RichardsonLucy(model, [data], mask, par)
    algo.initialization()
    while not algo.iteration():
        pass
    algo.finalization()
    assert len(algo.results) == 3
    assert algo.results[-1]["log-likelihood"][0] == pytest.approx(expected, rel=1e-9)
    assert algo.results[-1]["background_normalization"]["bkg"] == pytest.approx(1.1)
    # saved results: final map + one group per iteration, and the scalar tables
    final = Histogram.open(tmp_path / "model.hdf5", name="result")
    np.testing.assert_allclose(final.contents.to_value(model.unit),
                               algo.results[-1]["model"].contents.to_value(model.unit))
    Histogram.open(tmp_path / "processed_delta_model.hdf5", name="iteration2")
    with fits.open(tmp_path / "results.fits") as hdul:
        assert hdul["LOG-LIKELIHOOD"].data["galactic"][-1] == pytest.approx(expected, rel=1e-12)
        assert list(hdul["ALPHA"].data["iteration"]) == [1, 2, 3]


def test_galactic_rl_through_image_deconvolution(galactic, tmp_path):
    """Same problem via ImageDeconvolution (masked initial model): close to, not equal."""
    data, model, mask = galactic
    parfile = tmp_path / "rl.yml"
    import yaml

    parfile.write_text(yaml.safe_dump({
        "model_definition": {
            "class": "AllSkyImage",
            "property": {"coordinate": "galactic", "nside": 1, "scheme": "ring",
                         "energy_edges": {"value": model.axes["Ei"].edges.value.tolist(),
                                          "unit": "keV"},
                         "unit": "cm-2 s-1 sr-1"},
            "initialization": {"algorithm": "flat",
                               "parameter": {"value": [1.0] * 10, "unit": "cm-2 s-1 sr-1"}}},
        "deconvolution": {"algorithm": "RL", "parameter": RL_GALACTIC}}))
    deconv = ImageDeconvolution()
    deconv.set_dataset([data])
    deconv.set_mask(mask)
    deconv.read_parameterfile(parfile)
    deconv.initialize()
    assert float(np.asarray(deconv.initial_model)[0, 0]) == 0.0
    results = deconv.run_deconvolution()
    logl = results[-1]["log-likelihood"][0]
    assert logl == pytest.approx(5259.242894137228, rel=1e-3)
    assert logl != pytest.approx(5259.242894137228, rel=1e-9)


@pytest.fixture(scope="module")
def spacecraft(testdata):
    ev = Histogram.open(testdata / "image_deconvolution" / "test_event_histogram_localCDS_scatt.h5")
    ccm = CoordsysConversionMatrix.open(
        testdata / "image_deconvolution" / "ccm_scatt_use_averaged_pointing_True_test.hdf5")
    with FullDetectorResponse.open(testdata / "test_full_detector_response.h5") as rsp:
        data = DataIF_COSI_DC2.load("scatt", ev, {"bkg": ev * 1.0}, rsp,
                                    coordsys_conv_matrix=ccm, is_miniDC2_format=True)
    return data


def test_spacecraft_exposure_sum(spacecraft):
    s = spacecraft.exposure_map
    assert s.unit == u.cm**2 * u.s * u.sr
    assert float(np.sum(np.asarray(s))) == pytest.approx(1186.8157660918853, rel=1e-12)


def test_spacecraft_rl_trajectory(spacecraft):
    model = AllSkyImageModel(1, spacecraft.model_axes["Ei"].edges)
    model[:] = 1.0 * model.unit
    par = {"iteration_max": 3, "acceleration": {"activate": True, "alpha_max": 10.0},
           "response_weighting": {"activate": True, "index": 0.5},
           "stopping_criteria": {"statistics": "log-likelihood", "threshold": 1e-2},
           "background_normalization_optimization": {"activate": True,
                                                     "range": {"bkg": [0.9, 1.1]}}}
    algo = RichardsonLucy(model, [spacecraft], None, par)
    algo.initialization()
    while not algo.iteration():
        pass
    expected = [(3021.5009184824, 1.4019, 0.903583), (3113.8874979921, 1.9901, 0.952003),
                (3139.2903622194, 2.3198, 0.975036)]
    assert len(algo.results) == 3
    for r, (logl, alpha, bkg) in zip(algo.results, expected):
        assert r["log-likelihood"][0] == pytest.approx(logl, abs=1e-9)
        assert r["alpha"] == pytest.approx(alpha, abs=5e-5)
        assert r["background_normalization"]["bkg"] == pytest.approx(bkg, abs=5e-7)


def test_sparse_and_dense_full_detector_response_agree(testdata):
    with FullDetectorResponse.open(testdata / "test_full_detector_response.h5") as sp, \
            FullDetectorResponse.open(testdata / "test_full_detector_response_dense.h5") as de:
        assert sp.is_sparse and not de.is_sparse
        a, b = sp.to_image_response(), de.to_image_response()
    assert tuple(a.axes.labels) == ("NuLambda", "Ei", "Em", "Phi", "PsiChi")
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    assert a.unit == u.cm**2


def test_cosipy_parameter_file_runs_end_to_end(testdata, galactic):
    data, model, mask = galactic
    deconv = ImageDeconvolution()
    deconv.set_dataset([data])
    deconv.read_parameterfile(testdata / "image_deconvolution" /
                              "imagedeconvolution_parfile_test.yml")
    deconv.override_parameter("deconvolution:parameter:iteration_max = 4")
    deconv.initialize()
    results = deconv.run_deconvolution()
    assert [r["iteration"] for r in results] == [1, 2, 3, 4]
    logl = [r["log-likelihood"][0] for r in results]
    assert all(b >= a for a, b in zip(logl, logl[1:]))  # RLsimple: monotone


def test_cosipy_image_model_file_opens(testdata, tmp_path):
    m = AllSkyImageModel.open(testdata / "image_deconvolution" /
                              "all_sky_image_model_test_nside1.hdf5")
    assert isinstance(m, AllSkyImageModel)
    assert m.axes.nbins == (12, 1) and m.nside == 1
    m.write(tmp_path / "m.h5")
    back = AllSkyImageModel.open(tmp_path / "m.h5")
    np.testing.assert_array_equal(np.asarray(back), np.asarray(m))
    assert back.unit == m.unit
