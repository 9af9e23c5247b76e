"""cosipy drop-in behaviour that cosipy's own tests check (issue 10, part 2).

Each test states the cosipy behaviour it pins down; the reference figures are those of
cosipy's tests on ``../shared/cosipy-testdata`` (benchmarks/run_cosipy_tests.py runs those
tests themselves against probdeconv).
"""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.coordinates import SkyCoord
from astropy.time import Time
from yayc import Configurator

import probdeconv
from probdeconv import (
    AllSkyImageModel,
    DataError,
    DeconvolutionAlgorithmBase,
    ImageDeconvolution,
    ImageDeconvolutionDataInterfaceBase,
    ModelBase,
    ParameterError,
    RichardsonLucy,
    RichardsonLucyAdvanced,
    RichardsonLucyBasic,
    RichardsonLucySimple,
)
from probdeconv.config import validate_algorithm_parameters, validate_run_parameters
from probdeconv.spacecraft import SpacecraftAttitudeExposureTable, SpacecraftFile

ORI10 = "20280301_first_10sec.ori"
CRAB = SkyCoord(l=184.5551, b=-5.7877, unit=(u.deg, u.deg), frame="galactic")
# cosipy's figures (its tests/spacecraftfile/test_spacecraftfile.py)
CRAB_LON = [118.393522, 118.425255, 118.456868, 118.488362, 118.519735, 118.550989,
            118.582124, 118.613139, 118.644035, 118.674813, 118.705471]
CRAB_LAT = [46.733430, 46.687559, 46.641664, 46.595745, 46.549801, 46.503833, 46.457841,
            46.411825, 46.365785, 46.319722, 46.273634]
CRAB_DWELL = [1.895057, 7.615584, 0.244679, 0.244679] + [0.0] * 8


def _concrete(cls):
    """A subclass of ``cls`` with its abstract methods left as they are (not the class)."""
    sub = type(f"Concrete{cls.__name__}", (cls,), {})
    sub.__abstractmethods__ = frozenset()
    return sub


# ------------------------------------------------------------ A3: abstract methods
def test_data_interface_base_methods_raise_not_implemented():
    data = _concrete(ImageDeconvolutionDataInterfaceBase)("dataname")
    assert (data.name, data.event, data.exposure_map, data.model_axes) == ("dataname", None,
                                                                          None, None)
    for call in (lambda: data.calc_expectation(None, {"b": 1}),
                 lambda: data.calc_T_product(None),
                 lambda: data.calc_bkg_model_product("b", None),
                 lambda: data.calc_log_likelihood(None),
                 lambda: data.calc_loglikelihood(None)):
        with pytest.raises(NotImplementedError):
            call()


def test_model_base_methods_raise_not_implemented():
    cls = _concrete(ModelBase)
    model = cls([0, 1])
    with pytest.raises(NotImplementedError):
        cls.instantiate_from_parameters({})
    with pytest.raises(NotImplementedError):
        model.set_values_from_parameters({})


def test_algorithm_base_with_empty_parameters_and_its_hooks(galactic):
    """cosipy builds the base with ``Configurator({})``; every hook then raises."""
    data, model, mask = galactic
    algo = _concrete(DeconvolutionAlgorithmBase)(initial_model=model, dataset=[data],
                                                 mask=mask, parameter=Configurator({}))
    assert algo.iteration_max == 1 and algo.dict_bkg_norm == {"bkg": 1.0}
    assert algo.results == [] and algo.iteration_count == 0
    for hook in ("initialization", "pre_processing", "Estep", "Mstep", "processing_core",
                 "post_processing", "register_result", "check_stopping_criteria",
                 "finalization"):
        with pytest.raises(NotImplementedError):
            getattr(algo, hook)()
    with pytest.raises(NotImplementedError):
        algo.iteration()


def test_registered_algorithms_still_validate_their_parameters(galactic):
    data, model, mask = galactic
    with pytest.raises(ParameterError, match="iteraton_max.*did you mean 'iteration_max'"):
        RichardsonLucy(model, [data], mask, {"iteraton_max": 3})


# ------------------------------------------------- C2-C4: SpacecraftFile, cosipy <= 0.3
@pytest.fixture(scope="module")
def ori(testdata):
    return SpacecraftFile.parse_from_file(testdata / ORI10)


