"""Matrix-free curvature, the low-rank Laplace and the fast (EM + Newton-CG) start."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.linalg as sla
from conftest import synthetic_arrays

import probdeconv
from probdeconv.errors import ParameterError
from probdeconv.forward import make_dataset
from probdeconv.forward.problem import Problem
from probdeconv.inference.curvature import fisher_products, log_precision_products
from probdeconv.inference.fisher import cholesky_precision, precision_matrix
from probdeconv.inference.latent import log_space_precision, theta_of
from probdeconv.inference.lowrank import lowrank_precision
from probdeconv.inference.start import prepare


@pytest.fixture(scope="module")
def small():
    """24 free pixels (12 x 2 energies) in the spacecraft frame and one free background."""
    counts, response, bkgs, ccm = synthetic_arrays(seed=3, local=True)
    ds = make_dataset(counts * 20, response, bkgs, ccm=ccm, n_model_pixels=12,
                      pixel_area=1.0)
    return Problem.from_datasets([ds], bkg_free=True, bkg_range=[[0.01, 100.0]])


@pytest.fixture(scope="module")
def fast_start(small):
    return prepare(small, init="em", mode_method="newton", fisher="observed",
                   mode_tolerance=1e-8)


def _dense_sd(problem, u):
    _, h = log_space_precision(problem, u, kind="observed")
    chol = cholesky_precision(h)
    inv = sla.solve_triangular(chol, np.eye(len(u)), lower=True)
    return h, np.sqrt(np.sum(inv**2, axis=0))


def test_products_equal_the_dense_precision_times_vectors(small, fast_start):
    u = np.asarray(fast_start.latent.center)
    theta = theta_of(small, u)
    v = np.random.default_rng(0).standard_normal((3, small.n_params))
    dense = precision_matrix(small, theta, kind="observed")
    assert np.allclose(fisher_products(small, theta, v), v @ dense, rtol=1e-10, atol=1e-8)
    h, _ = _dense_sd(small, u)
    assert np.allclose(log_precision_products(small, u, v), v @ h, rtol=1e-10,
                       atol=1e-8 * np.abs(h).max())


def test_full_rank_lowrank_equals_dense_laplace_sd(small, fast_start):
    u = np.asarray(fast_start.latent.center)
    _, sd = _dense_sd(small, u)
    lr = lowrank_precision(small, u, rank=small.n_params, block=4)
    assert lr.rank == small.n_params and lr.converged and lr.captured == pytest.approx(1.0)
    np.testing.assert_allclose(lr.sd, sd, rtol=1e-6)
    # its draws have the dense covariance: sd of 4000 draws within 10 % (~9 standard errors)
    dz = lr.deviations(np.random.default_rng(1).standard_normal((small.n_params, 4000)))
    np.testing.assert_allclose(dz.std(axis=0), sd, rtol=0.1)


def test_rank_rule_stops(small, fast_start, caplog):
    u = np.asarray(fast_start.latent.center)
    loose = lowrank_precision(small, u, rank=2, block=2, tolerance=10.0)
    assert loose.rank == 4 and loose.converged  # rank 2, then 4: change < 10 (any change)
    assert [k for k, _, _ in loose.history] == [2, 4]
    wide = lowrank_precision(small, u, rank=2, block=8, tolerance=10.0)  # block > rank
    assert [k for k, _, _ in wide.history] == [8, 16]  # each check on a doubled subspace
    with caplog.at_level(logging.WARNING, logger="probdeconv"):
        capped = lowrank_precision(small, u, rank=2, block=2, tolerance=1e-14, max_rank=8)
    assert capped.rank == 8 and not capped.converged
    assert [k for k, _, _ in capped.history] == [2, 4, 8]
    assert "raise max_rank" in caplog.text
    assert 0 < capped.captured < 1
    with pytest.raises(ParameterError, match="rank"):
        lowrank_precision(small, u, rank=0)


def test_newton_cg_start_reaches_the_lbfgs_mode(small, fast_start):
    slow = prepare(small, init="map", map_iterations=1000, mode_iterations=2000,
                   fisher="observed", mode_tolerance=1e-8)
    # the same log-space mode: log-densities within 1e-7 relative (or better for Newton)
    assert fast_start.log_density >= slow.log_density - 1e-7 * abs(slow.log_density)
    assert fast_start.notes["mode_converged"] and fast_start.notes["mode_method"] == "newton"
    assert fast_start.notes["em_converged"]
    _, sd = _dense_sd(small, np.asarray(fast_start.latent.center))
    gap = np.abs(np.asarray(fast_start.latent.center) - np.asarray(slow.latent.center)) / sd
    assert gap.max() < 1e-2  # modes agree to 1 % of a posterior standard deviation


def test_sample_with_lowrank_curvature_records_the_rank(small):
    post = probdeconv.sample(small, method="laplace", curvature="lowrank", rank=4,
                             num_samples=200)
    s = post.settings
    assert s["curvature"] == "lowrank" and 4 <= s["rank"] <= small.n_params
    assert s["start_mode_method"] == "newton" and "start_em_steps" in s  # the fast start
    assert 0 < s["captured_variance"] <= 1 and "rank_history" in s
    assert np.all(np.asarray(post.std) >= 0)
    with pytest.raises(ParameterError, match="log space only"):
        probdeconv.sample(small, method="laplace", curvature="lowrank", space="linear")
