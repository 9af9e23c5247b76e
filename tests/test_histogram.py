"""Tests of probdeconv.histogram and probdeconv.io.histpy_h5."""

from __future__ import annotations

import os
from pathlib import Path

import astropy.units as u
import h5py
import healpy as hp
import numpy as np
import pytest

from probdeconv.errors import AxisMismatchError, DataError, FileFormatError, ParameterError
from probdeconv.histogram import (
    Axes,
    Axis,
    CooContents,
    HealpixAxis,
    Histogram,
    as_histogram,
)
from probdeconv.io.histpy_h5 import read_histogram, write_histogram

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "cosipy-testdata"


def _testdata(relpath: str) -> Path:
    path = TESTDATA / relpath
    if not path.is_file():
        pytest.skip(f"cosipy test data {path} is not present (expected ../shared/cosipy-testdata)")
    return path


@pytest.fixture
def axes() -> Axes:
    return Axes([HealpixAxis(nside=1, label="lb", coordsys="galactic"),
                 Axis(np.geomspace(100.0, 1000.0, 4) * u.keV, label="Ei", scale="log")])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _sparse_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    values = rng.random(shape)
    values[values < 0.6] = 0.0
    return values


def _assert_same(a: Histogram, b: Histogram) -> None:
    assert a.axes == b.axes
    assert a.axes.labels == b.axes.labels
    for x, y in zip(a.axes, b.axes):
        assert type(x) is type(y)
        assert x.scale == y.scale
        assert x.unit == y.unit
        assert np.asarray(x.edges).dtype == np.asarray(y.edges).dtype
        if isinstance(x, HealpixAxis):
            assert (x.nside, x.scheme, x.coordsys) == (y.nside, y.scheme, y.coordsys)
    assert a.unit == b.unit
    assert a.is_sparse == b.is_sparse
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------- Axis
def test_axis_properties_linear() -> None:
    ax = Axis([0, 1, 3, 6], label="x")
    assert ax.nbins == len(ax) == 3
    np.testing.assert_array_equal(ax.edges, [0, 1, 3, 6])
    np.testing.assert_array_equal(ax.lower_bounds, [0, 1, 3])
    np.testing.assert_array_equal(ax.upper_bounds, [1, 3, 6])
    np.testing.assert_allclose(ax.centers, [0.5, 2.0, 4.5])
    np.testing.assert_array_equal(ax.widths, [1, 2, 3])
    assert (ax.lo_lim, ax.hi_lim) == (0, 6)
    assert ax.unit is None and ax.scale == "linear"
    np.testing.assert_array_equal(ax.find_bin([-1, 0, 0.5, 5.9, 6, 7]), [-1, 0, 0, 2, 3, 3])
    ax.label = "y"
    assert ax.label == "y"


def test_axis_units_and_scales() -> None:
    ax = Axis([100.0, 1000.0, 10000.0] * u.keV, label="Em", scale="log")
    assert ax.unit == u.keV
    assert isinstance(ax.edges, u.Quantity)
    np.testing.assert_allclose(ax.centers.to_value(u.keV), [np.sqrt(1e5), np.sqrt(1e7)])
    assert ax.find_bin(2 * u.MeV) == 1
    assert ax.find_bin(500.0) == 0  # plain numbers are in the axis unit
    converted = Axis([1.0, 2.0] * u.MeV, unit="keV")
    np.testing.assert_allclose(converted.edges.to_value(u.keV), [1000.0, 2000.0])
    sym = Axis([0.0, 2.0, 4.0], scale="symmetric")
    np.testing.assert_allclose(sym.centers, [0.0, 3.0])
    with pytest.raises(DataError, match="cannot be expressed"):
        ax.find_bin(3 * u.s)


def test_axis_equality_ignores_label_and_scale() -> None:
    a = Axis([1.0, 2.0, 4.0], label="a", unit="keV")
    assert a == Axis([1.0, 2.0, 4.0], label="b", scale="log", unit="keV")
    assert a != Axis([1.0, 2.0, 4.0], unit="MeV")
    assert a != Axis([1.0, 2.0, 5.0], unit="keV")
    assert Axis(np.arange(13)) != HealpixAxis(nside=1)
    assert a.copy() == a and a.copy() is not a


