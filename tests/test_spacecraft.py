"""Orientation → exposure table → CCM, and the response formats (cosipy's stored files)."""

from __future__ import annotations

import shutil

import astropy.units as u
import h5py
import healpy as hp
import numpy as np
import pytest
from histpy import HealpixAxis

from probdeconv import (
    AllSkyImageModel,
    CoordsysConversionMatrix,
    DataError,
    DataIF_COSI_DC2,
    FileFormatError,
    FullDetectorResponse,
    Histogram,
    ParameterError,
    RichardsonLucy,
)
from probdeconv.spacecraft import SpacecraftAttitudeExposureTable, SpacecraftFile

ORI10 = "20280301_first_10sec.ori"
TABLE = "image_deconvolution/exposure_table_test_nside1_ring.fits"
RL_PAR = {"iteration_max": 3, "acceleration": {"activate": True, "alpha_max": 10.0},
          "response_weighting": {"activate": True, "index": 0.5},
          "stopping_criteria": {"statistics": "log-likelihood", "threshold": 1e-2},
          "background_normalization_optimization": {"activate": True,
                                                    "range": {"bkg": [0.9, 1.1]}}}
# cosipy's figures for RL on the stored CCM (../shared/cosipy-testdata/README.md)
COSIPY_LOGL = [3021.5009184824, 3113.8874979921, 3139.2903622194]


@pytest.fixture(scope="module")
def ori(testdata):
    return SpacecraftFile.parse_from_file(testdata / ORI10)


@pytest.fixture(scope="module")
def table(ori):
    t = ori.get_time()
    return SpacecraftAttitudeExposureTable.from_orientation(
        ori, nside=1, scheme="ring", start=t[0], stop=t[-1], min_exposure=0, min_num_pointings=1)


@pytest.fixture(scope="module")
def rsp(testdata):
    with FullDetectorResponse.open(testdata / "test_full_detector_response.h5") as r:
        yield r


def _dense(ccm):
    return np.asarray(ccm.contents.todense())


# ---------------------------------------------------------------- orientation
def test_orientation_columns(ori):
    assert len(ori) == 11
    np.testing.assert_array_equal(ori.time_unix, 1835478000.0 + np.arange(11))
    np.testing.assert_array_equal(ori.get_time_delta().to_value(u.s), np.ones(10))
    np.testing.assert_array_equal(ori.livetime.to_value(u.s), np.ones(10))
    assert ori.has_earth_data and ori.altitude.unit == u.km
    # columns are 'OG time x_b x_l z_b z_l': the x-axis starts at l = 41.86, b = 73.15
    assert ori.x_pointings[0].l.deg == pytest.approx(41.85821768724895)
    assert ori.x_pointings[0].b.deg == pytest.approx(73.14907746670937)
    m = ori.attitude_matrices()
    np.testing.assert_allclose(np.einsum("nij,nik->njk", m, m), np.broadcast_to(np.eye(3), m.shape),
                               atol=1e-14)


def test_orientation_write_read_roundtrip(ori, tmp_path):
    ori.write(tmp_path / "o.ori")
    back = SpacecraftFile.parse_from_file(tmp_path / "o.ori")
    np.testing.assert_array_equal(back.time_unix, ori.time_unix)
    for k, v in ori.lonlat().items():
        np.testing.assert_array_equal(back.lonlat()[k], v)
    np.testing.assert_array_equal(back.livetime, ori.livetime)
    with pytest.raises(FileFormatError, match="exists"):
        ori.write(tmp_path / "o.ori")


