"""Precision as a choice (mixed: float32 response products, float64 sums) and the
continuum response that stores only its ``Em <= Ei`` blocks (issue 11, parts 2 and 4)."""

from __future__ import annotations

import astropy.units as u
import jax.numpy as jnp
import numpy as np
import pytest
from histpy import Axis, HealpixAxis

import probdeconv.forward as fm
from probdeconv import AllSkyImageModel, DataIF_COSI_DC2, Histogram
from probdeconv.algorithms import em
from probdeconv.cli.main import build_parser
from probdeconv.errors import DataError
from probdeconv.forward.problem import Problem

RNG_SEED = 11


def _galactic(n_v=12, n_e=1, n_m=1, n_phi=3, n_psi=12, seed=RNG_SEED, triangular=False):
    rng = np.random.default_rng(seed)
    r = rng.gamma(0.5, 1.0, (n_v, n_e, n_m, n_phi, n_psi))
    if triangular:  # measured energy above the initial one: no response
        for j in range(n_m):
            r[:, :j, j] = 0.0
    lam = rng.gamma(2.0, 0.05, (n_v, n_e))
    counts = rng.poisson(4.0 * np.pi / n_v * np.einsum("ve,vemqp->mqp", lam, r) + 2.0)
    counts[0, 0, :3] = 0  # some empty bins
    return counts.astype(float), r, lam, np.full(counts.shape, 2.0)


def _local(n_t=5, n_l=12, n_e=3, n_phi=2, n_psi=12, seed=RNG_SEED):
    rng = np.random.default_rng(seed)
    r = rng.gamma(0.5, 1.0, (n_l, n_e, n_e, n_phi, n_psi))
    for j in range(n_e):
        r[:, :j, j] = 0.0
    nnz = 40
    coords = np.stack([rng.integers(0, n_t, nnz), rng.integers(0, n_l, nnz),
                       rng.integers(0, n_l, nnz)])
    values = rng.uniform(1.0, 5.0, nnz)
    counts = rng.poisson(3.0, (n_t, n_e, n_phi, n_psi)).astype(float)
    return counts, r, (coords, values), rng.gamma(2.0, 0.05, (n_l, n_e))


# --------------------------------------------------------------------------- mixed precision


def test_mixed_loglik_matches_float64_and_sums_are_float64():
    counts, r, lam, bkg = _galactic(n_v=48, n_phi=6, n_psi=48)
    full = fm.make_dataset(counts, r, [bkg])
    mixed = fm.make_dataset(counts, r, [bkg], precision="mixed")
    assert mixed.response.dtype == jnp.float32 and fm.precision_of(mixed) == "mixed"
    lam, b = jnp.asarray(lam), jnp.array([1.0])
    e_full = fm.expected_counts(full, lam, b)
    e_mixed = fm.expected_counts(mixed, lam, b)
    ll_full = fm.log_likelihood(full, e_full)
    ll_mixed = fm.log_likelihood(mixed, e_mixed)
    ll_obs = fm.observed_log_likelihood(mixed, lam, b)
    bp = fm.backproject(mixed, counts.reshape(1, -1) / e_mixed)
    for a in (e_mixed, ll_mixed, ll_obs, bp, fm.exposure(mixed), mixed.response_totals):
        assert a.dtype == jnp.float64
    # float32 products: relative error of each product ~ n^0.5 * 6e-8; stated tolerance 1e-6
    tol = 1e-6
    assert abs(float(ll_mixed - ll_full)) <= tol * abs(float(ll_full))
    assert abs(float(ll_obs - ll_full)) <= tol * abs(float(ll_full))
    np.testing.assert_allclose(e_mixed, e_full, rtol=tol)
    np.testing.assert_allclose(bp, fm.backproject(full, counts.reshape(1, -1) / e_full),
                               rtol=tol)
    # the exposure comes from float64 row sums of the float32-rounded response
    np.testing.assert_allclose(fm.exposure(mixed), fm.exposure(full), rtol=1e-7)


