"""The cosipy-compatible shell: data interface methods, joint datasets, models, parameters."""

from __future__ import annotations

import astropy.units as u
import healpy as hp
import numpy as np
import pytest
from histpy import Axis, HealpixAxis

from probdeconv import (
    AllSkyImageModel,
    DataIF_COSI_DC2,
    Histogram,
    RichardsonLucy,
    RichardsonLucySimple,
)
from probdeconv.errors import DataError


def _data_axes():
    return [Axis([100, 300, 1000], label="Em", unit="keV"),
            Axis([0, 60, 120, 180], label="Phi", unit="deg"),
            HealpixAxis(nside=1, label="PsiChi", coordsys="galactic")]


def _problem(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    axes = [HealpixAxis(nside=1, label="NuLambda", coordsys="galactic"),
            Axis([100, 500, 1000], label="Ei", unit="keV", scale="log"), *_data_axes()]
    rsp = Histogram(axes, contents=rng.random((12, 2, 2, 3, 12)) * scale, unit="cm2 s")
    ev = Histogram(_data_axes(), contents=rng.poisson(4.0, (2, 3, 12)).astype(float))
    bkg = Histogram(_data_axes(), contents=rng.random((2, 3, 12)) + 0.5)
    return ev, bkg, rsp


def _model(value=1.0):
    m = AllSkyImageModel(1, [100, 500, 1000] * u.keV)
    m[:] = value * m.unit
    return m


def test_dataif_methods_are_consistent():
    ev, bkg, rsp = _problem()
    data = DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp)
    assert tuple(data.model_axes.labels) == ("lb", "Ei")
    assert tuple(data.data_axes.labels) == ("Em", "Phi", "PsiChi")
    assert data.keys_bkg_models() == ["bkg"]
    assert data.summed_bkg_model("bkg") == pytest.approx(float(np.sum(np.asarray(bkg))))
    model = _model(0.3)
    e = data.calc_expectation(model, {"bkg": 2.0})
    sky = data.calc_expectation(model)  # no background
    np.testing.assert_allclose(np.asarray(e) - np.asarray(sky), 2.0 * np.asarray(bkg),
                               rtol=1e-12)
    # adjoint through histograms: <A λ, h> = <λ, Aᵀ h>
    h = Histogram(data.data_axes, contents=np.random.default_rng(3).random((2, 3, 12)))
    t = data.calc_T_product(h)
    lhs = float(np.sum((np.asarray(sky) - 1e-12) * np.asarray(h)))
    assert lhs == pytest.approx(float(np.sum(np.asarray(model) * np.asarray(t))), rel=1e-12)
    assert data.calc_bkg_model_product("bkg", h) == pytest.approx(
        float(np.sum(np.asarray(bkg) * np.asarray(h))), rel=1e-12)
    d = np.asarray(ev)
    want = float(np.sum(d * np.log(np.asarray(e))) - np.sum(np.asarray(e)))
    assert data.calc_log_likelihood(e) == pytest.approx(want, rel=1e-12)
    assert data.calc_loglikelihood(e) == data.calc_log_likelihood(e)


def test_joint_datasets_sum_likelihoods_and_exposures():
    """[A, A] gives A's image (T/S unchanged) and twice A's log-likelihood."""
    ev, bkg, rsp = _problem(1)
    a = DataIF_COSI_DC2.load("a", ev, {"bkg": bkg}, rsp)
    b = DataIF_COSI_DC2.load("b", ev, {"bkg": bkg}, rsp)
    par = {"iteration_max": 5,
           "background_normalization_optimization": {"activate": True}}
    single = RichardsonLucySimple(_model(), [a], None, par)
    joint = RichardsonLucySimple(_model(), [a, b], None, par)
    for algo in (single, joint):
        algo.initialization()
        while not algo.iteration():
            pass
    np.testing.assert_allclose(np.asarray(joint.results[-1]["model"]),
                               np.asarray(single.results[-1]["model"]), rtol=1e-10)
    s_ll = single.results[-1]["log-likelihood"]
    j_ll = joint.results[-1]["log-likelihood"]
    assert len(j_ll) == 2 and j_ll[0] == pytest.approx(s_ll[0], rel=1e-12)
    assert joint.dict_dataset_indexlist_for_bkg_models == {"bkg": [0, 1]}
    np.testing.assert_allclose(np.asarray(joint.calc_summed_exposure_map()),
                               2 * np.asarray(a.exposure_map), rtol=1e-12)


def test_stopping_threshold_stops_early():
    ev, bkg, rsp = _problem(2)
    data = DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp)
    par = {"iteration_max": 50, "stopping_criteria": {"statistics": "log-likelihood",
                                                      "threshold": 1e6}}
    algo = RichardsonLucy(_model(), [data], None, par)
    algo.initialization()
    while not algo.iteration():
        pass
    assert len(algo.results) == 2  # never at iteration 1, then the gain is below 1e6


def test_float32_runs_and_stays_close_to_float64():
    ev, bkg, rsp = _problem(3)
    out = {}
    for dtype in ("float64", "float32"):
        data = DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp, dtype=dtype)
        algo = RichardsonLucySimple(_model(), [data], None, {"iteration_max": 3})
        algo.initialization()
        while not algo.iteration():
            pass
        out[dtype] = algo.results[-1]["log-likelihood"][0]
    assert out["float32"] == pytest.approx(out["float64"], rel=1e-4)