def test_axis_edges_are_read_only() -> None:
    ax = Axis([0.0, 1.0, 2.0])
    with pytest.raises(ValueError):
        ax.edges[0] = 5.0


@pytest.mark.parametrize(("edges", "fragment"), [
    ([0.0, 2.0, 1.0], "strictly increasing"),
    ([1.0, 1.0, 2.0], "strictly increasing"),
    ([0.0, np.nan, 2.0], "strictly increasing"),
    ([5.0], "at least 2"),
    ([[0.0, 1.0], [1.0, 2.0]], "1-D"),
    (["a", "b"], "numbers"),
])
def test_axis_rejects_bad_edges(edges: list, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment) as info:
        Axis(edges, label="Phi")
    assert "'Phi'" in str(info.value)


def test_axis_rejects_bad_scale() -> None:
    with pytest.raises(ParameterError, match="'cubic'"):
        Axis([1.0, 2.0], scale="cubic")
    with pytest.raises(ParameterError, match="positive"):
        Axis([0.0, 1.0], label="E", scale="log")


# ------------------------------------------------------------------ HealpixAxis
def test_healpix_axis() -> None:
    ax = HealpixAxis(nside=2, scheme="nest", label="NuLambda", coordsys="spacecraftframe")
    assert (ax.nside, ax.npix, ax.nbins, ax.scheme, ax.nest) == (2, 48, 48, "NESTED", True)
    assert ax.edges.dtype == np.int64
    np.testing.assert_array_equal(ax.edges, np.arange(49))
    assert ax.pixarea().unit == u.sr
    assert ax.pixarea().value == pytest.approx(4 * np.pi / 48)
    lon, lat = ax.pix2ang([0, 5])
    exp_lon, exp_lat = hp.pix2ang(2, [0, 5], nest=True, lonlat=True)
    np.testing.assert_allclose(lon, exp_lon)
    np.testing.assert_allclose(lat, exp_lat)
    assert ax.coordsys == "spacecraftframe"
    assert HealpixAxis(scheme="RING", edges=np.arange(13)).nside == 1
    assert HealpixAxis(nside=1, scheme="Ring").scheme == "RING"
    assert ax.copy() == ax


def test_healpix_axis_equality() -> None:
    ring = HealpixAxis(nside=1, label="a", coordsys="galactic")
    assert ring == HealpixAxis(nside=1, label="b")  # coordsys and label ignored
    assert ring != HealpixAxis(nside=1, scheme="nested")
    assert HealpixAxis(nside=1, edges=[0, 6, 12]) != HealpixAxis(nside=2, edges=[0, 6, 12])


def test_healpix_axis_rejects_bad_input() -> None:
    with pytest.raises(ParameterError, match="'diamond'"):
        HealpixAxis(nside=1, scheme="diamond")
    with pytest.raises(ParameterError, match="nside=3"):
        HealpixAxis(nside=3, scheme="nested")
    with pytest.raises(DataError, match="0..12"):
        HealpixAxis(nside=1, edges=[0, 6, 20], label="lb")
    with pytest.raises(DataError, match="13 pixels"):
        HealpixAxis(edges=np.arange(14))
    with pytest.raises(DataError, match="integer"):
        HealpixAxis(nside=1, edges=[0.0, 0.5, 12.0])
    with pytest.raises(ParameterError, match="nside or edges"):
        HealpixAxis()


# ------------------------------------------------------------------------- Axes
def test_axes_access(axes: Axes) -> None:
    assert axes.labels == ("lb", "Ei")
    assert axes.nbins == axes.shape == (12, 3)
    assert axes.ndim == len(axes) == 2
    assert axes["Ei"] is axes[1] and axes[-1] is axes[1]
    sub = axes[["Ei", "lb"]]
    assert isinstance(sub, Axes) and sub.labels == ("Ei", "lb")
    assert axes.label_to_index(["Ei", 0]) == (1, 0)
    assert [a.label for a in axes] == ["lb", "Ei"]
    assert axes == axes.copy()
    assert axes != sub


def test_axes_unknown_label_lists_available(axes: Axes) -> None:
    with pytest.raises(AxisMismatchError, match="'PsiChi'") as info:
        axes["PsiChi"]
    assert "['lb', 'Ei']" in str(info.value)
    with pytest.raises(AxisMismatchError, match="out of range"):
        axes.label_to_index(5)