def test_mixed_rl_iterations_match_float64():
    counts, r, lam, bkg = _galactic(n_v=48, n_phi=6, n_psi=48)
    out = {}
    for precision in ("full", "mixed"):
        ds = (fm.make_dataset(counts, r, [bkg], precision=precision),)
        opts = em.EMOptions(acceleration="classic", optimize_bkg=True)
        params = em.make_params(ds, opts)
        state = em.init(jnp.full((48, 1), 0.1), jnp.ones(1), ds, params)
        step = em.build_step(opts)
        for _ in range(10):
            state, info = step(state, ds, params)
        out[precision] = (np.asarray(state.model), float(info.loglik.sum()))
        assert state.model.dtype == jnp.float64 and info.loglik.dtype == jnp.float64
    rel = np.max(np.abs(out["mixed"][0] - out["full"][0])) / np.max(out["full"][0])
    assert rel < 1e-5, rel
    assert abs(out["mixed"][1] - out["full"][1]) <= 1e-6 * abs(out["full"][1])


def test_precision_choices_and_errors():
    counts, r, _, bkg = _galactic()
    ds = fm.make_dataset(counts, r, [bkg])
    assert fm.precision_of(ds) == "float64"
    assert fm.precision_of(fm.make_dataset(counts, r, dtype="float32")) == "float32"
    mixed = fm.with_precision(ds, "mixed")
    assert fm.precision_of(mixed) == "mixed" and fm.precision_of(
        fm.with_precision(mixed, "full")) == "float64"
    p = Problem.from_datasets([ds], precision="mixed")
    assert p.precision == "mixed" and p.dtype == np.float64
    with pytest.raises(DataError, match="precision='mixed'.*float32"):
        fm.make_dataset(counts, r, dtype="float32", precision="mixed")
    with pytest.raises(DataError, match="precision='half'"):
        fm.make_dataset(counts, r, precision="half")
    with pytest.raises(DataError, match="float64 dataset"):
        fm.with_precision(fm.make_dataset(counts, r, dtype="float32"), "mixed")


# --------------------------------------------------------------------------- triangular blocks


def _pair(frame):
    if frame == "galactic":
        counts, r, lam, bkg = _galactic(n_e=4, n_m=4, triangular=True)
        kw, backgrounds = {}, [bkg]
    else:
        counts, r, ccm, lam = _local()
        kw, backgrounds = dict(ccm=ccm, n_model_pixels=12), [np.ones(counts.shape)]
    dense = fm.make_dataset(counts, r, backgrounds, **kw)
    tri = fm.make_dataset(counts, fm.TriangularResponse.from_dense(r), backgrounds, **kw)
    return dense, tri, jnp.asarray(lam), counts


@pytest.mark.parametrize("frame", ["galactic", "spacecraft"])
def test_triangular_equals_dense(frame):
    dense, tri, lam, counts = _pair(frame)
    b = jnp.array([0.7])
    rel = dict(rtol=1e-12, atol=0.0)
    e_d, e_t = fm.expected_counts(dense, lam, b), fm.expected_counts(tri, lam, b)
    np.testing.assert_allclose(e_t, e_d, **rel)
    h = jnp.asarray(counts.reshape(e_d.shape)) / e_d
    np.testing.assert_allclose(fm.backproject(tri, h), fm.backproject(dense, h), **rel)
    np.testing.assert_allclose(fm.exposure(tri), fm.exposure(dense), **rel)
    np.testing.assert_allclose(fm.log_likelihood(tri, e_t), fm.log_likelihood(dense, e_d), **rel)
    np.testing.assert_allclose(fm.observed_log_likelihood(tri, lam, b),
                               fm.observed_log_likelihood(dense, lam, b), **rel)
    # adjoint identity <A x, y> = <x, A^T y>
    y = jnp.asarray(np.random.default_rng(3).uniform(size=e_d.shape))
    lhs = jnp.sum(fm.sky_counts(tri, lam) * y)
    rhs = jnp.sum(lam * fm.backproject(tri, y))
    assert abs(float(lhs - rhs)) <= 1e-12 * abs(float(lhs))