def test_source_interval_interpolates_the_ends(ori):
    t0 = ori.time_unix[0]
    part = ori.source_interval(t0 + 2.25, t0 + 7.5)
    np.testing.assert_array_equal(part.time_unix, t0 + np.array([2.25, 3, 4, 5, 6, 7, 7.5]))
    np.testing.assert_allclose(part.livetime.to_value(u.s), [0.75, 1, 1, 1, 1, 0.5])
    np.testing.assert_array_equal(part.attitude_matrices()[1], ori.attitude_matrices()[3])
    # the interpolated attitude lies between its neighbours
    z = part.attitude_matrices()[:, :, 2]
    zo = ori.attitude_matrices()[:, :, 2]
    assert np.arccos(z[0] @ zo[2]) + np.arccos(z[0] @ zo[3]) == pytest.approx(
        np.arccos(zo[2] @ zo[3]), rel=1e-6)
    with pytest.raises(DataError, match="not inside the orientation"):
        ori.source_interval(t0 - 1, t0 + 5)
    with pytest.raises(DataError, match="not before stop"):
        ori.source_interval(t0 + 5, t0 + 5)


def test_attitude_quaternions_roundtrip():
    from scipy.spatial.transform import Rotation

    from probdeconv.spacecraft.geometry import matrix_to_quat, quat_to_matrix

    r = Rotation.random(2000, random_state=1)
    m = r.as_matrix()
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(m)), m, atol=2e-15)
    q = matrix_to_quat(m)
    assert np.all(np.abs(np.abs(np.sum(q * r.as_quat(), axis=1)) - 1) < 1e-14)


def test_dwell_map_is_the_ccm_row(ori, rsp):
    from astropy.coordinates import SkyCoord

    ccm = CoordsysConversionMatrix.time_binning_ccm(rsp, ori, ori.time_unix[[0, -1]] * u.s)
    lon, lat = hp.pix2ang(1, 5, lonlat=True)
    dwell = ori.get_dwell_map(SkyCoord(lon, lat, unit="deg", frame="galactic"), response=rsp)
    assert dwell.unit == u.s and dwell.axes[0].label == "NuLambda"
    np.testing.assert_allclose(np.asarray(dwell), _dense(ccm)[0, 5], rtol=1e-12)


# ------------------------------------------------------------ exposure table
def test_exposure_table_equals_cosipy_file(table, testdata):
    ref = SpacecraftAttitudeExposureTable.from_fits(testdata / TABLE)
    assert (table.nside, table.scheme, len(table)) == (ref.nside, ref.scheme, 1)
    for name in ("scatt_binning_index", "healpix_index_z_pointing", "healpix_index_x_pointing",
                 "exposure", "num_pointings", "bkg_group", "zpointing_averaged"):
        np.testing.assert_array_equal(table[name], ref[name], err_msg=name)
    for name in ("zpointing", "xpointing", "delta_time"):
        for a, b in zip(table[name], ref[name]):
            # directions agree to an ulp (2.8e-14 deg seen with newer astropy/erfa builds)
            np.testing.assert_allclose(a, b, rtol=4e-16, atol=0, err_msg=name)
    # one ulp (7e-15 deg) from the floating-point summation of the weighted mean
    np.testing.assert_allclose(table["xpointing_averaged"], ref["xpointing_averaged"],
                               rtol=1e-15, atol=0)
    assert table["healpix_index"] == [(2, 0)]


def test_exposure_table_fits_roundtrip(table, tmp_path):
    table.save_as_fits(tmp_path / "t.fits")
    back = SpacecraftAttitudeExposureTable.from_fits(tmp_path / "t.fits")
    assert back == table
    for name in ("livetime", "earth_zenith", "altitude"):  # cosipy 0.4's columns too
        for a, b in zip(back[name], table[name]):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(FileFormatError, match="exists"):
        table.save_as_fits(tmp_path / "t.fits")
    table.save_as_fits(tmp_path / "t.fits", overwrite=True)


def test_pointing_map_equals_cosipy_file(table, testdata):
    m = table.calc_pointing_trajectory_map()
    ref = Histogram.open(testdata / "image_deconvolution/map_pointing_zx_test_nside1_ring.hdf5")
    assert m.axes == ref.axes and m.axes.labels.tolist() == ["z", "x"] and m.unit == ref.unit == u.s
    np.testing.assert_array_equal(m.contents.todense(), ref.contents.todense())


