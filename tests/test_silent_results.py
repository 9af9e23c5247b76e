"""Inputs that used to end in a silently wrong result (exit 0) are refused or warned about.

Each test is one item of the probe: the run is refused with a message naming the culprit
(exit 2 on the command line), or it runs and says so in the log.
"""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
import pytest
from histpy import Axis, HealpixAxis

from probdeconv import (
    AllSkyImageModel,
    AxisMismatchError,
    CoordsysConversionMatrix,
    DataError,
    DataIF_COSI_DC2,
    FileFormatError,
    FullDetectorResponse,
    Histogram,
    ImageDeconvolution,
    ParameterError,
    PriorTSV,
    RichardsonLucy,
)
from probdeconv.cli.main import main
from probdeconv.io.histpy_h5 import read_histogram
from probdeconv.shell.checks import validate_mask

PARAMS = {"iteration_max": 3, "acceleration": {"activate": True, "alpha_max": 10.0},
          "background_normalization_optimization": {"activate": True,
                                                     "range": {"bkg": [0.01, 10.0]}}}


def _axes(frame="galactic"):
    return [Axis([100, 300, 1000], label="Em", unit="keV"),
            Axis([0, 60, 120, 180], label="Phi", unit="deg"),
            HealpixAxis(nside=1, label="PsiChi", coordsys=frame)]


def _response(frame="galactic", scale=1.0):
    axes = [HealpixAxis(nside=1, label="NuLambda", coordsys=frame),
            Axis([100, 1000], label="Ei", unit="keV", scale="log"), *_axes(frame)]
    rng = np.random.default_rng(0)
    return Histogram(axes, contents=rng.random((12, 1, 2, 3, 12)) * scale, unit="cm2 s")


def _event(counts=None, frame="galactic"):
    if counts is None:
        counts = np.random.default_rng(1).poisson(20.0, (2, 3, 12)).astype(float)
    return Histogram(_axes(frame), contents=counts)


def _bkg(scale=1.0):
    return Histogram(_axes(), contents=(np.random.default_rng(2).random((2, 3, 12)) + 0.5)
                     * scale)


def _data(**kw):
    return DataIF_COSI_DC2.load("d", kw.pop("event", _event()), kw.pop("bkgs", {"bkg": _bkg()}),
                                kw.pop("rsp", _response()))


def _model(value=1.0):
    m = AllSkyImageModel(1, [100, 1000] * u.keV)
    m[:] = value * m.unit
    return m


def _deconv(data, *overrides):
    deconv = ImageDeconvolution()
    deconv.progress = False
    deconv.set_dataset([data])
    deconv.parameter = {
        "model_definition": {
            "class": "AllSkyImage",
            "property": {"coordinate": "galactic", "nside": 1, "scheme": "ring",
                         "energy_edges": {"value": [100.0, 1000.0], "unit": "keV"},
                         "unit": "cm-2 s-1 sr-1"},
            "initialization": {"algorithm": "flat",
                               "parameter": {"value": [1.0], "unit": "cm-2 s-1 sr-1"}}},
        "deconvolution": {"algorithm": "RL", "parameter": dict(PARAMS)}}
    if overrides:
        deconv.override_parameter(*overrides)
    return deconv


# ---------------------------------------------------------------- 1: scheme, 2: frames
def test_nested_model_on_ring_data_is_refused():
    deconv = _deconv(_data(), "model_definition:property:scheme = nested")
    with pytest.raises(AxisMismatchError, match=r"scheme is 'nested'.*RING.*set scheme: 'ring'"):
        deconv.initialize()


def test_icrs_label_on_galactic_data_is_refused():
    deconv = _deconv(_data(), "model_definition:property:coordinate = icrs")
    with pytest.raises(AxisMismatchError, match=r"coordinate is 'icrs'.*'galactic'"):
        deconv.initialize()


def test_spacecraft_events_with_a_galactic_response_are_refused():
    with pytest.raises(AxisMismatchError, match=r"PsiChi of the event histogram.*"
                                                r"'spacecraftframe'.*galactic data space"):
        _data(event=_event(frame="spacecraftframe"))


def test_galactic_response_with_spacecraft_events_relabelled_is_refused():
    # events labelled galactic, response in the spacecraft frame (no CCM): refused too
    with pytest.raises(AxisMismatchError, match=r"NuLambda of the response.*spacecraftframe"):
        _data(rsp=_response(frame="spacecraftframe"))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["--quiet", "simulate", "--nside", "2", "--seed", "5", "--out", str(out),
                 "--overwrite"]) == 0
    return out


def _sim_files(sim):
    return (read_histogram(sim / "event.h5"), read_histogram(sim / "background.h5"),
            CoordsysConversionMatrix.open(sim / "ccm.h5"))


def test_galactic_events_through_a_spacecraft_response_and_ccm_are_refused(sim):
    ev, bkg, ccm = _sim_files(sim)
    ev.axes["PsiChi"].coordsys = "galactic"  # a galactic event histogram
    with FullDetectorResponse.open(sim / "response.h5") as rsp, \
            pytest.raises(AxisMismatchError, match=r"PsiChi of the event histogram is in the "
                                                   r"'galactic' frame.*spacecraft-frame"):
        DataIF_COSI_DC2.load("sim", ev, {"bkg": bkg}, rsp, coordsys_conv_matrix=ccm)


def test_all_zero_ccm_is_refused(sim):
    ev, bkg, ccm = _sim_files(sim)
    zero = Histogram(ccm.axes, contents=np.zeros(ccm.axes.shape), unit=ccm.unit)
    with FullDetectorResponse.open(sim / "response.h5") as rsp, \
            pytest.raises(DataError, match="exposure map is zero everywhere"):
        DataIF_COSI_DC2.load("sim", ev, {"bkg": bkg}, rsp, coordsys_conv_matrix=zero)