def test_target_in_sc_frame_both_signatures(ori):
    old = ori.get_target_in_sc_frame("Crab", CRAB)  # cosipy <= 0.3
    new = ori.get_target_in_sc_frame(CRAB)  # cosipy 0.4
    assert type(old.frame).__name__ == "SpacecraftFrame"
    np.testing.assert_allclose(old.lon.deg, CRAB_LON, atol=1e-5)
    np.testing.assert_allclose(old.lat.deg, CRAB_LAT, atol=1e-5)
    np.testing.assert_array_equal(new.lon.deg, old.lon.deg)
    assert ori.src_path_skycoord is new and ori.target_name is None
    rot = ori.get_attitude()
    same = ori.get_target_in_sc_frame("Crab", CRAB, attitude=rot)
    np.testing.assert_allclose(same.lat.deg, old.lat.deg, atol=1e-12)
    assert ori.target_name == "Crab"
    with pytest.raises(DataError, match="give the source"):
        ori.get_target_in_sc_frame("Crab")
    with pytest.raises(ParameterError, match="save=True"):
        ori.get_target_in_sc_frame("Crab", CRAB, save=True)


def test_dwell_map_from_stored_path_and_response_file(ori, testdata):
    response = testdata / "test_full_detector_response.h5"
    fresh = SpacecraftFile.parse_from_file(testdata / ORI10)
    with pytest.raises(DataError, match="no source path"):
        fresh.get_dwell_map(response=response)
    fresh.get_target_in_sc_frame("Crab", CRAB)
    for dwell in (fresh.get_dwell_map(response=response),  # cosipy <= 0.3: a path
                  fresh.get_dwell_map(str(response)),
                  fresh.get_dwell_map(CRAB, nside=1, scheme="ring"),  # cosipy 0.4
                  fresh.get_dwell_map(src_path=fresh.src_path_skycoord, nside=1)):
        np.testing.assert_allclose(dwell[:].to_value(u.s), CRAB_DWELL, atol=1e-6)
        assert dwell.axes[0].label == "NuLambda"
    with pytest.raises(DataError, match="src_path: 3 positions"):
        fresh.get_dwell_map(src_path=fresh.src_path_skycoord[:3], nside=1)
    with pytest.raises(ParameterError, match="pa_convention"):
        fresh.get_dwell_map(response=response, pa_convention="RelativeX")


def test_cosipy_private_columns_are_read_only_views(ori):
    t0 = ori.time_unix[0]
    part = ori.source_interval(Time(t0 + 0.1, format="unix"), Time(t0 + 2.1, format="unix"))
    np.testing.assert_allclose(part._load_time, [t0 + 0.1, t0 + 1, t0 + 2, t0 + 2.1])
    # cosipy's figures for this interval (linear interpolation there, slerp here)
    np.testing.assert_allclose(part._x_direction.ravel(),
                               [41.86062093, 73.14368765, 41.88225011, 73.09517927,
                                41.90629597, 73.0412838, 41.9087019, 73.03589454], atol=1e-5)
    np.testing.assert_allclose(part._z_direction.ravel(),
                               [221.86062093, 16.85631235, 221.88225011, 16.90482073,
                                221.90629597, 16.9587162, 221.9087019, 16.96410546], atol=1e-5)
    for column in (part._load_time, part._x_direction, part._z_direction):
        with pytest.raises(ValueError, match="read-only"):
            column[0] = 0.0
    with pytest.raises(AttributeError):
        part._load_time = np.zeros(4)


# ----------------------------------------------------- C6-C8: the exposure table
def test_exposure_table_is_a_dataframe_of_cosipy_columns(ori):
    df = SpacecraftAttitudeExposureTable.analyze_orientation(ori, nside=1)
    assert isinstance(df, pd.DataFrame)
    assert df.columns[:10].tolist() == [
        "scatt_binning_index", "healpix_index", "zpointing", "xpointing", "zpointing_averaged",
        "xpointing_averaged", "delta_time", "exposure", "num_pointings", "bkg_group"]
    table = SpacecraftAttitudeExposureTable(df, nside=1)
    assert table == SpacecraftAttitudeExposureTable.from_orientation(ori, nside=1)
    assert isinstance(table.df, pd.DataFrame)
    np.testing.assert_allclose(table.df["exposure"], [10.0], rtol=1e-12)
    rows = list(table.iterrows())
    assert len(rows) == len(table) == 1
    index, row = rows[0]
    assert row["healpix_index"] == (2, 0) and row["num_pointings"] == 10
    assert row["zpointing"].shape == (10, 2) and table.iloc[0]["exposure"] == row["exposure"]
    np.testing.assert_array_equal(table["delta_time"][0], row["delta_time"])