def test_table_start_stop(ori):
    t = ori.get_time()
    whole = SpacecraftAttitudeExposureTable.from_orientation(ori, 1)
    only_start = SpacecraftAttitudeExposureTable.from_orientation(ori, 1, start=t[0])
    assert whole == only_start
    with pytest.raises(DataError, match="not inside the orientation"):
        SpacecraftAttitudeExposureTable.from_orientation(ori, 1, start=t[0] - 1 * u.s,
                                                         stop=t[-1])
    part = SpacecraftAttitudeExposureTable.from_orientation(ori, 1, start=t[2], stop=t[7])
    assert part["num_pointings"].tolist() == [5]


def test_grouping_by_first_appearance():
    from probdeconv.spacecraft.exposure_table import _group_by_first_appearance

    key = np.random.default_rng(2).integers(0, 7, 200) * 1000
    perm, offsets, keys = _group_by_first_appearance(key)
    expected_keys = list(dict.fromkeys(key.tolist()))  # first-appearance order
    assert keys.tolist() == expected_keys
    for g, k in enumerate(expected_keys):
        assert perm[offsets[g]:offsets[g + 1]].tolist() == np.flatnonzero(key == k).tolist()


def test_table_nested_and_livetime(ori):
    ring = SpacecraftAttitudeExposureTable.from_orientation(ori, 2)
    nest = SpacecraftAttitudeExposureTable.from_orientation(ori, 2, scheme="nested")
    np.testing.assert_array_equal(hp.ring2nest(2, ring["healpix_index_z_pointing"]),
                                  nest["healpix_index_z_pointing"])
    live = SpacecraftAttitudeExposureTable.from_orientation(ori, 1, use_livetime=True)
    np.testing.assert_array_equal(live["exposure"], [10.0])


# ----------------------------------------------------------------------- CCM
@pytest.mark.parametrize("name, kind", [
    ("ccm_time_test.hdf5", "time"),
    ("ccm_scatt_use_averaged_pointing_False_test.hdf5", False),
    ("ccm_scatt_use_averaged_pointing_True_test.hdf5", True),
])
def test_ccm_equals_cosipy_file(name, kind, ori, table, rsp, testdata):
    if kind == "time":
        ccm = CoordsysConversionMatrix.time_binning_ccm(
            rsp, ori, [ori.get_time()[0].value, ori.get_time()[-1].value] * u.s)
    else:
        ccm = CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(
            rsp, table, use_averaged_pointing=kind)
    ref = CoordsysConversionMatrix.open(testdata / "image_deconvolution" / name)
    assert isinstance(ccm, CoordsysConversionMatrix)
    assert ccm.binning_method == ref.binning_method == ("Time" if kind == "time" else "ScAtt")
    assert ccm.axes == ref.axes and ccm.unit == ref.unit == u.s
    assert [a.label for a in ccm.axes] == [a.label for a in ref.axes]
    assert ccm.axes["NuLambda"].coordsys == ref.axes["NuLambda"].coordsys
    a, b = _dense(ccm), _dense(ref)
    assert np.count_nonzero(a) == np.count_nonzero(b) == 48
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=0)
    assert np.abs(a - b).max() <= 1e-14 * b.max()  # measured: <= 8e-16


def test_ccm_write_opens_as_ccm(table, rsp, tmp_path):
    ccm = CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(rsp, table)
    ccm.write(tmp_path / "ccm.h5")
    back = CoordsysConversionMatrix.open(tmp_path / "ccm.h5")
    assert isinstance(back, CoordsysConversionMatrix) and back.is_sparse
    assert back.binning_method == "ScAtt" and back.axes == ccm.axes
    np.testing.assert_array_equal(_dense(back), _dense(ccm))