def test_axes_rejects_duplicates_and_non_axes() -> None:
    with pytest.raises(DataError, match="'x'"):
        Axes([Axis([0, 1], label="x"), Axis([0, 2], label="x")])
    with pytest.raises(DataError, match="entry 1"):
        Axes([Axis([0, 1]), [0, 1, 2]])
    with pytest.raises(DataError, match="at least one"):
        Axes([])


# ------------------------------------------------------------------ CooContents
def test_coo_contents(rng: np.random.Generator) -> None:
    dense = _sparse_values(rng, (4, 5, 6))
    coo = CooContents.from_dense(dense)
    assert coo.nnz == np.count_nonzero(dense) and coo.shape == (4, 5, 6)
    assert coo.coords.dtype == np.int64 and coo.coords.shape == (3, coo.nnz)
    np.testing.assert_array_equal(coo.todense(), dense)
    assert coo.sum() == pytest.approx(dense.sum())
    filled = CooContents([[0, 2]], [5.0, 7.0], (4,), fill_value=1.0)
    np.testing.assert_array_equal(filled.todense(), [5.0, 1.0, 7.0, 1.0])
    assert filled.sum() == 14.0
    with pytest.raises(DataError, match=r"outside the shape \(4,\)"):
        CooContents([[0, 4]], [1.0, 1.0], (4,))
    with pytest.raises(DataError, match=r"\(1, 2\)"):
        CooContents([[0, 1, 2]], [1.0, 1.0], (4,))


# --------------------------------------------------------------- construction
def test_histogram_construction_forms(axes: Axes) -> None:
    h = Histogram(axes)
    assert h.nbins == (12, 3) and h.ndim == 2 and h.unit is None and not h.is_sparse
    assert h.sum() == 0
    one = Histogram([0.0, 1.0, 2.0], labels=["x"])
    assert one.axes.labels == ("x",) and one.nbins == (2,)
    two = Histogram([np.arange(4), np.arange(3)], labels=["a", "b"], axis_scale=["linear", None])
    assert two.nbins == (3, 2)
    q = Histogram(Axis([0.0, 1.0, 2.0], label="t"), [1.0, 2.0] * u.m, unit="cm")
    assert q.unit == u.cm
    np.testing.assert_allclose(q.contents.value, [100.0, 200.0])
    assert Histogram(axes, np.ones((12, 3)), sparse=True).is_sparse
    dense = Histogram(axes, CooContents.from_dense(np.ones((12, 3))), sparse=False)
    assert not dense.is_sparse
    assert dense.axes["lb"] is not axes["lb"]  # axes are copied


def test_histogram_wrong_shape_names_both_shapes(axes: Axes) -> None:
    with pytest.raises(DataError) as info:
        Histogram(axes, np.zeros((12, 4)))
    assert "(12, 4)" in str(info.value) and "(12, 3)" in str(info.value)
    with pytest.raises(DataError, match="cannot be converted"):
        Histogram(axes, np.zeros((12, 3)) * u.s, unit="cm")


def test_histogram_strips_overflow_bins(axes: Axes, rng: np.random.Generator) -> None:
    full = rng.random((14, 5))
    h = Histogram(axes, full)
    assert h.nbins == (12, 3) and h.track_overflow == (True, True)
    np.testing.assert_array_equal(h.contents, full[1:-1, 1:-1])
    sparse = Histogram(axes, CooContents.from_dense(full))
    assert sparse.is_sparse and sparse.contents.shape == (12, 3)
    np.testing.assert_array_equal(sparse.contents.todense(), full[1:-1, 1:-1])


def test_bool_mask(axes: Axes) -> None:
    mask = Histogram(axes, contents=np.ones((12, 3), bool))
    mask[0, 0] = False
    assert mask.dtype == bool
    assert mask.sum() == 35
    assert not mask[0, 0] and mask[0, 1]
    assert np.asarray(mask).dtype == bool


