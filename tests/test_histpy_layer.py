"""histpy is probdeconv's histogram layer: cosipy's files read into our shell objects,
histpy objects passing both ways, and atomic writes."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import astropy.units as u
import h5py
import histpy
import numpy as np
import pytest
import sparse

import probdeconv
from probdeconv import (
    AllSkyImageModel,
    CoordsysConversionMatrix,
    DataError,
    DataIF_COSI_DC2,
    FileFormatError,
    FullDetectorResponse,
    RichardsonLucy,
)
from probdeconv.forward.dataset import ALIGNMENT
from probdeconv.io.histpy_h5 import read_histogram, write_histogram

CCM_FILES = ("ccm_scatt_use_averaged_pointing_True_test.hdf5",
             "ccm_scatt_use_averaged_pointing_False_test.hdf5", "ccm_time_test.hdf5")


def test_histogram_classes_are_histpys():
    for name in ("Histogram", "Axis", "Axes", "HealpixAxis"):
        assert getattr(probdeconv, name) is getattr(histpy, name)
    assert issubclass(AllSkyImageModel, histpy.Histogram)
    assert issubclass(CoordsysConversionMatrix, histpy.Histogram)
    sig = inspect.signature(AllSkyImageModel)
    assert list(sig.parameters) == ["nside", "energy_edges", "scheme", "coordsys",
                                    "label_image", "label_energy", "unit"]
    assert sig.parameters["scheme"].default == "ring"
    assert sig.parameters["coordsys"].default == "galactic"


# ------------------------------------------------------------ cosipy's files
@pytest.mark.parametrize("name", CCM_FILES)
def test_cosipy_ccm_opens_as_our_ccm(testdata, name):
    path = testdata / "image_deconvolution" / name
    ccm = CoordsysConversionMatrix.open(path)
    plain = histpy.Histogram.open(path)
    assert type(ccm) is CoordsysConversionMatrix and ccm.is_sparse and ccm.unit == u.s
    assert ccm == plain  # value equality with the plain histpy reading
    assert ccm.binning_method == ("Time" if "time" in name else "ScAtt")
    assert ccm.axes["NuLambda"].coordsys.name == "spacecraftframe"
    assert ccm.axes["lb"].coordsys.name == "galactic"
    coords, values = ccm.coo()
    assert coords.shape == (3, 48) and np.all(values > 0)
    np.testing.assert_allclose(values.sum(), plain.contents.data.sum(), rtol=1e-12)
    np.testing.assert_array_equal(ccm.contents.todense()[tuple(coords)], values)


def test_cosipy_image_model_file(testdata):
    path = testdata / "image_deconvolution" / "all_sky_image_model_test_nside1.hdf5"
    m = AllSkyImageModel.open(path)
    assert type(m) is AllSkyImageModel and m.nside == 1 and m.axes.shape == (12, 1)
    assert m.unit == u.Unit("cm-2 s-1 sr-1") and m == histpy.Histogram.open(path)
    assert type(m.copy()) is AllSkyImageModel and type(m * 2) is AllSkyImageModel
    smoothed = m.smoothing(fwhm=30 * u.deg)
    assert type(smoothed) is AllSkyImageModel and smoothed.axes == m.axes
    np.testing.assert_allclose(np.sum(smoothed.contents), np.sum(m.contents), rtol=1e-2)


def test_full_detector_responses_dense_and_sparse_agree(testdata):
    with FullDetectorResponse.open(testdata / "test_full_detector_response.h5") as rsp:
        assert rsp.is_sparse and rsp.version == 1 and rsp.nside == 1
        sparse_image = rsp.to_image_response()
    with FullDetectorResponse.open(testdata / "test_full_detector_response_dense.h5") as rsp:
        assert not rsp.is_sparse
        dense_image = rsp.to_image_response()
    assert type(dense_image) is histpy.Histogram and dense_image.unit == u.cm**2
    assert dense_image.axes.labels.tolist() == ["NuLambda", "Ei", "Em", "Phi", "PsiChi"]
    assert dense_image.axes["PsiChi"].coordsys.name == "spacecraftframe"
    assert dense_image == sparse_image
    values = dense_image.contents.value  # a view of the aligned array read from the file
    assert values.flags.c_contiguous and values.ctypes.data % ALIGNMENT == 0


def test_spacecraft_frame_files_open_without_importing_scoords(testdata):
    """histpy needs astropy to know 'spacecraftframe'; importing probdeconv registers it."""
    path = testdata / "test_event_histogram_localCDS.hdf5"
    code = ("import probdeconv, sys, histpy; h = histpy.Histogram.open(sys.argv[1]); "
            "print(h.axes['PsiChi'].coordsys.name, int(h.contents.sum()))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    assert out == ["spacecraftframe", "4173"]


# ---------------------------------------------------- our objects <-> histpy
def _data(rng, nside=1):
    axes = [histpy.Axis([100, 300, 1000] * u.keV, label="Em"),
            histpy.Axis([0, 60, 120, 180] * u.deg, label="Phi"),
            histpy.HealpixAxis(nside=1, label="PsiChi", coordsys="galactic")]
    rsp_axes = [histpy.HealpixAxis(nside=nside, label="NuLambda", coordsys="galactic"),
                histpy.Axis([100, 500, 1000] * u.keV, label="Ei", scale="log"), *axes]
    npix = 12 * nside**2
    rsp = histpy.Histogram(rsp_axes, contents=rng.random((npix, 2, 2, 3, 12)), unit="cm2 s")
    ev = histpy.Histogram(axes, contents=rng.poisson(4.0, (2, 3, 12)).astype(float))
    bkg = histpy.Histogram(axes, contents=rng.random((2, 3, 12)) + 0.5)
    return DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp)


def test_histpy_objects_pass_both_ways():
    rng = np.random.default_rng(0)
    data = _data(rng)
    axes = histpy.Axes(data.model_axes)  # a cosipy script's first line
    assert axes.labels.tolist() == ["lb", "Ei"] and axes.shape == (12, 2)
    model = AllSkyImageModel(1, data.model_axes["Ei"].edges)
    model[:] = rng.random((12, 2)) * model.unit
    assert model.axes == data.model_axes
    plain = histpy.Histogram(model.axes, contents=np.ones(model.axes.shape), unit=model.unit)
    total = model + plain
    assert type(total) is AllSkyImageModel
    np.testing.assert_allclose(total.contents.value, model.contents.value + 1.0)
    ratio = plain / model  # histpy on the left, ours on the right
    assert type(ratio) is histpy.Histogram and ratio.unit == u.dimensionless_unscaled
    assert model == model.copy() and model.copy() is not model
    other = model.copy()
    other[3, 1] = 0 * model.unit
    assert not model == other
    # everything the data interface returns is histpy
    expectation = data.calc_expectation(model, {"bkg": 1.0})
    assert type(expectation) is histpy.Histogram and expectation.axes == data.data_axes
    back = data.calc_T_product(expectation)
    assert back.axes == data.model_axes and back.unit == data.exposure_map.unit
    assert type(data.exposure_map) is histpy.Histogram
    assert data.exposure_map.unit == u.cm**2 * u.s * u.sr
    # a plain histpy histogram is accepted as the model, and the result is the same
    same = data.calc_expectation(histpy.Histogram(model.axes, contents=model.contents),
                                 {"bkg": 1.0})
    assert same == expectation


def test_result_maps_are_all_sky_image_models():
    data = _data(np.random.default_rng(1))
    model = AllSkyImageModel(1, data.model_axes["Ei"].edges)
    model[:] = 1.0 * model.unit
    algo = RichardsonLucy(model, [data], None, {"iteration_max": 2})
    algo.initialization()
    algo.iteration()
    result = algo.results[-1]
    for key in ("model", "delta_model"):
        assert type(result[key]) is AllSkyImageModel and result[key].axes == model.axes
    assert isinstance(algo.summed_exposure_map, histpy.Histogram)


def test_non_histograms_are_refused_by_name():
    data = _data(np.random.default_rng(2))
    with pytest.raises(DataError, match=r"event_binned_data: expected a histpy Histogram"):
        DataIF_COSI_DC2.load("d", np.ones((2, 3, 12)), {}, None)
    with pytest.raises(DataError, match=r"model: expected a histpy Histogram"):
        data.calc_expectation(np.ones((12, 2)))
    with pytest.raises(FileFormatError, match=r"\[Time\|ScAtt, lb, NuLambda\]"):
        CoordsysConversionMatrix.from_histogram(data.exposure_map)
    with pytest.raises(DataError, match=r"\[HEALPix, energy\]"):
        AllSkyImageModel.from_histogram(histpy.Histogram([0, 1, 2]))


def test_ccm_from_sparse_contents():
    axes = histpy.Axes([histpy.Axis([0, 1, 2], label="ScAtt"),
                        histpy.HealpixAxis(nside=1, label="lb", coordsys="galactic"),
                        histpy.HealpixAxis(nside=1, label="NuLambda")])
    contents = sparse.COO([[0, 1], [2, 3], [5, 5]], [2.0, 4.0], shape=(2, 12, 12))
    ccm = CoordsysConversionMatrix(axes, contents=contents, unit=u.min)
    coords, seconds = ccm.coo()
    assert coords.tolist() == [[0, 1], [2, 3], [5, 5]] and seconds.tolist() == [120.0, 240.0]
    plain = CoordsysConversionMatrix.from_histogram(histpy.Histogram(axes, contents=contents))
    assert plain.unit == u.s and plain.is_sparse  # a unitless CCM is taken to be in seconds


# -------------------------------------------------------------- files, atomically
def _hist(value=1.0, unit="cm2"):
    ax = [histpy.Axis([0, 1, 2] * u.keV, label="E"), histpy.HealpixAxis(nside=1, label="p")]
    return histpy.Histogram(ax, contents=np.full((2, 12), value), unit=unit)


def test_write_adds_groups_and_round_trips(tmp_path):
    path = tmp_path / "h.h5"
    write_histogram(_hist(1.0), path, name="a")
    write_histogram(_hist(2.0), path, name="b")
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["a", "b"]
    assert read_histogram(path, "a") == _hist(1.0) and read_histogram(path, "b") == _hist(2.0)
    with pytest.raises(FileFormatError, match=r"already holds a group 'a'"):
        write_histogram(_hist(3.0), path, name="a")
    write_histogram(_hist(3.0), path, name="a", overwrite=True)
    assert read_histogram(path, "a") == _hist(3.0) and read_histogram(path, "b") == _hist(2.0)
    sp = _hist(0.0, unit="s").to_sparse()
    sp[1, 3] = 5.0 * u.s
    write_histogram(sp, path, name="sparse")
    again = read_histogram(path, "sparse")
    assert again.is_sparse and again == sp
    assert sorted(os.listdir(tmp_path)) == ["h.h5"]  # no temporary file left


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "h.h5"
    write_histogram(_hist(1.0), path, name="a")
    before = path.read_bytes()

    def broken(self, filename, name="hist", overwrite=False, h5_dataset_kw=None):
        with h5py.File(filename, "a") as f:
            f.create_group(name)  # half a histogram, then the writer dies
        raise RuntimeError("disk full")

    monkeypatch.setattr(histpy.Histogram, "write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_histogram(_hist(2.0), path, name="b")
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["h.h5"]


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileFormatError, match=r"nothere\.h5: no such file"):
        read_histogram(tmp_path / "nothere.h5")
    path = tmp_path / "h.h5"
    write_histogram(_hist(), path, name="model")
    with pytest.raises(FileFormatError, match=r"no group 'hist'; groups present: \['model'\]"):
        read_histogram(path)
    with h5py.File(path, "a") as f:
        f.create_group("broken").create_group("axes")
    with pytest.raises(FileFormatError, match=r"'broken' is not a histogram group"):
        read_histogram(path, "broken")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(FileFormatError, match=r"not a readable HDF5 file.*overwrite=True"):
        write_histogram(_hist(), text)
    write_histogram(_hist(), text, overwrite=True)
    assert read_histogram(text) == _hist()
    with pytest.raises(FileFormatError, match=r"expected a histpy Histogram for group 'x'"):
        write_histogram(np.ones(3), tmp_path / "x.h5", name="x")


def test_cosipy_file_round_trip(testdata, tmp_path):
    src = testdata / "image_deconvolution" / "ccm_time_test.hdf5"
    ccm = CoordsysConversionMatrix.open(src)
    write_histogram(ccm, tmp_path / "copy.h5")
    again = CoordsysConversionMatrix.open(tmp_path / "copy.h5")
    assert again == ccm and again.axes["Time"].unit == ccm.axes["Time"].unit
    with h5py.File(tmp_path / "copy.h5", "r") as f:  # histpy's layout, as cosipy writes it
        assert f["hist"].attrs["format"] == "coo"
        assert list(f["hist/axes/2"].attrs["__class__"]) == ["histpy.healpix_axis",
                                                             "HealpixAxis"]


def test_units_survive_the_edges(testdata):
    rsp = histpy.Histogram.open(testdata / "test_precomputed_response.h5")
    assert rsp.unit == u.cm**2 * u.s and rsp.axes["Ei"].axis_scale == "log"
    ev = histpy.Histogram.open(testdata / "test_event_histogram_galacticCDS.hdf5")
    data = DataIF_COSI_DC2.load("g", ev.project(["Em", "Phi", "PsiChi"]), {}, rsp.to("m2 s"))
    same = DataIF_COSI_DC2.load("g", ev.project(["Em", "Phi", "PsiChi"]), {}, rsp)
    np.testing.assert_allclose(data.exposure_map.contents.value,
                               same.exposure_map.contents.value, rtol=1e-12)
    assert data.exposure_map.unit == u.cm**2 * u.s * u.sr


def test_old_containers_are_gone():
    root = Path(probdeconv.__file__).parent
    for name in ("axes.py", "coo.py", "histogram.py", "histogram_arithmetic.py",
                 "histpy_compat.py"):
        assert not (root / name).exists(), f"probdeconv/{name} should be gone (histpy instead)"


def test_info_lists_histograms_and_skips_other_groups(tmp_path, capsys):
    from probdeconv.cli.main import main

    path = tmp_path / "mixed.h5"
    write_histogram(_hist(2.0, unit="s"), path, name="map")
    with h5py.File(path, "a") as f:
        f.create_group("posterior").attrs["format"] = "metadata, not a histogram"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[map] dense, unit s, shape (2, 12), sum 48" in out
    assert "p: 12 bins [0, 12]  nside 1 RING" in out and "[posterior] not a histogram" in out
    with h5py.File(tmp_path / "none.h5", "w") as f:
        f.create_group("metadata")
    assert main(["info", str(tmp_path / "none.h5")]) == 2
    assert "no histogram" in capsys.readouterr().err