def test_analyze_orientation_with_one_end_returns_none_as_cosipy(ori, caplog):
    t = ori.get_time()
    with caplog.at_level(logging.ERROR):
        assert SpacecraftAttitudeExposureTable.analyze_orientation(ori, 1, stop=t[-1]) is None
        assert SpacecraftAttitudeExposureTable.analyze_orientation(ori, 1, start=t[0]) is None
    assert "specify the start time" in caplog.text and "specify the stop time" in caplog.text
    # from_orientation completes the range (probdeconv; cosipy gives an empty table)
    assert SpacecraftAttitudeExposureTable.from_orientation(ori, 1, start=t[0]) == \
        SpacecraftAttitudeExposureTable.from_orientation(ori, 1)
    with pytest.raises(DataError, match="give both"):
        SpacecraftAttitudeExposureTable(None, nside=1)


def test_exposure_table_scheme_none_is_ring(ori, caplog):
    with caplog.at_level(logging.WARNING):
        table = SpacecraftAttitudeExposureTable.from_orientation(ori, nside=1, scheme=None)
    assert table.scheme == "ring" and "scheme None" in caplog.text
    assert table == SpacecraftAttitudeExposureTable.from_orientation(ori, nside=1)
    with pytest.raises(ParameterError, match="'ringg'"):
        SpacecraftAttitudeExposureTable.from_orientation(ori, nside=1, scheme="ringg")


# --------------------------------------------------------- C10: cosipy's parameter files
def test_numbers_written_as_yaml_strings(caplog):
    text = "minimum_flux: {value: 1e-4, unit: cm-2 s-1 sr-1}\nacceleration: {alpha_max: 1e1}\n"
    raw = yaml.safe_load(text)
    assert raw["minimum_flux"]["value"] == "1e-4"  # what PyYAML reads
    with caplog.at_level(logging.WARNING, logger="probdeconv.config"):
        p = validate_algorithm_parameters("RL", raw)
    assert p["minimum_flux"]["value"] == 1e-4 and p["acceleration"]["alpha_max"] == 10.0
    assert "minimum_flux:value: the number '1e-4' is written as text" in caplog.text
    with pytest.raises(ParameterError, match="got 'ten' .str.; expected a finite number"):
        validate_algorithm_parameters("RL", {"acceleration": {"alpha_max": "ten"}})


def test_run_file_with_string_numbers_and_ignored_keys(caplog):
    run = yaml.safe_load("""
model_definition:
  class: AllSkyImage
  property: {nside: 1, energy_edges: {value: [1e2, 1e3], unit: keV}}
  initialization: {parameter: {value: [1e-4]}}
deconvolution:
  algorithm: RLsimple
  parameter: {iteration_max: 2, response_weighting: {activate: true}}
""")
    with caplog.at_level(logging.WARNING, logger="probdeconv.config"):
        v = validate_run_parameters(run)
    assert v["model_definition:property:energy_edges:value"] == [100.0, 1000.0]
    assert v["model_definition:initialization:parameter:value"] == [1e-4]
    assert "response_weighting" not in v["deconvolution:parameter"]
    assert "deconvolution:parameter:response_weighting: not used here" in caplog.text


@pytest.mark.parametrize(("name", "cls"), [("RLbasic", RichardsonLucyBasic),
                                           ("RLadvanced", RichardsonLucyAdvanced)])
def test_cosipy_04_algorithm_names(name, cls):
    assert ImageDeconvolution.deconvolution_algorithm_classes[name] is cls
    assert issubclass(RichardsonLucyBasic, RichardsonLucySimple)
    assert issubclass(RichardsonLucyAdvanced, RichardsonLucy)
    assert getattr(probdeconv, cls.__name__) is cls