# -------------------------------------------------------------- item access
def test_getitem_and_setitem_with_units(axes: Axes) -> None:
    h = Histogram(axes, unit="cm-2 s-1 sr-1")
    h[:] = 1.0 * h.unit
    assert isinstance(h[:], u.Quantity) and h.sum() == 36 * h.unit
    h[:, 0] = 2.0 * u.Unit("m-2 s-1 sr-1")
    np.testing.assert_allclose(h[0].value, [2e-4, 1.0, 1.0])
    h[:, 1] = 3.0  # plain numbers are taken to be in the histogram unit
    assert h[0, 1] == 3.0 * h.unit
    h.contents[0, 2] = 7.0 * h.unit  # contents is a view
    assert h[0, 2].value == 7.0
    with pytest.raises(DataError, match="cm2"):
        h[0, 0] = 1.0 * u.cm**2
    with pytest.raises(DataError, match="to_dense"):
        h.to_sparse()[0, 0] = 1.0


# ----------------------------------------------------------------- projection
def test_project(rng: np.random.Generator) -> None:
    axes = Axes([Axis([0, 1, 2], label="a"), Axis([0, 1, 2, 3], label="b"),
                 Axis([0, 1, 2, 3, 4], label="c")])
    values = _sparse_values(rng, (2, 3, 4))
    h = Histogram(axes, values, unit="s")
    p = h.project("c", "a")
    assert p.axes.labels == ("c", "a") and p.unit == u.s
    np.testing.assert_allclose(p.contents.value, values.sum(axis=1).T)
    np.testing.assert_allclose(h.project(["b"]).contents.value, values.sum(axis=(0, 2)))
    sp = h.to_sparse().project(["c", "a"])
    assert sp.is_sparse
    np.testing.assert_allclose(np.asarray(sp), values.sum(axis=1).T)
    with pytest.raises(AxisMismatchError, match="'d'"):
        h.project("d")
    assert np.sum(h) == h.sum() == values.sum() * u.s
    np.testing.assert_allclose(h.sum(axis=["a", "c"]).value, values.sum(axis=(0, 2)))
    np.testing.assert_allclose(h.to_sparse().sum(axis="b").value, values.sum(axis=1))
    with pytest.raises(ParameterError, match="twice"):
        h.project("a", "a")


# ----------------------------------------------------------------- arithmetic
def test_arithmetic_units(axes: Axes) -> None:
    flux = Histogram(axes, np.full((12, 3), 2.0), unit="cm-2 s-1 sr-1")
    resp = Histogram(axes, np.full((12, 3), 4.0), unit="cm2 s")
    counts = flux * resp
    assert counts.unit == u.Unit("1 / sr") and counts[0, 0].value == 8.0
    assert (resp / flux).unit == u.Unit("cm4 s2 sr")
    assert (2 * flux)[0, 0].value == 4.0 and (flux / 2)[0, 0].value == 1.0
    assert (1 / flux).unit == u.Unit("cm2 s sr")
    assert (flux * u.sr).unit == u.Unit("cm-2 s-1")
    assert (flux + flux)[0, 0].value == 4.0 and (flux - flux).sum().value == 0.0
    assert (-flux)[0, 0].value == -2.0
    by_array = np.arange(36.0).reshape(12, 3) * flux
    assert isinstance(by_array, Histogram) and by_array[11, 2].value == 70.0
    by_quantity = (3 * u.s) * flux
    assert isinstance(by_quantity, Histogram) and by_quantity.unit == u.Unit("cm-2 sr-1")
    assert (flux + 1.0 * u.Unit("m-2 s-1 sr-1"))[0, 0].value == pytest.approx(2.0001)
    plain = Histogram(axes, np.ones((12, 3)))
    assert (plain + 1)[0, 0] == 2.0 and (1 - plain).sum() == 0.0
    with pytest.raises(DataError, match="cm2 s"):
        flux + resp
    with pytest.raises(DataError, match=r"\(5,\)"):
        flux * np.ones(5)


def test_inplace_arithmetic(axes: Axes) -> None:
    h = Histogram(axes, np.ones((12, 3)), unit="cm2")
    alias = h
    h += 1.0 * u.cm**2
    h *= 2.0 * u.s
    h /= 4.0
    h -= Histogram(axes, np.ones((12, 3)), unit="cm2 s")
    assert alias is h
    assert h.unit == u.Unit("cm2 s")
    np.testing.assert_allclose(h.contents.value, 0.0)