def test_scheme_and_frame_refused_from_the_command_line(sim, tmp_path, capsys):
    rl = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "models" / "rl.yml")
    for i, (key, word) in enumerate((("scheme=nested", "scheme"),
                                     ("coordinate=icrs", "coordinate"))):
        rc = main(["--quiet", "run", rl, "--data", str(sim), "--out", str(tmp_path / str(i)),
                   "--set", f"model_definition:property:{key}"])
        assert rc == 2
        assert word in capsys.readouterr().err


# ---------------------------------------------------------------- 4: NaN / inf
def test_nan_initial_model_via_the_api_is_refused():
    m = _model()
    m[3, 0] = np.nan * m.unit
    with pytest.raises(DataError, match=r"initial model.*1 NaN or infinite"):
        RichardsonLucy(m, [_data()], None, PARAMS)


def test_huge_initial_flux_stops_with_a_clear_error(sim, tmp_path, capsys):
    rl = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "models" / "rl.yml")
    out = tmp_path / "huge"
    rc = main(["--quiet", "run", rl, "--data", str(sim), "--out", str(out), "--set",
               "model_definition:initialization:parameter:value=[1.0e+305]"])
    assert rc == 2
    assert "overflows" in capsys.readouterr().err
    assert not (out / "iterations.csv").exists()


def test_nan_during_the_iterations_stops_the_run(tmp_path):
    deconv = _deconv(_data())
    deconv.initialize()
    algo = deconv.deconvolution

    def poison(a):
        if a.iteration_count == 2:
            a._state = a._state._replace(model=a._state.model * np.nan)

    ckpt = tmp_path / "c.npz"
    with pytest.raises(DataError, match=r"iteration 3: the log-likelihood is \[nan\]"):
        deconv.run_deconvolution(checkpoint=ckpt, checkpoint_every=1, callback=poison)
    assert algo.iteration_count == 3
    assert len(algo.results) == 3  # and the checkpoint holds iteration 2, finite
    with np.load(ckpt) as z:
        assert np.all(np.isfinite(z["model"]))


def test_nan_in_a_checkpoint_is_refused_on_resume(tmp_path):
    deconv = _deconv(_data())
    deconv.initialize()
    ckpt = tmp_path / "c.npz"
    deconv.run_deconvolution(checkpoint=ckpt, checkpoint_every=1)
    with np.load(ckpt) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["model"] = arrays["model"] * np.nan
    np.savez(ckpt, **arrays)
    deconv.override_parameter("deconvolution:parameter:iteration_max = 5")
    deconv.initialize()
    with pytest.raises(FileFormatError, match=r"image holds 12 NaN or infinite.*damaged"):
        deconv.run_deconvolution(checkpoint=ckpt, resume=True)


# ---------------------------------------------------------------- 5: degenerate inputs
def test_all_zero_response_is_refused():
    with pytest.raises(DataError, match=r"exposure map is zero everywhere.*response"):
        _data(rsp=_response(scale=0.0))


@pytest.mark.parametrize("flux, words", [(0.0, "zero on every free pixel"),
                                         (1e-30, "cannot grow it"),
                                         (5e-324, "subnormal")])
def test_initial_flux_that_rl_cannot_leave_is_refused(flux, words):
    deconv = _deconv(_data(), f"model_definition:initialization:parameter:value = [{flux!r}]")
    with pytest.raises(DataError, match=words):
        deconv.initialize()


def test_all_zero_background_template_is_refused():
    with pytest.raises(DataError, match=r"background 'bkg' is zero everywhere"):
        _data(bkgs={"bkg": _bkg(scale=0.0)})


def test_dataset_without_background_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        _data(bkgs={})
    assert "has no background model" in caplog.text


# ---------------------------------------------------------------- 7, 9: masks, counts, TSV
@pytest.mark.parametrize("contents", [np.full((12, 1), np.nan), np.full((12, 1), "yes"),
                                      np.full((12, 1), 0.5), np.full((12, 1), 2)],
                         ids=["nan", "strings", "half", "two"])
def test_non_boolean_masks_are_refused(contents):
    mask = Histogram(_model().axes, contents=contents)
    with pytest.raises(DataError, match="expected booleans"):
        ImageDeconvolution().set_mask(mask)


def test_all_false_mask_is_refused_and_zero_one_numbers_are_booleans():
    axes = _model().axes
    with pytest.raises(DataError, match=r"every pixel is masked"):
        ImageDeconvolution().set_mask(Histogram(axes, contents=np.zeros((12, 1), bool)))
    ones = np.ones((12, 1))
    ones[0] = 0.0
    got = validate_mask(Histogram(axes, contents=ones), axes)
    assert got.contents.dtype == bool and int(np.sum(got.contents)) == 11


def test_all_zero_counts_are_refused():
    with pytest.raises(DataError, match="holds no counts"):
        _data(event=_event(np.zeros((2, 3, 12))))


def test_single_count_and_non_integer_counts_are_warned_about(caplog):
    one = np.zeros((2, 3, 12))
    one[0, 0, 0] = 1
    with caplog.at_level(logging.WARNING):
        _data(event=_event(one))
    assert "holds only 1 count" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _data(event=_event(np.full((2, 3, 12), 2.5)))
    assert "non-integer counts (e.g. 2.5)" in caplog.text


def test_negative_tsv_coefficient_is_refused():
    with pytest.raises(ParameterError, match=r"prior:TSV:coefficient.*>= 0"):
        PriorTSV({"coefficient": -1.0}, _model())