def test_cosipy_04_acceleration_keys():
    adv = validate_algorithm_parameters("RLadvanced", {"acceleration": {"activate": True}})
    assert adv["acceleration"] == {"activate": True, "alpha_max": 10.0, "algorithm": "classic"}
    adv = validate_algorithm_parameters("RLadvanced", {"acceleration": {
        "activate": True, "algorithm": "MaxStep", "accel_factor_max": 5.0,
        "accel_bkg_norm": False}})
    assert adv["acceleration"] == {"activate": True, "alpha_max": 5.0, "algorithm": "classic"}
    assert validate_algorithm_parameters("RLadvanced", adv) == adv  # validating twice
    rl = validate_algorithm_parameters("RL", {"acceleration": {"accel_factor_max": 4.0}})
    assert rl["acceleration"]["alpha_max"] == 4.0
    assert validate_algorithm_parameters("RL", {"acceleration": {"algorithm": "MaxStep"}})[
        "acceleration"]["algorithm"] == "MaxStep"  # probdeconv's own MaxStep under RL
    with pytest.raises(ParameterError, match="accel_factor_max: got 4.0 but alpha_max 3.0"):
        validate_algorithm_parameters("RL", {"acceleration": {"alpha_max": 3.0,
                                                              "accel_factor_max": 4.0}})
    with pytest.raises(ParameterError, match="accel_bkg_norm.*not supported"):
        validate_algorithm_parameters("RLadvanced", {"acceleration": {
            "accel_bkg_norm": {"activate": True, "search_method": "grid"}}})
    basic = validate_algorithm_parameters("RLbasic", {"iteration_max": 4})
    assert set(basic) == {"iteration_max", "minimum_flux", "save_results"}


def test_wrong_names_still_raise_value_errors():
    for algorithm in ("WrongName", "rladvanced"):
        with pytest.raises(ValueError, match=algorithm):
            validate_algorithm_parameters(algorithm, {})
    with pytest.raises(ValueError, match="Fast.*valid choices: MaxStep, classic"):
        validate_algorithm_parameters("RLadvanced", {"acceleration": {"algorithm": "Fast"}})
    with pytest.raises(ValueError, match="likelihooood"):
        validate_algorithm_parameters("RL", {"stopping_criteria": {"statistics":
                                                                   "likelihooood"}})


def test_cosipy_04_names_run_and_give_the_reference_figures(galactic):
    """RLadvanced with cosipy 0.4's keys gives the RL figures (README: 5259.242894137228)."""
    data, model, mask = galactic
    par = {"iteration_max": 3, "acceleration": {"activate": True, "algorithm": "MaxStep"},
           "response_weighting": {"activate": True, "index": 0.5},
           "smoothing": {"activate": True, "FWHM": {"value": 2.0, "unit": "deg"}},
           "background_normalization_optimization": {"activate": True,
                                                     "range": {"bkg": [0.9, 1.1]}}}
    adv = RichardsonLucyAdvanced(model, [data], mask, Configurator(par))
    par["acceleration"] = {"activate": True, "alpha_max": 10.0}
    ref = RichardsonLucy(model, [data], mask, par)
    for algo in (adv, ref):
        algo.initialization()
        while not algo.iteration():
            pass
    assert adv.results[-1]["log-likelihood"] == ref.results[-1]["log-likelihood"]
    basic = RichardsonLucyBasic(model, [data], mask, {"iteration_max": 2})
    basic.initialization()
    basic.iteration()
    basic.iteration()
    assert basic.results[-1]["background_normalization"] == {"bkg": 1.0}


# ------------------------------------------------------------------ B2: prior classes
def _image(values):
    m = AllSkyImageModel(1, np.array([500.0, 510.0]) * u.keV)
    m[:, 0] = np.asarray(values, dtype=float) * m.unit
    return m