def test_arithmetic_axis_mismatch_names_axis(axes: Axes) -> None:
    h = Histogram(axes, np.ones((12, 3)))
    other = Histogram([np.arange(13), [100.0, 200.0, 500.0, 1000.0] * u.keV],
                      np.ones((12, 3)), labels=["lb", "Ei"])
    with pytest.raises(AxisMismatchError) as info:
        h * other
    text = str(info.value)
    assert "axis 0" in text and "'lb'" in text and "nside=1" in text
    other2 = Histogram([HealpixAxis(nside=1, label="lb"),
                        Axis([100.0, 200.0, 500.0, 1000.0] * u.keV, label="Ei")])
    with pytest.raises(AxisMismatchError, match="'Ei'.*500"):
        h + other2


def test_sparse_arithmetic_stays_sparse(axes: Axes, rng: np.random.Generator) -> None:
    values = _sparse_values(rng, (12, 3))
    s = Histogram(axes, values, unit="s", sparse=True)
    d = Histogram(axes, values, unit="s")
    for res, ref in [(s * 2, d * 2), (s / (2 * u.s), d / (2 * u.s)), (s + s, d + d),
                     (s - 2 * s, d - 2 * d), (s * np.arange(3.0), d * np.arange(3.0)),
                     (s * d, d * d)]:
        assert res.is_sparse and res.unit == ref.unit
        np.testing.assert_allclose(np.asarray(res), np.asarray(ref))
    mixed = s + d
    assert not mixed.is_sparse
    np.testing.assert_allclose(np.asarray(mixed), 2 * values)


def test_to_unit_copy_and_array(axes: Axes) -> None:
    h = Histogram(axes, np.ones((12, 3)), unit="m2", sumw2=np.ones((12, 3)))
    c = h.to("cm2")
    assert c.unit == u.cm**2 and c[0, 0].value == pytest.approx(1e4)
    np.testing.assert_allclose(c.sumw2, 1e8)
    with pytest.raises(DataError, match="not equivalent"):
        h.to("s")
    dup = h.copy()
    dup[0, 0] = 5.0
    assert h[0, 0].value == 1.0
    arr = np.asarray(h)
    assert type(arr) is np.ndarray and arr.shape == (12, 3)
    assert "lb(12)" in repr(h) and "m2" in repr(h)


def test_as_histogram_rejects_other_types(axes: Axes) -> None:
    h = Histogram(axes)
    assert as_histogram(h) is h
    with pytest.raises(DataError, match="builtins.dict"):
        as_histogram({"a": 1})


# --------------------------------------------------------------------- file io
def _make(kind: str, rng: np.random.Generator) -> Histogram:
    healpix = Axes([Axis([0, 1], label="ScAtt"),
                    HealpixAxis(nside=1, label="lb", coordsys="galactic"),
                    HealpixAxis(nside=2, scheme="nested", label="NuLambda",
                                coordsys="spacecraftframe")])
    energy = Axes([Axis([150.0, 220.0, 325.0, 480.0] * u.keV, label="Em", scale="log"),
                   Axis(np.linspace(0, 180, 7) * u.deg, label="Phi")])
    if kind == "dense_unit":
        return Histogram(energy, rng.random((3, 6)), unit="1 / (s sr cm2)")
    if kind == "dense_nounit":
        return Histogram(energy, rng.integers(0, 5, (3, 6)))
    if kind == "sparse_healpix":
        return Histogram(healpix, _sparse_values(rng, (1, 12, 48)), unit="s", sparse=True)
    if kind == "dense_healpix":
        return Histogram(healpix, rng.random((1, 12, 48)), unit="cm2 s")
    if kind == "bool":
        return Histogram(energy, rng.random((3, 6)) > 0.5)
    if kind == "overflow_dense":
        full = rng.random((5, 8))
        full[0], full[-1], full[:, 0], full[:, -1] = 0.0, 0.0, 0.0, 0.0
        return Histogram(energy, full, unit="s")
    if kind == "overflow_sparse":
        return Histogram(energy, CooContents.from_dense(np.pad(_sparse_values(rng, (3, 6)), 1)))
    if kind == "sumw2":
        return Histogram(energy, rng.random((3, 6)), unit="s", sumw2=rng.random((3, 6)))
    raise AssertionError(kind)


KINDS = ["dense_unit", "dense_nounit", "sparse_healpix", "dense_healpix", "bool",
         "overflow_dense", "overflow_sparse", "sumw2"]