def test_earth_occultation_and_livetime(ori, rsp, table):
    """The test .ori has altitude 0 and zenith (l, b) = (0, 0): half the sky is hidden."""
    edges = ori.time_unix[[0, -1]] * u.s
    free = _dense(CoordsysConversionMatrix.time_binning_ccm(rsp, ori, edges))
    occ = _dense(CoordsysConversionMatrix.time_binning_ccm(rsp, ori, edges, earth_occ=True))
    x_gal = np.stack(hp.pix2vec(1, np.arange(12)), axis=-1)[:, 0]
    np.testing.assert_array_equal(occ[0, x_gal > 0], free[0, x_gal > 0])
    assert not occ[0, x_gal <= 0].any() and free[0, x_gal <= 0].any()
    for avg in (False, True):
        s_free = CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(
            rsp, table, use_averaged_pointing=avg)
        s_occ = CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(
            rsp, table, use_averaged_pointing=avg, earth_occ=True)
        np.testing.assert_array_equal(_dense(s_occ)[0, x_gal > 0], _dense(s_free)[0, x_gal > 0])
        assert not _dense(s_occ)[0, x_gal <= 0].any()
    half = SpacecraftFile(ori.time_unix, ori.x_pointings, ori.z_pointings,
                          livetime=0.5 * np.ones(10))
    live = _dense(CoordsysConversionMatrix.time_binning_ccm(rsp, half, edges, use_livetime=True))
    np.testing.assert_allclose(live, 0.5 * free, rtol=1e-14)
    with pytest.raises(DataError, match="earth_occ=False"):
        CoordsysConversionMatrix.time_binning_ccm(rsp, half, edges, earth_occ=True)


def test_blocked_visible_time_equals_brute_force():
    from probdeconv.spacecraft.ccm import visible_time_per_bin
    from probdeconv.spacecraft.geometry import earth_visible, healpix_directions, limb_cos

    rng = np.random.default_rng(7)
    n = 5000  # a zenith moving 0.06 deg per step along a wobbling track, 5 bins
    phase = np.cumsum(np.full(n, np.radians(0.064)))
    zen = np.stack([np.cos(phase), np.sin(phase), 0.3 * np.sin(phase / 7)], axis=1)
    zen /= np.linalg.norm(zen, axis=1, keepdims=True)
    alt = 530 + 20 * rng.random(n)
    dt = rng.random(n)
    row_bin = np.sort(rng.integers(0, 5, n))
    dirs = healpix_directions(4)
    fast = visible_time_per_bin(zen, limb_cos(alt), dt, row_bin, 6, dirs, blocks=(16, 4))
    vis = earth_visible(dirs, zen, alt) * dt[:, None]
    brute = np.stack([vis[row_bin == b].sum(axis=0) for b in range(6)])
    np.testing.assert_allclose(fast, brute, rtol=1e-12, atol=1e-12)
    assert 0 < np.count_nonzero(brute) < brute.size


def test_time_ccm_bins_split_the_orientation(ori, rsp):
    t0 = ori.time_unix[0]
    one = _dense(CoordsysConversionMatrix.time_binning_ccm(rsp, ori, [t0, t0 + 10]))
    three = CoordsysConversionMatrix.time_binning_ccm(rsp, ori, [t0, t0 + 3, t0 + 6, t0 + 10])
    assert three.axes["Time"].unit == u.s
    np.testing.assert_allclose(_dense(three).sum(axis=0), one[0], rtol=1e-13, atol=1e-15)
    # an edge between stamps: the interval is split, the part after it starts with the
    # interpolated attitude
    split = _dense(CoordsysConversionMatrix.time_binning_ccm(rsp, ori, [t0, t0 + 2.5, t0 + 10]))
    np.testing.assert_allclose(split.sum(axis=(1, 2)), [12 * 2.5, 12 * 7.5], rtol=1e-12)
    with pytest.raises(DataError, match="not inside the orientation"):
        CoordsysConversionMatrix.time_binning_ccm(rsp, ori, [t0, t0 + 11])


