"""Properties of the EM core: monotone likelihood, non-negativity, masks, no recompilation."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_arrays

from probdeconv import forward as fm
from probdeconv.algorithms import em


def _problem(local=False, seed=0):
    counts, response, bkgs, ccm = synthetic_arrays(seed, local=local)
    return (fm.make_dataset(counts, response, bkgs, ccm=ccm),)


@pytest.mark.parametrize("local", [False, True], ids=["galactic", "spacecraft"])
@pytest.mark.parametrize("bkg", [False, True], ids=["fixed-bkg", "fit-bkg"])
def test_plain_em_never_lowers_likelihood(local, bkg):
    """RLsimple is EM: the log-likelihood is non-decreasing (up to rounding)."""
    dss = _problem(local)
    opts = em.EMOptions(simple=True, optimize_bkg=bkg)
    params = make = em.make_params(dss, opts)
    del make
    state = em.init(jnp.ones(dss[0].model_shape), jnp.ones(1), dss, params)
    step = em.build_step(opts)
    prev = float(em.state_loglik(state.model, dss, state.bkg_norm))
    for _ in range(25):
        state, info = step(state, dss, params)
        now = float(info.loglik.sum())
        assert now >= prev - 1e-9 * abs(prev)
        assert bool(jnp.all(state.model >= 0))
        prev = now


@pytest.mark.parametrize("opts", [
    em.EMOptions(simple=False, weighting=True, acceleration="classic", optimize_bkg=True),
    em.EMOptions(simple=False, smoothing=True, acceleration="classic"),
], ids=["accelerated", "smoothed"])
def test_images_stay_nonnegative_and_masked(opts):
    dss = _problem(False, seed=4)
    mask = np.ones(dss[0].model_shape, bool)
    mask[3, :] = False
    params = em.make_params(dss, opts, mask=mask, alpha_max=10.0, smoothing_fwhm_rad=0.3)
    state = em.init(jnp.ones(dss[0].model_shape), jnp.ones(1), dss, params)
    step = em.build_step(opts)
    for _ in range(8):
        state, info = step(state, dss, params)
        assert bool(jnp.all(state.model >= 0))
        assert bool(jnp.all(state.model[3] == 0))
        assert 1.0 <= float(info.alpha) <= 10.0


def test_no_recompilation_between_iterations_or_runs():
    """One trace for a given option set, whatever the numbers or the data values."""
    opts = em.EMOptions(simple=False, weighting=True, acceleration="classic", optimize_bkg=True,
                        nest=True)  # options used by no other test: a fresh cache entry
    step = em.build_step(opts)
    before = em.TRACE_COUNT[opts]
    for seed, alpha_max in [(0, 2.0), (1, 5.0)]:
        dss = _problem(False, seed=seed)
        params = em.make_params(dss, opts, alpha_max=alpha_max)
        state = em.init(jnp.ones(dss[0].model_shape), jnp.ones(1), dss, params)
        for _ in range(4):
            state, _ = step(state, dss, params)
    assert em.TRACE_COUNT[opts] - before == 1


def test_alpha_rule():
    model = jnp.array([[1.0], [2.0], [1.0], [5.0]])
    delta = jnp.array([[-0.5], [-4.0], [0.0], [1.0]])
    mask = jnp.array([[True], [True], [True], [True]])
    # -λ/δ over δ<0: 2.0 and 0.5 -> min 0.5 -> clipped up to 1
    assert float(em.calc_alpha(model, delta, mask, 10.0)) == 1.0
    mask = mask.at[1].set(False)
    assert float(em.calc_alpha(model, delta, mask, 10.0)) == 2.0
    assert float(em.calc_alpha(model, delta, mask, 1.5)) == 1.5


@pytest.mark.parametrize("kind", ["MaxStep", "LineSearch", "SQUAREM"])
@pytest.mark.parametrize("local", [False, True], ids=["galactic", "spacecraft"])
def test_monotone_accelerators_never_lower_likelihood(kind, local):
    """MaxStep / LineSearch (accept only if not worse) and SQUAREM (fallback) are monotone,
    and the stored sky part equals a fresh forward projection of the image."""
    dss = _problem(local, seed=7)
    opts = em.EMOptions(acceleration=kind, optimize_bkg=True)
    params = em.make_params(dss, opts, alpha_max=10.0)
    state = em.init(jnp.ones(dss[0].model_shape), jnp.ones(1), dss, params)
    step = em.build_step(opts)
    prev = float(em.state_loglik(state.model, dss, state.bkg_norm))
    for _ in range(10):
        state, info = step(state, dss, params)
        now = float(info.loglik.sum())
        assert now >= prev - 1e-9 * abs(prev)
        assert bool(jnp.all(state.model >= 0))
        prev = now
    fresh = em.sky_counts(dss, state.model)
    np.testing.assert_allclose(state.sky[0], fresh[0], rtol=1e-9, atol=1e-12)
    assert now == pytest.approx(float(em.state_loglik(state.model, dss, state.bkg_norm)),
                                rel=1e-12)


def test_accelerators_beat_plain_rl():
    """After the same number of response passes, SQUAREM and LineSearch are ahead."""
    dss = _problem(False, seed=8)
    out = {}
    for kind, iters in [("none", 60), ("LineSearch", 60), ("SQUAREM", 24)]:  # 120 passes each
        opts = em.EMOptions(acceleration=kind)
        params = em.make_params(dss, opts, alpha_max=10.0)
        state = em.init(jnp.ones(dss[0].model_shape), jnp.ones(1), dss, params)
        step = em.build_step(opts)
        for _ in range(iters):
            state, info = step(state, dss, params)
        out[kind] = float(info.loglik.sum())
    assert out["LineSearch"] > out["none"]
    assert out["SQUAREM"] > out["none"]


def test_unknown_accelerator_is_named():
    from probdeconv.errors import ParameterError

    with pytest.raises(ParameterError, match="Nesterov"):
        em.build_step(em.EMOptions(acceleration="Nesterov"))