@pytest.mark.parametrize("kind", KINDS)
def test_write_read_round_trip(kind: str, tmp_path: Path, rng: np.random.Generator) -> None:
    h = _make(kind, rng)
    path = tmp_path / "h.h5"
    h.write(path)
    back = Histogram.open(path)
    _assert_same(h, back)
    assert back.track_overflow == h.track_overflow
    if h.sumw2 is not None:
        np.testing.assert_array_equal(back.sumw2, h.sumw2)
    with h5py.File(path) as f:
        group = f["hist"]
        assert group.attrs["format"] == ("coo" if h.is_sparse else "dense")
        assert ("unit" in group.attrs) == (h.unit is not None)
        shape = (group["contents/shape"][()] if h.is_sparse else group["contents"].shape)
        expect = np.array(h.nbins) + 2 * np.array(h.track_overflow)
        np.testing.assert_array_equal(shape, expect)
        cls = list(group["axes/0"].attrs["__class__"])
        assert cls in (["histpy.axis", "Axis"], ["histpy.healpix_axis", "HealpixAxis"])
    assert [p.name for p in tmp_path.iterdir()] == ["h.h5"]  # no temp file left


def test_several_groups_and_overwrite(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "multi.h5"
    first, second = _make("dense_unit", rng), _make("sparse_healpix", rng)
    write_histogram(first, path)
    write_histogram(second, path, name="ccm")
    _assert_same(read_histogram(path), first)
    _assert_same(read_histogram(path, "ccm"), second)
    before = path.read_bytes()
    with pytest.raises(FileFormatError, match="already holds a group 'ccm'") as info:
        write_histogram(first, path, name="ccm")
    assert str(path) in str(info.value) and "overwrite=True" in str(info.value)
    assert path.read_bytes() == before
    write_histogram(first, path, name="ccm", overwrite=True)
    _assert_same(read_histogram(path, "ccm"), first)
    _assert_same(read_histogram(path), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.h5"]
    os.chmod(path, 0o640)  # adding a group keeps the file's permissions
    write_histogram(second, path, name="extra")
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_write_refuses_non_hdf5_target(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "notes.h5"
    path.write_text("not hdf5")
    with pytest.raises(FileFormatError, match="not a readable HDF5"):
        _make("dense_unit", rng).write(path)
    assert path.read_text() == "not hdf5"
    _make("dense_unit", rng).write(path, overwrite=True)
    assert Histogram.open(path).nbins == (3, 6)
    with pytest.raises(FileFormatError, match="does not exist"):
        _make("dense_unit", rng).write(tmp_path / "nodir" / "x.h5")


def test_open_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.h5"
    with pytest.raises(FileFormatError, match="no such file") as info:
        Histogram.open(path)
    assert str(path) in str(info.value)


def test_open_truncated_file(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "cut.h5"
    _make("dense_healpix", rng).write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError) as info:
        read_histogram(path)
    assert str(path) in str(info.value)
    assert "truncated" in str(info.value)


def test_open_missing_group_lists_groups(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "g.h5"
    _make("dense_unit", rng).write(path, name="model")
    with pytest.raises(FileFormatError, match="no group 'hist'") as info:
        Histogram.open(path)
    assert "['model']" in str(info.value) and str(path) in str(info.value)
    with h5py.File(path, "a") as f:
        f.create_group("broken").create_group("axes")
    with pytest.raises(FileFormatError, match=r"missing \['contents'\]"):
        Histogram.open(path, "broken")


# ------------------------------------------------------------ cosipy test data
HISTPY_FILES = {
    "test_event_histogram_galacticCDS.hdf5": (("Time", "Em", "Phi", "PsiChi"), (1, 10, 30, 12)),
    "test_event_histogram_localCDS.hdf5": (("Time", "Em", "Phi", "PsiChi"), (1, 10, 30, 12)),
    "test_precomputed_response.h5": (("NuLambda", "Ei", "Em", "Phi", "PsiChi"),
                                     (12, 10, 10, 30, 12)),
    "image_deconvolution/test_event_histogram_localCDS_scatt.h5": (
        ("ScAtt", "Em", "Phi", "PsiChi"), (1, 10, 30, 12)),
    "image_deconvolution/ccm_scatt_use_averaged_pointing_True_test.hdf5": (
        ("ScAtt", "lb", "NuLambda"), (1, 12, 12)),
    "image_deconvolution/ccm_scatt_use_averaged_pointing_False_test.hdf5": (
        ("ScAtt", "lb", "NuLambda"), (1, 12, 12)),
    "image_deconvolution/ccm_time_test.hdf5": (("Time", "lb", "NuLambda"), (1, 12, 12)),
    "image_deconvolution/map_pointing_zx_test_nside1_ring.hdf5": (("z", "x"), (12, 12)),
    "image_deconvolution/all_sky_image_model_test_nside1.hdf5": (("lb", "Ei"), (12, 1)),
}


@pytest.mark.parametrize("relpath", sorted(HISTPY_FILES))
def test_open_cosipy_testdata(relpath: str) -> None:
    labels, nbins = HISTPY_FILES[relpath]
    h = Histogram.open(_testdata(relpath))
    assert h.axes.labels == labels
    assert h.nbins == nbins
    assert np.all(np.isfinite(np.asarray(h)))


def test_cosipy_testdata_contents() -> None:
    events = Histogram.open(_testdata("test_event_histogram_galacticCDS.hdf5"))
    assert events.is_sparse and events.unit is None
    assert events.sum() == 4173
    assert events.axes["PsiChi"].coordsys == "galactic"
    assert events.axes["Em"].unit == u.keV
    data = events.project(["Em", "Phi", "PsiChi"])
    assert data.nbins == (10, 30, 12) and data.sum() == 4173
    assert np.asarray(data).shape == (10, 30, 12)
    scatt = Histogram.open(_testdata("image_deconvolution/test_event_histogram_localCDS_scatt.h5"))
    assert scatt.sum() == 4173 and scatt.axes["ScAtt"].edges.dtype == np.int64
    resp = Histogram.open(_testdata("test_precomputed_response.h5"))
    assert resp.unit == u.cm**2 * u.s and resp.axes["Ei"].scale == "log"
    assert isinstance(resp.axes["NuLambda"], HealpixAxis) and resp.axes["NuLambda"].nside == 1
    ccm = Histogram.open(_testdata(
        "image_deconvolution/ccm_scatt_use_averaged_pointing_True_test.hdf5"))
    assert ccm.is_sparse and ccm.unit == u.s and ccm.contents.nnz == 48
    assert ccm.axes["NuLambda"].coordsys == "spacecraftframe"
    model = Histogram.open(_testdata("image_deconvolution/all_sky_image_model_test_nside1.hdf5"))
    assert model.unit == u.Unit("1 / (s sr cm2)")


def test_cosipy_testdata_round_trip(tmp_path: Path) -> None:
    src = _testdata("image_deconvolution/ccm_time_test.hdf5")
    h = Histogram.open(src)
    h.write(tmp_path / "copy.h5")
    _assert_same(Histogram.open(tmp_path / "copy.h5"), h)


# ----------------------------------------------------------- histpy interplay
@pytest.fixture(scope="module")
def histpy():
    return pytest.importorskip("histpy")


@pytest.mark.parametrize("kind", ["dense_unit", "dense_healpix", "overflow_dense",
                                  "overflow_sparse", "bool", "sumw2"])
def test_histpy_reads_our_files(histpy, kind: str, tmp_path: Path,
                                rng: np.random.Generator) -> None:
    if kind == "dense_healpix":  # histpy cannot resolve the 'spacecraftframe' frame
        h = Histogram(Axes([HealpixAxis(nside=2, scheme="nested", label="NuLambda",
                                        coordsys="galactic"), Axis([0.0, 1.0, 3.0], label="E")]),
                      _sparse_values(rng, (48, 2)), unit="cm2 s")
    else:
        h = _make(kind, rng)
    path = tmp_path / "ours.h5"
    h.write(path)
    theirs = histpy.Histogram.open(path)
    assert theirs.is_sparse == h.is_sparse
    assert theirs.unit == h.unit
    assert tuple(theirs.axes.labels) == h.axes.labels
    assert list(theirs.track_overflow()) == list(h.track_overflow)
    # full_contents: histpy's sparse slicing behind .contents compiles numba code (slow)
    contents = theirs.full_contents
    contents = contents.todense() if hasattr(contents, "todense") else contents
    padding = [(1, 1) if t else (0, 0) for t in h.track_overflow]
    np.testing.assert_array_equal(np.asarray(getattr(contents, "value", contents)),
                                  np.pad(np.asarray(h), padding))
    for ours, their in zip(h.axes, theirs.axes):
        np.testing.assert_array_equal(np.asarray(getattr(their.edges, "value", their.edges)),
                                      np.asarray(getattr(ours.edges, "value", ours.edges)))
        assert their.unit == ours.unit
        if isinstance(ours, HealpixAxis):
            assert (their.nside, their.scheme) == (ours.nside, ours.scheme)
    _assert_same(as_histogram(theirs), h)


def test_sparse_ours_to_histpy(histpy, tmp_path: Path, rng: np.random.Generator) -> None:
    h = Histogram([HealpixAxis(nside=1, label="lb", coordsys="galactic"),
                   Axis([1.0, 2.0, 4.0] * u.keV, label="Ei")],
                  _sparse_values(rng, (12, 2)), unit="s", sparse=True)
    h.write(tmp_path / "s.h5")
    theirs = histpy.Histogram.open(tmp_path / "s.h5")
    assert theirs.is_sparse and theirs.unit == u.s
    np.testing.assert_array_equal(theirs.contents.todense(), np.asarray(h))
    assert theirs.axes["lb"].nside == 1
    _assert_same(as_histogram(theirs), h)


def test_histpy_files_open_here(histpy, tmp_path: Path, rng: np.random.Generator) -> None:
    import sparse

    values = _sparse_values(rng, (4, 3))
    edges = [np.arange(5.0), np.linspace(0.0, 1.0, 4)]
    dense = histpy.Histogram(edges, contents=values, labels=["a", "b"], unit="cm2 s",
                             sumw2=values**2)
    dense.write(tmp_path / "d.h5")
    ours = Histogram.open(tmp_path / "d.h5")
    assert ours.unit == u.Unit("cm2 s") and ours.axes.labels == ("a", "b")
    np.testing.assert_array_equal(ours.contents.value, values)
    np.testing.assert_array_equal(ours.sumw2, values**2)
    coo = histpy.Histogram(edges, contents=sparse.COO.from_numpy(np.pad(values, ((1, 1), (0, 0)))),
                           labels=["a", "b"], unit="s", track_overflow=[True, False])
    coo.write(tmp_path / "s.h5")
    ours = Histogram.open(tmp_path / "s.h5")
    assert ours.is_sparse and ours.track_overflow == (True, False)
    np.testing.assert_array_equal(ours.contents.todense(), values)
    healpix = histpy.Histogram([histpy.HealpixAxis(nside=2, scheme="nested", label="pix",
                                                   coordsys="galactic")],
                               contents=np.arange(48.0))
    healpix.write(tmp_path / "hp.h5")
    ours = Histogram.open(tmp_path / "hp.h5")
    ax = ours.axes["pix"]
    assert isinstance(ax, HealpixAxis) and (ax.nside, ax.scheme, ax.coordsys) == (
        2, "NESTED", "galactic")
    np.testing.assert_array_equal(np.asarray(ours), np.arange(48.0))


def test_as_histogram_from_histpy(histpy, rng: np.random.Generator) -> None:
    import sparse

    values = _sparse_values(rng, (12, 3))
    ax = [histpy.HealpixAxis(nside=1, label="lb", coordsys="galactic"),
          histpy.Axis([1.0, 2.0, 4.0, 8.0] * u.keV, label="Ei", scale="log")]
    dense = as_histogram(histpy.Histogram(ax, contents=values, unit="cm2"))
    assert isinstance(dense, Histogram) and dense.unit == u.cm**2
    assert dense.axes["lb"].coordsys == "galactic" and dense.axes["Ei"].scale == "log"
    np.testing.assert_array_equal(dense.contents.value, values)
    sp = as_histogram(histpy.Histogram(ax, contents=sparse.COO.from_numpy(values), unit="s"))
    assert sp.is_sparse and isinstance(sp.contents, CooContents)
    np.testing.assert_array_equal(sp.contents.todense(), values)
    ours = Histogram(dense.axes, np.ones((12, 3)), unit="cm2")
    assert (ours + histpy.Histogram(ax, contents=values, unit="cm2")).sum().value == (
        pytest.approx(36 + values.sum()))


def test_no_stray_temp_files_on_failure(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "x.h5"
    _make("dense_unit", rng).write(path)
    with pytest.raises(FileFormatError):
        _make("dense_unit", rng).write(path)
    assert sorted(os.listdir(tmp_path)) == ["x.h5"]
