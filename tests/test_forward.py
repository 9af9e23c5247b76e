"""Properties of the forward model: adjoint identity, exposure, likelihood, dtypes, checks."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_arrays

import probdeconv
from probdeconv import forward as fm
from probdeconv.errors import DataError


def _dataset(local: bool, seed: int = 0, dtype="float64"):
    counts, response, bkgs, ccm = synthetic_arrays(seed, local=local)
    return fm.make_dataset(counts, response, bkgs, ccm=ccm, dtype=dtype)


@pytest.mark.parametrize("local", [False, True], ids=["galactic", "spacecraft"])
def test_adjoint_identity(local):
    """<A x, h> = <x, Aᵀ h> to float64 rounding, for random x and h."""
    ds = _dataset(local)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = jnp.asarray(rng.random(ds.model_shape))
        h = jnp.asarray(rng.random(ds.counts.shape))
        lhs = float(jnp.vdot(fm.sky_counts(ds, x), h))
        rhs = float(jnp.vdot(x, fm.backproject(ds, h)))
        assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("local", [False, True], ids=["galactic", "spacecraft"])
def test_exposure_is_backprojection_of_ones(local):
    ds = _dataset(local)
    s = fm.exposure(ds)
    np.testing.assert_allclose(s, fm.backproject(ds, jnp.ones_like(ds.counts)), rtol=1e-12)
    assert s.shape == ds.model_shape


def test_expectation_matches_dense_einsum():
    """Spacecraft frame against the dense formula of the spec: M = C·λ, E = ΔΩ M·R."""
    counts, response, bkgs, (coords, values) = synthetic_arrays(3, local=True)
    ds = fm.make_dataset(counts, response, bkgs, ccm=(coords, values))
    c = np.zeros((counts.shape[0], 12, 12))
    np.add.at(c, tuple(coords), values)
    lam = np.random.default_rng(2).random((12, 2))
    m = np.einsum("tlv,le->tve", c, lam)
    e = 4 * np.pi / 12 * np.einsum("tve,vemfp->tmfp", m, response) + 1e-12 + 0.7 * bkgs[0]
    got = fm.expected_counts(ds, jnp.asarray(lam), jnp.asarray([0.7]))
    np.testing.assert_allclose(np.asarray(got).reshape(e.shape), e, rtol=1e-12)


def test_log_likelihood_formula():
    ds = _dataset(False)
    e = fm.expected_counts(ds, jnp.ones(ds.model_shape), jnp.ones(1))
    d = np.asarray(ds.counts)
    want = np.sum(d * np.log(np.asarray(e))) - np.sum(np.asarray(e))
    assert float(fm.log_likelihood(ds, e)) == pytest.approx(want, rel=1e-13)


def test_float32_is_explicit_and_float64_default():
    assert _dataset(False).response.dtype == jnp.float64
    ds32 = _dataset(False, dtype="float32")
    assert ds32.response.dtype == jnp.float32
    e = fm.expected_counts(ds32, jnp.ones(ds32.model_shape, jnp.float32), jnp.ones(1, jnp.float32))
    assert e.dtype == jnp.float32


@pytest.mark.parametrize("what", ["nan", "negative", "shape", "bkg_shape", "ccm_index"])
def test_bad_arrays_are_named(what):
    counts, response, bkgs, ccm = synthetic_arrays(0, local=True)
    if what == "nan":
        counts[0, 0, 0, 0] = np.nan
        match = "counts.*NaN"
    elif what == "negative":
        counts[0, 0, 0, 0] = -1
        match = "counts.*negative"
    elif what == "shape":
        counts = counts[:, :, :2]
        match = "counts have shape"
    elif what == "bkg_shape":
        bkgs = [bkgs[0][:1]]
        match = "background #0 has shape"
    else:
        ccm[0][2, 0] = 99
        match = "CCM indices exceed"
    with pytest.raises(DataError, match=match):
        fm.make_dataset(counts, response, bkgs, ccm=ccm)


def test_shared_response_is_used_without_a_copy():
    """An aligned response handed over is the dataset's memory; otherwise it is copied."""
    counts, response, bkgs, _ = synthetic_arrays(0)
    aligned = fm.aligned_empty(response.shape)
    aligned[...] = response
    assert aligned.ctypes.data % 64 == 0
    shared = fm.make_dataset(counts, aligned, bkgs, share_response=True)
    copied = fm.make_dataset(counts, aligned, bkgs)
    assert shared.response.unsafe_buffer_pointer() == aligned.ctypes.data
    assert copied.response.unsafe_buffer_pointer() != aligned.ctypes.data
    aligned[0, 0, 0, 0, 1] += 1.0  # the copy does not follow a later change of the input
    assert float(copied.response[0, 1]) == response[0, 0, 0, 0, 1]
    aligned[0, 0, 0, 0, 1] -= 1.0
    np.testing.assert_array_equal(np.asarray(shared.response), np.asarray(copied.response))
    lam = jnp.ones(shared.model_shape)
    np.testing.assert_array_equal(fm.sky_counts(shared, lam), fm.sky_counts(copied, lam))
    # not shareable (float32 asked for): a converted copy, whatever the flag says
    f32 = fm.make_dataset(counts, aligned, bkgs, share_response=True, dtype="float32")
    assert f32.response.dtype == jnp.float32


def test_full_detector_response_is_held_once(monkeypatch, tmp_path):
    """DataIF.load reduces a FullDetectorResponse into memory the forward model then keeps."""
    from probdeconv import FullDetectorResponse
    from probdeconv.forward import dataset as fds
    from probdeconv.simulate import simulate

    sim = simulate(sky="points", nside=2, seed=1, phi_bins=6, out=tmp_path)
    shared = []
    original = fds._device_array

    def spy(a, dtype, share):
        out = original(a, dtype, share)
        shared.append(share and out.unsafe_buffer_pointer() == a.ctypes.data)
        return out

    monkeypatch.setattr(fds, "_device_array", spy)
    with FullDetectorResponse.open(tmp_path / "response.h5") as rsp:
        data = probdeconv.DataIF_COSI_DC2.load(
            "d", sim.event, {"bkg": sim.background}, rsp,
            coordsys_conv_matrix=sim.ccm)
    assert shared == [True]
    assert float(np.sum(np.asarray(data.exposure_map))) > 0


def test_dataset_does_not_follow_later_changes_of_the_inputs():
    """Counts, backgrounds, response and CCM given as (aligned) numpy arrays are copied."""
    counts, response, bkgs, (coords, values) = synthetic_arrays(1, local=True)
    arrays = {}
    for key, a in dict(counts=counts, response=response, bkg=bkgs[0], values=values).items():
        arrays[key] = fm.aligned_empty(a.shape)
        arrays[key][...] = a
    ds = fm.make_dataset(arrays["counts"], arrays["response"], [arrays["bkg"]],
                         ccm=(coords, arrays["values"]))
    lam = jnp.ones(ds.model_shape)
    before = float(fm.log_likelihood(ds, fm.expected_counts(ds, lam, jnp.ones(1))))
    for a in arrays.values():
        a *= 2.0
    after = float(fm.log_likelihood(ds, fm.expected_counts(ds, lam, jnp.ones(1))))
    assert after == before
    swapped = fm.with_counts(ds, arrays["counts"])
    arrays["counts"] *= 2.0
    np.testing.assert_array_equal(np.asarray(swapped.counts).ravel(),
                                  (arrays["counts"] / 2.0).ravel())