def test_rl_on_files_made_here_matches_stored_ccm(ori, rsp, testdata, tmp_path):
    """.ori → table (FITS) → CCM (HDF5) → RL gives cosipy's log-likelihoods."""
    SpacecraftAttitudeExposureTable.from_orientation(ori, nside=1).save_as_fits(
        tmp_path / "table.fits")
    table = SpacecraftAttitudeExposureTable.from_fits(tmp_path / "table.fits")
    CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(
        rsp, table, use_averaged_pointing=True).write(tmp_path / "ccm.h5")
    ev = Histogram.open(testdata / "image_deconvolution/test_event_histogram_localCDS_scatt.h5")
    stored = CoordsysConversionMatrix.open(
        testdata / "image_deconvolution/ccm_scatt_use_averaged_pointing_True_test.hdf5")
    logl = {}
    for key, ccm in (("ours", CoordsysConversionMatrix.open(tmp_path / "ccm.h5")),
                     ("stored", stored)):
        data = DataIF_COSI_DC2.load("scatt", ev, {"bkg": ev * 1.0}, rsp,
                                    coordsys_conv_matrix=ccm, is_miniDC2_format=True)
        model = AllSkyImageModel(1, data.model_axes["Ei"].edges)
        model[:] = 1.0 * model.unit
        algo = RichardsonLucy(model, [data], None, RL_PAR)
        algo.initialization()
        while not algo.iteration():
            pass
        logl[key] = [r["log-likelihood"][0] for r in algo.results]
    np.testing.assert_allclose(logl["stored"], COSIPY_LOGL, rtol=0, atol=1e-9)
    np.testing.assert_allclose(logl["ours"], logl["stored"], rtol=1e-12)


# --------------------------------------------------------- response formats
def _write_v2(path, v1_path, counts, eff_area):
    """A version-2 response as cosipy 0.4's RspConverter lays it out."""
    import hdf5plugin

    with h5py.File(v1_path, "r") as src, h5py.File(path, "w") as f:
        drm = f.create_group("DRM")
        drm.attrs["VERSION"] = 2
        drm.attrs["UNIT"] = "cm2"
        drm.attrs["SPARSE"] = False
        drm.create_group("HEADERS").attrs["TS"] = "1000000"
        axes = drm.create_group("AXES")
        for i, label in enumerate(["NuLambda", "Ei", "Em", "Phi", "PsiChi"]):
            a = src["DRM/AXES"][label]
            ds = axes.create_dataset(str(i), data=a[()])
            healpix = a.attrs["TYPE"] == "healpix"
            ds.attrs["__class__"] = ("histpy.healpix_axis", "HealpixAxis") if healpix else \
                ("histpy.axis", "Axis")
            ds.attrs["label"] = label
            ds.attrs["scale"] = "linear" if healpix else a.attrs["TYPE"]
            if healpix:
                ds.attrs["nside"] = a.attrs["NSIDE"]
                ds.attrs["scheme"] = "RING"
                ds.attrs["coordsys"] = "spacecraftframe"
            else:
                ds.attrs["unit"] = a.attrs["UNIT"]
        drm.create_dataset("EFF_AREA", data=eff_area)
        drm.create_dataset("COUNTS", data=counts, chunks=(1, 1, *counts.shape[2:]),
                           **hdf5plugin.Bitshuffle())


def test_version2_response_reads_like_version1(testdata, tmp_path):
    dense = testdata / "test_full_detector_response_dense.h5"
    rng = np.random.default_rng(3)
    counts = rng.poisson(3.0, (12, 10, 10, 30, 12)).astype(np.uint16)
    eff_area = np.geomspace(1e-6, 1e-7, 10)
    v1 = tmp_path / "v1.h5"
    shutil.copy(dense, v1)
    with h5py.File(v1, "r+") as f:
        f["DRM/CONTENTS"][...] = counts * eff_area[None, :, None, None, None]
    _write_v2(tmp_path / "v2.h5", dense, counts, eff_area)
    with h5py.File(tmp_path / "v2.h5") as f:
        assert f["DRM/COUNTS"]._filters.get("32008") is not None  # bitshuffle
    with FullDetectorResponse.open(v1) as a, FullDetectorResponse.open(tmp_path / "v2.h5") as b:
        assert (a.version, b.version) == (1, 2) and not b.is_sparse
        assert a.axes == b.axes and b.unit == u.cm**2 and b.nside == 1
        ra, rb = a.to_image_response(), b.to_image_response()
    assert ra.axes == rb.axes
    np.testing.assert_array_equal(np.asarray(rb), np.asarray(ra))