def test_prior_classes_give_cosipys_figures():
    from probdeconv.prior_entropy import PriorEntropy
    from probdeconv.prior_tsv import PriorTSV

    m = _image(np.arange(12))
    tsv = PriorTSV({"coefficient": 1.0}, m)
    assert tsv.log_prior(m) == -1176.0
    grad = tsv.grad_log_prior(m)
    assert grad.unit == u.Unit("cm2 s sr") and grad.shape == (12, 1)
    np.testing.assert_allclose(grad.value.ravel(),
                               [92, 76, 60, 28, 40, -8, -8, -24, -36, -52, -68, -100])
    assert tsv.neighbour_pixel_index.shape == (8, 12) and tsv.coefficient == 1.0
    m = _image(np.arange(12) + 1)
    ent = PriorEntropy(Configurator({"coefficient": 1.0, "reference_map": {
        "value": 1.0, "unit": "cm-2 s-1 sr-1"}}), m)
    assert np.isclose(ent.log_prior(m), -80.27855835017301, rtol=1e-14)
    np.testing.assert_allclose(ent.grad_log_prior(m).to_value("cm2 s sr").ravel(),
                               -np.log(np.arange(12) + 1.0), rtol=1e-14)


def test_prior_gradient_is_the_derivative_of_the_log_prior():
    from probdeconv import PriorEntropy, PriorTSV

    rng = np.random.default_rng(3)
    m = _image(rng.random(12) + 0.5)
    h = 1e-6
    for prior in (PriorTSV({"coefficient": 2.5}, m),
                  PriorEntropy({"coefficient": 0.7, "reference_map": {"value": 0.8}}, m)):
        grad = prior.grad_log_prior(m).value
        for pix in (0, 5, 11):
            up, down = m.copy(), m.copy()
            up[pix, 0] += h * m.unit
            down[pix, 0] -= h * m.unit
            numeric = (prior.log_prior(up) - prior.log_prior(down)) / (2 * h)
            assert np.isclose(grad[pix, 0], numeric, rtol=1e-6, atol=1e-6)


def test_prior_base_contract():
    from probdeconv.prior_base import PriorBase

    with pytest.raises(TypeError, match="ndarray"):
        probdeconv.PriorTSV({"coefficient": 1.0}, np.zeros(2))
    probe = type("Probe", (PriorBase,), {"usable_model_classes": [np.ndarray]})
    probe.__abstractmethods__ = frozenset()
    prior = probe({"coefficient": 10}, np.zeros(2))
    assert prior.coefficient == 10 and prior.model_class is np.ndarray
    with pytest.raises(NotImplementedError):
        prior.log_prior(np.zeros(2))
    with pytest.raises(NotImplementedError):
        prior.grad_log_prior(np.zeros(2))
    with pytest.raises(ParameterError, match="coefficient: missing"):
        probdeconv.PriorTSV({}, _image(np.ones(12)))


# ------------------------------------------------------- C1: FullDetectorResponse members
@pytest.mark.parametrize("name", ["test_full_detector_response.h5",
                                  "test_full_detector_response_dense.h5"])
def test_full_detector_response_filename_ndim_and_pixels(testdata, name):
    from probdeconv import FullDetectorResponse, Histogram

    path = testdata / name
    with FullDetectorResponse.open(path) as rsp:
        assert rsp.filename == path and rsp.ndim == len(rsp.axes.labels)
        drm = rsp[0]
        assert isinstance(drm, Histogram) and drm.ndim == rsp.ndim - 1
        assert drm.axes.labels.tolist() == rsp.axes.labels.tolist()[1:]
        assert drm.unit.is_equivalent("m2")
        image = rsp.to_image_response()
        for ipix in (0, 7, rsp.npix - 1):  # nothing summed: the extra axes sum to the image
            full = rsp[ipix].to_dense().contents.to_value(rsp.unit)
            summed = full.sum(axis=tuple(range(4, full.ndim)))
            np.testing.assert_array_equal(summed, image.contents[ipix].to_value(rsp.unit))
        for bad in (rsp.npix, -1, 1.0, "0"):
            with pytest.raises(IndexError, match=r"NuLambda pixel .*expected an integer in"):
                rsp[bad]


def test_version2_response_pixel(testdata, tmp_path):
    from test_spacecraft import _write_v2

    from probdeconv import FullDetectorResponse

    counts = np.random.default_rng(5).poisson(2.0, (12, 10, 10, 30, 12)).astype(np.uint16)
    eff_area = np.geomspace(1e-6, 1e-7, 10)
    _write_v2(tmp_path / "v2.h5", testdata / "test_full_detector_response_dense.h5", counts,
              eff_area)
    with FullDetectorResponse.open(tmp_path / "v2.h5") as rsp:
        np.testing.assert_array_equal(rsp[3].contents.to_value(rsp.unit),
                                      counts[3] * eff_area[:, None, None, None])