def test_zero_exposure_pixels_are_masked_automatically():
    ev, bkg, rsp = _problem(4)
    c = np.asarray(rsp).copy()
    c[5] = 0.0
    rsp = Histogram(rsp.axes, contents=c, unit=rsp.unit)
    data = DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp)
    algo = RichardsonLucy(_model(), [data], None, {"iteration_max": 2})
    algo.initialization()
    assert not np.asarray(algo.mask)[5].any() and np.asarray(algo.mask)[4].all()
    while not algo.iteration():
        pass
    assert np.all(np.asarray(algo.results[-1]["model"])[5] == 0)


def test_model_from_parameters_mask_and_smoothing():
    m = AllSkyImageModel.instantiate_from_parameters(
        {"nside": 2, "energy_edges": {"value": [100, 500, 1000], "unit": "keV"},
         "scheme": "ring", "coordinate": "galactic", "unit": "cm-2 s-1 sr-1"})
    m.set_values_from_parameters({"algorithm": "flat",
                                  "parameter": {"value": [1.0, 2.0], "unit": "cm-2 s-1 sr-1"}})
    assert m.axes.shape == (48, 2)
    np.testing.assert_array_equal(np.asarray(m)[:, 1], 2.0)
    mask = Histogram(m.axes, contents=np.ones((48, 2), bool))
    mask[0, 0] = False
    masked = m.mask_pixels(mask)
    assert isinstance(masked, AllSkyImageModel) and np.asarray(masked)[0, 0] == 0
    assert np.asarray(m)[0, 0] == 1.0  # the original is untouched
    values = np.random.default_rng(0).random((48, 2))
    m[:] = values * m.unit
    s = m.smoothing(fwhm=20 * u.deg)
    np.testing.assert_allclose(np.asarray(s)[:, 0], hp.smoothing(values[:, 0],
                                                                 fwhm=np.deg2rad(20)))
    s2 = m.smoothing(sigma=20 * u.deg / 2.354820)
    np.testing.assert_allclose(np.asarray(s2), np.asarray(s), rtol=1e-12)


def test_extended_model_without_astromodels_says_so():
    pytest.importorskip("numpy")
    try:
        import astromodels  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install astromodels"):
            _model().set_values_from_extendedmodel(object())
    else:  # pragma: no cover
        pytest.skip("astromodels is installed here")


def test_histpy_objects_and_yayc_configurator_are_accepted(tmp_path):
    histpy = pytest.importorskip("histpy")
    yayc = pytest.importorskip("yayc")
    ev, bkg, rsp = _problem(5)
    ours = DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp)
    for name, h in (("ev", ev), ("bkg", bkg), ("rsp", rsp)):
        h.write(tmp_path / f"{name}.h5")
    theirs = DataIF_COSI_DC2.load(
        "d", histpy.Histogram.open(tmp_path / "ev.h5"),
        {"bkg": histpy.Histogram.open(tmp_path / "bkg.h5")},
        histpy.Histogram.open(tmp_path / "rsp.h5"))
    np.testing.assert_allclose(np.asarray(theirs.exposure_map), np.asarray(ours.exposure_map))
    (tmp_path / "p.yml").write_text("iteration_max: 3\n")
    conf = yayc.Configurator.open(tmp_path / "p.yml")
    algo = RichardsonLucySimple(_model(), [theirs], None, conf)
    algo.initialization()
    while not algo.iteration():
        pass
    assert len(algo.results) == 3


def test_calc_alpha_method_gives_the_step_of_the_iteration():
    """cosipy's ``RichardsonLucy.calc_alpha(delta_model, model)`` is the largest
    non-negative step of the iteration; the iteration takes it, or α = 1 where the
    log-likelihood check of cosipy 0.4.x's default accelerator refuses it."""
    ev, bkg, rsp = _problem(5)
    data = DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp)
    par = {"iteration_max": 3, "acceleration": {"activate": True, "alpha_max": 10.0}}
    algo = RichardsonLucy(_model(), [data], None, par)
    algo.initialization()
    steps = []
    for _ in range(3):
        before = algo.model.copy()
        algo.iteration()
        r = algo.results[-1]
        step = algo.calc_alpha(r["processed_delta_model"], before)
        steps.append(step)
        assert r["alpha"] == 1.0 or r["alpha"] == pytest.approx(step, rel=1e-12)
    assert max(steps) > 1.0  # the acceleration had room
    # cosipy 0.4.3 (RLadvanced, accel_factor_max 10) on these histograms refuses all three
    # steps (accel factor 1.0) and gives these log-likelihoods
    assert [r["alpha"] for r in algo.results] == [1.0, 1.0, 1.0]
    for r, logl in zip(algo.results, [82.31216033799785, 86.65875068309958,
                                      87.23291855570096]):
        assert r["log-likelihood"][0] == pytest.approx(logl, rel=1e-9)
    with pytest.raises(DataError, match="same axes"):
        algo.calc_alpha(np.ones(3), before)