def test_version2_response_with_wrong_eff_area(testdata, tmp_path):
    counts = np.ones((12, 10, 10, 30, 12), dtype=np.uint8)
    _write_v2(tmp_path / "v2.h5", testdata / "test_full_detector_response_dense.h5", counts,
              np.ones(3))
    with pytest.raises(FileFormatError, match="EFF_AREA has 3 values; expected 10"):
        FullDetectorResponse.open(tmp_path / "v2.h5")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("edit, message", [
    (lambda ls: ls[:3] + ["OG 1835478003.0 72.9 41.9 17.0 abc 0 0 0 1"] + ls[4:],
     r":4: .*could not convert|:4: .*must be a number"),
    (lambda ls: ls[:3] + [ls[4], ls[3]] + ls[5:], r":5: time .* is not after"),
    (lambda ls: ["Type OrientationsEquatorial"] + ls[1:], r":1: header"),
    (lambda ls: ls[:-1], r"ends with a line 'EN'"),
    (lambda ls: ls[:3] + ["XX 1 2 3"] + ls[3:], r":4: .*does not start with 'OG'"),
    (lambda ls: ls[:3] + ["OG 1835478002.5 100.0 41.9 17.0 221.9 0 0 0 1"] + ls[4:],
     r":4: latitude x_b = 100.0"),
])
def test_malformed_orientation_names_the_line(testdata, tmp_path, edit, message):
    lines = (testdata / ORI10).read_text().splitlines()
    (tmp_path / "bad.ori").write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(FileFormatError, match=message):
        SpacecraftFile.parse_from_file(tmp_path / "bad.ori")


def test_ccm_nside_differs_from_model(table, rsp, testdata):
    ccm = CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(rsp, table, nside_model=2)
    assert ccm.axes["lb"].nside == 2
    ev = Histogram.open(testdata / "image_deconvolution/test_event_histogram_localCDS_scatt.h5")
    data = DataIF_COSI_DC2.load("scatt", ev, {}, rsp, coordsys_conv_matrix=ccm)
    model = AllSkyImageModel(1, data.model_axes["Ei"].edges)  # NSIDE 1: 12 pixels, not 48
    model[:] = 1.0 * model.unit
    with pytest.raises(DataError, match=r"model has shape \(12, 10\); expected \(48, 10\)"):
        data.calc_expectation(model)
    with pytest.raises(ParameterError, match="nside_model=3"):
        CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(rsp, table, nside_model=3,
                                                                 scheme_model="nested")


def test_no_bin_left_after_min_exposure(ori):
    with pytest.raises(DataError, match=r"no ScAtt bin left.*largest exposure 10 s"):
        SpacecraftAttitudeExposureTable.from_orientation(ori, 1, min_exposure=11.0)


def test_exposure_table_file_errors(tmp_path):
    from astropy.io import fits

    with pytest.raises(FileFormatError, match="no such file"):
        SpacecraftAttitudeExposureTable.from_fits(tmp_path / "missing.fits")
    fits.HDUList([fits.PrimaryHDU()]).writeto(tmp_path / "empty.fits")
    with pytest.raises(FileFormatError, match="no extension EXPOSURETABLE"):
        SpacecraftAttitudeExposureTable.from_fits(tmp_path / "empty.fits")


def test_local_axis_accepted_instead_of_response(table, rsp):
    axis = HealpixAxis(nside=1, label="NuLambda", coordsys="spacecraftframe")
    a = CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(axis, table)
    b = CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(rsp, table)
    np.testing.assert_array_equal(_dense(a), _dense(b))
