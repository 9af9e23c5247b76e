"""The reduced form of the forward model (observed bins + totals) against the dense one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_arrays

from probdeconv import forward as fm
from probdeconv.algorithms import em


def _sparse_dataset(local: bool, seed: int = 0, rate: float = 0.15, n_bkg: int = 1):
    """A tiny problem whose counts are mostly zero (like COSI data: ~15 % non-zero)."""
    counts, response, bkgs, ccm = synthetic_arrays(seed, local=local, n_bkg=n_bkg)
    counts = np.random.default_rng(seed + 100).poisson(rate, counts.shape).astype(float)
    return fm.make_dataset(counts, response, bkgs, ccm=ccm)


@pytest.mark.parametrize("local", [False, True], ids=["galactic", "spacecraft"])
def test_observed_view_holds_every_nonzero_bin(local):
    ds = _sparse_dataset(local)
    flat = np.asarray(ds.counts).ravel()
    idx = np.asarray(ds.obs_index)
    assert np.all(np.diff(idx) > 0), "indices sorted and unique"
    assert set(np.flatnonzero(flat)) <= set(idx.tolist())
    np.testing.assert_array_equal(np.asarray(ds.obs_counts), flat[idx])
    np.testing.assert_array_equal(np.asarray(ds.obs_backgrounds),
                                  np.asarray(ds.backgrounds).reshape(1, -1)[:, idx])
    assert idx.size < flat.size  # sparse data: a real reduction
    quantum = -(-flat.size // fm.OBS_LENGTH_STEPS)
    assert idx.size % quantum == 0 or idx.size == flat.size


def _idx(ds):
    return np.arange(ds.n_bins) if ds.observes_all else np.asarray(ds.obs_index)


RATES = pytest.mark.parametrize("rate", [0.15, 3.0], ids=["sparse", "dense"])


@RATES
@pytest.mark.parametrize("local", [False, True], ids=["galactic", "spacecraft"])
def test_reduced_sky_and_expectation_match_the_dense_arrays(local, rate):
    ds = _sparse_dataset(local, rate=rate)
    assert ds.observes_all == (rate > 1)
    lam = jnp.asarray(np.random.default_rng(3).random(ds.model_shape))
    bkg = jnp.asarray([0.7])
    dense_sky = np.asarray(fm.sky_counts(ds, lam)).ravel()
    idx = _idx(ds)
    rs = np.asarray(fm.reduced_sky(ds, lam))
    np.testing.assert_allclose(rs[:-1], dense_sky[idx], rtol=1e-13)
    assert rs[-1] == pytest.approx(dense_sky.sum(), rel=1e-12)
    e = np.asarray(fm.expected_counts(ds, lam, bkg)).ravel()
    re = np.asarray(fm.reduced_expectation(ds, jnp.asarray(rs), bkg))
    np.testing.assert_allclose(re[:-1], e[idx], rtol=1e-13)
    assert re[-1] == pytest.approx(e.sum(), rel=1e-12)
    d = np.asarray(ds.counts).ravel()
    want = np.sum(np.where(d > 0, d * np.log(e), 0.0)) - e.sum()
    assert float(fm.reduced_log_likelihood(ds, jnp.asarray(re))) == pytest.approx(want, rel=1e-12)
    assert float(fm.log_likelihood(ds, jnp.asarray(e.reshape(ds.counts.shape)))) == \
        pytest.approx(want, rel=1e-12)


@RATES
@pytest.mark.parametrize("local", [False, True], ids=["galactic", "spacecraft"])
def test_reduced_backproject_is_the_adjoint(local, rate):
    """<(A x)[obs], h> = <x, reduced_backproject(h)>, and it equals Aᵀ of the dense h."""
    ds = _sparse_dataset(local, rate=rate)
    rng = np.random.default_rng(5)
    n_obs = ds.n_observed
    for _ in range(3):
        x = jnp.asarray(rng.random(ds.model_shape))
        h = jnp.asarray(rng.random(n_obs))
        lhs = float(jnp.vdot(fm.reduced_sky(ds, x)[:-1], h))
        rhs = float(jnp.vdot(x, fm.reduced_backproject(ds, h)))
        assert lhs == pytest.approx(rhs, rel=1e-12)
        dense = np.zeros(ds.n_bins)
        dense[_idx(ds)] = np.asarray(h)
        np.testing.assert_allclose(
            fm.reduced_backproject(ds, h),
            fm.backproject(ds, jnp.asarray(dense.reshape(ds.counts.shape))), rtol=1e-12)
        np.testing.assert_allclose(
            fm.reduced_background_product(ds, h),
            fm.background_product(ds, jnp.asarray(dense.reshape(ds.counts.shape))), rtol=1e-12)


def test_with_counts_traced_and_concrete_agree():
    """Counts swapped under vmap (all-bin view) give the log-likelihood of concrete counts."""
    ds = _sparse_dataset(True)
    rng = np.random.default_rng(7)
    lam = jnp.asarray(rng.random(ds.model_shape))
    new = rng.poisson(0.3, (2, *ds.counts.shape)).astype(float)

    def ll(c):
        d2 = fm.with_counts(ds, c)
        return fm.log_likelihood(d2, fm.expected_counts(d2, lam, jnp.ones(1)))

    traced = np.asarray(jax.vmap(ll)(jnp.asarray(new)))
    concrete = [float(ll(c)) for c in new]
    np.testing.assert_allclose(traced, concrete, rtol=1e-12)


def test_em_state_carries_the_reduced_sky_of_its_image():
    """After accelerated iterations the carried sky equals a fresh projection of the image."""
    dss = (_sparse_dataset(True, seed=2),)
    opts = em.EMOptions(weighting=True, acceleration="MaxStep", optimize_bkg=True)
    params = em.make_params(dss, opts, alpha_max=10.0)
    state = em.init(jnp.ones(dss[0].model_shape), jnp.ones(1), dss, params)
    step = em.build_step(opts)
    for _ in range(6):
        state, info = step(state, dss, params)
    np.testing.assert_allclose(state.sky[0], fm.reduced_sky(dss[0], state.model), rtol=1e-10)
    dense = fm.total_log_likelihood(dss, state.model, state.bkg_norm)
    assert float(info.loglik[0]) == pytest.approx(float(dense), rel=1e-10)


def test_same_shaped_data_reuse_the_compiled_step():
    """Data of one shape whose numbers of non-zero bins differ a little: one compilation."""
    a = _sparse_dataset(True, seed=0)
    counts = np.asarray(a.counts).copy().ravel()
    n_a = int(np.count_nonzero(counts))
    quantum = -(-a.n_bins // fm.OBS_LENGTH_STEPS)
    assert quantum >= 2 and n_a < a.n_bins // 2
    if n_a % quantum == 1:  # one more non-zero bin stays in the same length step
        counts[np.flatnonzero(counts == 0)[0]] = 1.0
    else:  # one fewer
        counts[np.flatnonzero(counts)[0]] = 0.0
    b = fm.with_counts(a, counts.reshape(a.counts.shape))
    assert int(np.count_nonzero(counts)) != n_a
    assert a.obs_index.shape == b.obs_index.shape
    assert a.obs_index.shape[0] - n_a < quantum
    opts = em.EMOptions(acceleration="LineSearch", optimize_bkg=True, nest=True)
    step = em.build_step(opts)
    before = em.TRACE_COUNT[opts]
    for ds in (a, b):
        params = em.make_params((ds,), opts)
        state = em.init(jnp.ones(ds.model_shape), jnp.ones(1), (ds,), params)
        for _ in range(2):
            state, _ = step(state, (ds,), params)
    assert em.TRACE_COUNT[opts] - before == 1


def test_counts_replaced_without_with_counts_are_refused():
    """dataclasses.replace leaves a stale observed-bin view: the EM set-up names it."""
    import dataclasses

    from probdeconv.errors import DataError

    ds = _sparse_dataset(True)
    stale = dataclasses.replace(ds, counts=ds.counts * 2.0)
    opts = em.EMOptions()
    with pytest.raises(DataError, match="with_counts"):
        em.make_params((stale,), opts)
    em.make_params((fm.with_counts(ds, np.asarray(ds.counts) * 2.0),), opts)  # the right way
