"""Samplers whitened by the low-rank plus diagonal Laplace covariance (precondition="lowrank")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_arrays

import probdeconv
from probdeconv.forward import make_dataset
from probdeconv.forward.problem import Problem
from probdeconv.inference.latent import log_space_precision, to_model
from probdeconv.inference.start import prepare


@pytest.fixture(scope="module")
def small():
    """24 free pixels (12 x 2 energies) in the spacecraft frame and one free background."""
    counts, response, bkgs, ccm = synthetic_arrays(seed=3, local=True)
    ds = make_dataset(counts * 20, response, bkgs, ccm=ccm, n_model_pixels=12,
                      pixel_area=1.0)
    return Problem.from_datasets([ds], bkg_free=True, bkg_range=[[0.01, 100.0]])


def test_full_rank_lowrank_whitening_is_a_square_root_of_the_laplace_covariance(small):
    # 25 parameters < the starting rank 32: the Krylov space is the whole space, so
    # M Mᵀ (M = du/dz of the whitening) must equal H_u⁻¹ to rounding.
    start = prepare(small, precondition="lowrank", fisher="expected")
    latent = start.latent
    assert latent.vectors is not None and start.notes["lowrank_rank"] == small.n_params
    n = small.n_free

    def u_image(z):
        image, _, _ = to_model(z, latent, small.config)
        return jnp.log(image.ravel()[latent.free])

    m = np.asarray(jax.jacfwd(u_image)(jnp.zeros(small.n_params)))  # [n_free, n_params]
    _, h = log_space_precision(small, np.asarray(latent.center), kind="expected")
    cov = np.linalg.inv(h)[:n, :n]
    assert np.allclose(m @ m.T, cov, rtol=1e-8, atol=1e-10 * np.abs(cov).max())


def test_nuts_runs_whitened_by_the_lowrank_laplace(small):
    post = probdeconv.sample(small, method="nuts", precondition="lowrank", num_warmup=60,
                             num_samples=60, chains=1, seed=0, progress_bar=False)
    assert post.settings["start_lowrank_rank"] == small.n_params
    assert np.all(np.isfinite(post.mean)) and np.all(post.std[post.mask] > 0)
