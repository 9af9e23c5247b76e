"""Bad input gets a clear error naming the culprit (one test per kind)."""

from __future__ import annotations

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
    Histogram,
    ImageDeconvolution,
    ParameterError,
    RichardsonLucy,
)
from probdeconv.io.histpy_h5 import read_histogram


def _axes(phi_edges=(0, 60, 120, 180), em_unit="keV"):
    return [Axis([100, 300, 1000], label="Em", unit=em_unit),
            Axis(list(phi_edges), label="Phi", unit="deg"),
            HealpixAxis(nside=1, label="PsiChi", coordsys="galactic")]


def _response(unit="cm2 s"):
    axes = [HealpixAxis(nside=1, label="NuLambda", coordsys="galactic"),
            Axis([100, 1000], label="Ei", unit="keV", scale="log"), *_axes()]
    rng = np.random.default_rng(0)
    return Histogram(axes, contents=rng.random((12, 1, 2, 3, 12)), unit=unit)


def _event(counts=None, **kw):
    if counts is None:
        counts = np.random.default_rng(1).poisson(2.0, (2, 3, 12)).astype(float)
    return Histogram(_axes(**kw), contents=counts)


def test_mismatched_edges_between_event_and_background():
    with pytest.raises(AxisMismatchError, match=r"axis 'Phi'.*background 'bkg'"):
        DataIF_COSI_DC2.load("d", _event(), {"bkg": _event(phi_edges=(0, 50, 120, 180))},
                             _response())


def test_mismatched_edges_between_event_and_response():
    ev = Histogram([Axis([100, 400, 1000], label="Em", unit="keV"), *_axes()[1:]],
                   contents=np.ones((2, 3, 12)))
    with pytest.raises(AxisMismatchError, match=r"axis 'Em'.*event histogram.*response"):
        DataIF_COSI_DC2.load("d", ev, {}, _response())


def test_nan_counts():
    c = np.ones((2, 3, 12))
    c[1, 2, 3] = np.nan
    with pytest.raises(DataError, match="counts.*NaN"):
        DataIF_COSI_DC2.load("d", _event(c), {}, _response())


def test_negative_counts():
    c = np.ones((2, 3, 12))
    c[0, 0, 0] = -3
    with pytest.raises(DataError, match="counts.*negative"):
        DataIF_COSI_DC2.load("d", _event(c), {}, _response())


def test_wrong_response_unit():
    with pytest.raises(DataError, match="response has unit"):
        DataIF_COSI_DC2.load("d", _event(), {}, _response(unit="cm2"))


def test_unprojected_event_histogram():
    ev = Histogram([Axis([0, 1], label="Time", unit="s"), *_axes()],
                   contents=np.ones((1, 2, 3, 12)))
    with pytest.raises(DataError, match=r"Project it first: event.project"):
        DataIF_COSI_DC2.load("d", ev, {}, _response())


def _model():
    m = AllSkyImageModel(1, [100, 1000] * __import__("astropy.units").units.keV)
    m[:] = 1.0 * m.unit
    return m


def test_mask_of_wrong_shape():
    data = DataIF_COSI_DC2.load("d", _event(), {}, _response())
    mask = np.ones((12, 2), bool)
    with pytest.raises(DataError, match=r"mask has shape \(12, 2\); expected \(12, 1\)"):
        RichardsonLucy(_model(), [data], mask, {"iteration_max": 2})


def test_unknown_algorithm(tmp_path):
    p = tmp_path / "p.yml"
    p.write_text("model_definition: {class: AllSkyImage, property: {nside: 1, energy_edges: "
                 "{value: [100, 1000], unit: keV}}, initialization: {algorithm: flat, "
                 "parameter: {value: [1.0], unit: cm-2 s-1 sr-1}}}\n"
                 "deconvolution: {algorithm: RLfast, parameter: {iteration_max: 2}}\n")
    deconv = ImageDeconvolution()
    deconv.set_dataset([DataIF_COSI_DC2.load("d", _event(), {}, _response())])
    deconv.read_parameterfile(p)
    with pytest.raises(ParameterError, match=r"RLfast.*RLsimple"):
        deconv.initialize()


def test_unknown_parameter_key():
    data = DataIF_COSI_DC2.load("d", _event(), {}, _response())
    with pytest.raises(ParameterError, match="acceleraton"):
        RichardsonLucy(_model(), [data], None, {"iteration_max": 2, "acceleraton": {}})


def test_parameter_of_wrong_type():
    data = DataIF_COSI_DC2.load("d", _event(), {}, _response())
    with pytest.raises(ParameterError, match="iteration_max"):
        RichardsonLucy(_model(), [data], None, {"iteration_max": "many"})


def test_missing_parameter_file(tmp_path):
    deconv = ImageDeconvolution()
    with pytest.raises(FileFormatError, match="nothere.yml"):
        deconv.read_parameterfile(tmp_path / "nothere.yml")


@pytest.mark.parametrize("reader", [read_histogram, AllSkyImageModel.open,
                                    CoordsysConversionMatrix.open])
def test_truncated_hdf5(tmp_path, reader):
    # histpy's own Histogram.open raises h5py's OSError; probdeconv's readers name the file
    path = tmp_path / "ev.h5"
    _event().write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match=r"ev\.h5.*truncated"):
        reader(path)


def test_model_energy_edges_differ_from_response(tmp_path):
    p = tmp_path / "p.yml"
    p.write_text("model_definition: {class: AllSkyImage, property: {nside: 1, energy_edges: "
                 "{value: [100, 2000], unit: keV}}, initialization: {algorithm: flat, "
                 "parameter: {value: [1.0], unit: cm-2 s-1 sr-1}}}\n"
                 "deconvolution: {algorithm: RL, parameter: {iteration_max: 2}}\n")
    deconv = ImageDeconvolution()
    deconv.set_dataset([DataIF_COSI_DC2.load("d", _event(), {}, _response())])
    deconv.read_parameterfile(p)
    with pytest.raises(DataError, match="energy_edges differ"):
        deconv.initialize()


def test_counts_with_a_unit():
    ev = Histogram(_axes(), contents=np.ones((2, 3, 12)), unit="cm2")
    with pytest.raises(DataError, match="dimensionless"):
        DataIF_COSI_DC2.load("d", ev, {}, _response())