def test_triangular_memory_and_mixed():
    counts, r, lam, bkg = _galactic(n_e=10, n_m=10, n_phi=2, triangular=True)
    tri = fm.TriangularResponse.from_dense(r)
    assert tri.nbytes * 100 == r.nbytes * 55  # 55 of 100 blocks for 10 x 10 energy bins
    assert tri.nbytes == fm.dense_response_bytes(r.shape) * 55 // 100
    np.testing.assert_array_equal(tri.to_dense(), r)
    dense = fm.make_dataset(counts, r, [bkg])
    mixed = fm.make_dataset(counts, tri, [bkg], precision="mixed")
    assert mixed.response.dtype == jnp.float32 and fm.precision_of(mixed) == "mixed"
    b = jnp.array([1.0])
    ll_d = fm.log_likelihood(dense, fm.expected_counts(dense, jnp.asarray(lam), b))
    ll_m = fm.log_likelihood(mixed, fm.expected_counts(mixed, jnp.asarray(lam), b))
    assert ll_m.dtype == jnp.float64
    assert abs(float(ll_m - ll_d)) <= 1e-6 * abs(float(ll_d))


def test_triangular_refuses_nonzero_dropped_blocks_and_bad_blocks():
    _, r, _, _ = _galactic(n_e=3, n_m=3, triangular=False)
    with pytest.raises(DataError, match="Em bin 1 has non-zero response"):
        fm.TriangularResponse.from_dense(r)
    with pytest.raises(DataError, match="block 0"):
        fm.TriangularResponse.from_blocks([np.ones((5, 36))], [0], (12, 1, 1, 3, 12))
    assert fm.triangular_starts([100, 200, 400], [100, 150, 300, 400]) == (0, 0, 1)
    r2 = np.zeros((2, 2, 3, 1, 4))
    r2[:, :, 0] = 1.0
    r2[:, 0:, 1] = 2.0
    r2[:, 1:, 2] = 3.0
    tri = fm.TriangularResponse.from_dense(r2, start=(0, 0, 1))
    np.testing.assert_array_equal(tri.to_dense(), r2)
    with pytest.raises(DataError, match="needs a dense response"):
        tri.reshape(-1, 4)


# --------------------------------------------------------------------------- shell and CLI


def test_dataif_load_mixed_and_cli_flag():
    def data_axes():
        return [Axis([100, 300, 1000], label="Em", unit="keV"),
                Axis([0, 60, 120, 180], label="Phi", unit="deg"),
                HealpixAxis(nside=1, label="PsiChi", coordsys="galactic")]

    rng = np.random.default_rng(5)
    rsp = Histogram([HealpixAxis(nside=1, label="NuLambda", coordsys="galactic"),
                     Axis([100, 500, 1000], label="Ei", unit="keV", scale="log"),
                     *data_axes()], contents=rng.random((12, 2, 2, 3, 12)), unit="cm2 s")
    ev = Histogram(data_axes(), contents=rng.poisson(4.0, (2, 3, 12)).astype(float))
    bkg = Histogram(data_axes(), contents=rng.random((2, 3, 12)) + 0.5)
    model = AllSkyImageModel(1, [100, 500, 1000] * u.keV)
    model[:] = 0.3 * model.unit
    ll = {}
    for precision in ("full", "mixed"):
        data = DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp, precision=precision)
        assert fm.precision_of(data.forward_dataset) == (
            "mixed" if precision == "mixed" else "float64")
        ll[precision] = data.calc_log_likelihood(data.calc_expectation(model, {"bkg": 1.0}))
    assert ll["mixed"] == pytest.approx(ll["full"], rel=1e-6)
    with pytest.raises(DataError, match="precision='mixed'"):
        DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp, dtype="float32", precision="mixed")
    args = build_parser().parse_args(["run", "x.yml", "--data", "d", "--out", "o",
                                      "--precision", "mixed"])
    assert args.precision == "mixed"