# --------------------------------------------------- B1: DataInterfaceCollection (0.4)
def test_data_interface_collection(galactic, testdata):
    from probdeconv import DataIF_COSI_DC2, DataInterfaceCollection, Histogram

    data, model, mask = galactic
    ev = Histogram.open(testdata / "test_event_histogram_galacticCDS.hdf5")
    ev = ev.project(["Em", "Phi", "PsiChi"])
    rsp = Histogram.open(testdata / "test_precomputed_response.h5")
    other = DataIF_COSI_DC2.load("other", ev, {"bkg": ev * 0.2, "albedo": ev * 0.05}, rsp)
    coll = DataInterfaceCollection([data, other])
    assert len(coll) == 2 and coll[1] is other and list(coll) == [data, other]
    assert coll.keys_bkg_models() == ["bkg", "albedo"]
    norms = {"bkg": 0.9, "albedo": 1.3}
    total = coll.calc_expectation_list(model, norms)
    parts = coll.combine_expectation_list(coll.calc_source_expectation_list(model),
                                          coll.calc_bkg_expectation_list(norms))
    for a, b in zip(total, parts):
        np.testing.assert_allclose(a.contents, b.contents, rtol=1e-12)
    logl = coll.calc_total_log_likelihood(total)
    assert logl == pytest.approx(sum(d.calc_log_likelihood(e) for d, e in zip(coll, total)),
                                 rel=1e-14)
    assert coll.calc_summed_bkg_model("bkg") == pytest.approx(
        data.summed_bkg_model("bkg") + other.summed_bkg_model("bkg"), rel=1e-14)
    assert coll.calc_summed_bkg_model("albedo") == pytest.approx(
        other.summed_bkg_model("albedo"), rel=1e-14)
    exposure = coll.calc_summed_exposure_map()
    assert exposure.unit == u.Unit("cm2 s sr")
    np.testing.assert_allclose(np.sum(exposure).value,
                               2 * np.sum(data.exposure_map).value, rtol=1e-12)
    assert np.sum(data.exposure_map).unit == u.Unit("cm2 s sr")  # not changed by the sum
    t = coll.calc_summed_T_product(total)
    np.testing.assert_allclose(t.contents.value, (data.calc_T_product(total[0])
                                                  + other.calc_T_product(total[1])).contents.value)
    assert coll.calc_summed_bkg_model_product("albedo", total) == pytest.approx(
        other.calc_bkg_model_product("albedo", total[1]), rel=1e-14)
    with pytest.raises(DataError, match="1 histograms for 2 datasets"):
        coll.calc_summed_bkg_model_product("bkg", total[:1])
    with pytest.raises(DataError, match="no entry for the background 'albedo'"):
        other.calc_bkg_expectation({"bkg": 1.0})
    with pytest.raises(DataError, match="'cr'"):
        coll.calc_summed_bkg_model("cr")
    with pytest.raises(DataError, match="element 0 is a str"):
        DataInterfaceCollection(["data"])


def test_collection_accepted_wherever_a_list_is(galactic, testdata):
    from probdeconv import DataInterfaceCollection

    data, model, mask = galactic
    par = {"iteration_max": 2, "background_normalization_optimization": {"activate": True}}
    runs = []
    for dataset in ([data], DataInterfaceCollection([data])):
        algo = RichardsonLucySimple(model, dataset, mask, par)
        assert algo.dataset == [data]
        algo.initialization()
        algo.iteration()
        algo.iteration()
        runs.append(algo.results[-1]["log-likelihood"])
    assert runs[0] == runs[1]
    deconv = ImageDeconvolution()
    deconv.set_dataset(DataInterfaceCollection([data]))
    assert deconv.dataset == [data]
    deconv.read_parameterfile(testdata / "image_deconvolution" /
                              "imagedeconvolution_parfile_test.yml")
    deconv.initialize()
    assert len(deconv.run_deconvolution()) == 2
