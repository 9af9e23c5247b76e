"""Posterior sampling: exactness on a conjugate pixel, posterior products, ArviZ, reports, CLI.

False-alarm rate.  Each Monte-Carlo comparison ``|estimate − exact| < z · mcse`` uses
``z = norm.ppf(1 − 1e-4 / 2)`` (two-sided 1e-4 per comparison; a handful of comparisons
per run).  The NUTS standard errors are ArviZ's ``mcse`` (mean and sd).  SVI and Laplace
are approximations: their tolerances are their stated approximation errors (module
docstrings of :mod:`probdeconv.inference.svi` / :mod:`.laplace`) plus Monte-Carlo error.
"""

from __future__ import annotations

from pathlib import Path

import arviz as az
import healpy as hp
import matplotlib.image as mpimg
import numpy as np
import pytest
import xarray as xr
from scipy.special import gammaln
from scipy.stats import norm

import probdeconv
from probdeconv import ParameterError
from probdeconv import forward as fm
from probdeconv.cli.main import main
from probdeconv.forward import make_dataset
from probdeconv.forward.problem import Problem
from probdeconv.inference.start import prepare
from probdeconv.results.posterior import Posterior
from probdeconv.shell.problem import problem_from_parameters
from probdeconv.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
Z = norm.ppf(1 - 1e-4 / 2)
TINY = dict(sky="points", nside=1, seed=1, phi_bins=4, duration=86400.0, n_samples=2000,
            scatt_nside=1, psichi_oversampling=1)
PRIOR = {"image": {"kind": "gamma", "k": 1.0, "theta": float("inf")},
         "background": {"free": True, "range": {"bkg": [0.01, 10.0]}}}
SHORT = dict(num_warmup=100, num_samples=100, chains=2, seed=0, progress_bar=False)


@pytest.fixture(scope="module")
def conjugate():
    """One pixel, gamma prior, Poisson counts in 5 bins with known exposure."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(30.0, (1, 1, 5)).astype(float)
    response = np.full((1, 1, 1, 1, 5), 2.0)  # [NuLambda, Ei, Em, Phi, PsiChi], S = 10
    ds = make_dataset(counts, response, pixel_area=1.0)
    k, theta = 2.0, 5.0
    problem = Problem.from_datasets([ds], image_prior="gamma", gamma=(k, theta))
    a, b = k + counts.sum(), 1.0 / theta + 10.0  # posterior Gamma(a, rate b)
    return problem, a, b, prepare(problem)


def test_nuts_matches_the_conjugate_gamma_posterior_streamed_in_chunks(conjugate, tmp_path):
    problem, a, b, start = conjugate
    post = probdeconv.sample(problem, method="nuts", num_warmup=200, num_samples=800, chains=2,
                             seed=0, progress_bar=False, start=start, chunk_size=400,
                             store_path=tmp_path / "draws.h5")
    assert post.settings["chunks"] == 2 and post.n_draws == 800 and post.mcmc is None
    draws = post.store.read("image")[:, :, 0, 0]
    # running moments of the streamed store equal those of all draws
    np.testing.assert_allclose(post.mean[0, 0], draws.mean(), rtol=1e-12)
    np.testing.assert_allclose(post.std[0, 0], draws.std(ddof=1), rtol=1e-10)
    diag = post.diagnostics()
    mcse_sd = float(az.mcse(draws, method="sd", chain_axis=0, draw_axis=1))
    assert abs(post.mean[0, 0] - a / b) < Z * diag.mcse_mean[0, 0]
    assert abs(post.std[0, 0] - np.sqrt(a) / b) < Z * mcse_sd
    assert diag.divergences == 0 and diag.rhat[0, 0] < 1.01 and diag.bfmi.min() > 0.3
    dt = post.to_arviz()  # from_dict path (chunked run)
    assert {"posterior", "sample_stats", "observed_data"} <= set(dt.children)
    assert dt["posterior"]["image"].dims == ("chain", "draw", "pixel", "energy")


def test_svi_and_laplace_match_the_conjugate_posterior(conjugate):
    problem, a, b, start = conjugate
    mean, std = a / b, np.sqrt(a) / b
    for guide in ("normal", "lowrank"):
        post = probdeconv.sample(problem, method="svi", guide=guide, num_steps=2000,
                                 learning_rate=0.01, num_samples=4000, seed=1,
                                 progress_bar=False, start=start)
        # log-normal guide: exact mean, std high by ~1/(4a) (< 0.2 %); optimiser noise
        assert post.mean[0, 0] == pytest.approx(mean, rel=0.02)
        assert post.std[0, 0] == pytest.approx(std, rel=0.05)
    post = probdeconv.sample(problem, method="laplace", num_samples=4000, seed=2, start=start)
    assert post.mean[0, 0] == pytest.approx(mean, rel=0.01)  # gamma marginals: exact
    assert post.std[0, 0] == pytest.approx(std, rel=0.05)
    lognormal = probdeconv.sample(problem, method="laplace", marginals="lognormal",
                                  num_samples=4000, seed=2, start=start)
    assert lognormal.mean[0, 0] == pytest.approx(mean * (1 + 1 / (2 * a)), rel=0.01)
    lin = probdeconv.sample(problem, method="laplace", space="linear", fisher="observed",
                            num_samples=4000, seed=3, start=start)
    assert lin.mean[0, 0] == pytest.approx((a - 1) / b, rel=0.01)  # the MAP
    assert lin.std[0, 0] == pytest.approx(np.sqrt(a - 1) / b, rel=0.05)


@pytest.fixture(scope="module")
def tiny():
    sim = simulate(**TINY)
    problem = problem_from_parameters([sim.dataif()], PRIOR)
    return sim, problem


@pytest.fixture(scope="module")
def tiny_nuts(tiny):
    return probdeconv.sample(tiny[1], method="nuts", **SHORT)


def test_posterior_products_save_and_report(tiny, tiny_nuts, tmp_path):
    sim, problem = tiny
    post = tiny_nuts
    assert post.mcmc is not None  # one chunk: arviz.from_numpyro
    mean, std = post.mean_map, post.std_map
    assert type(mean).__name__ == "AllSkyImageModel" and str(mean.unit) == str(
        probdeconv.AllSkyImageModel(1, [1, 2] * mean.axes[1].unit).unit)
    assert np.all(np.asarray(post.quantile_map(0.05)) <= np.asarray(post.median_map))
    lo, hi = post.credible_interval(0.9)
    assert np.all(np.asarray(lo) <= np.asarray(hi)) and np.all(np.asarray(lo) > 0)
    np.testing.assert_allclose(np.asarray(post.significance_map),
                               np.asarray(mean) / np.asarray(std))
    everything = post.region_flux(np.ones(12, bool), sum_energy=True)
    assert everything.mean[0] == pytest.approx(post.mean.sum() * post.pixel_area, rel=1e-9)
    assert everything.lower[0] < everything.mean[0] < everything.upper[0]
    assert set(post.bkg_summary()) == {"bkg"}
    dt = post.to_arviz(log_likelihood=True)
    assert dt["posterior"]["bkg_norm"].dims == ("chain", "draw", "background")
    assert "z" not in dt["posterior"] and "energy" in dt["sample_stats"]
    ll = dt["log_likelihood"]["obs_0"]  # pointwise, on request only
    ds = problem.datasets[0]
    image = post.store.read("image")[1, 7]
    e = fm.expected_counts(ds, image, post.bkg_draws()[1, 7])
    want = float(fm.log_likelihood(ds, e)) - float(np.sum(gammaln(np.asarray(ds.counts) + 1)))
    assert ll.shape == (2, 100, ds.n_observed + (0 if ds.observes_all else ds.n_time))
    assert float(ll[1, 7].sum()) == pytest.approx(want, rel=1e-10)
    out = post.save(tmp_path / "post")
    for name in ("posterior.h5", "draws.h5", "posterior.nc", "posterior_E0.fits", "summary.yml"):
        assert (out / name).is_file(), name
    np.testing.assert_allclose(hp.read_map(out / "posterior_E0.fits"), post.mean[:, 0])
    np.testing.assert_allclose(hp.read_map(out / "posterior_E0.fits", field=1), post.std[:, 0])
    tree = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    assert {"posterior", "sample_stats", "observed_data", "diagnostics"} <= set(tree.children)
    again = Posterior.load(out)
    np.testing.assert_allclose(again.mean, post.mean)
    np.testing.assert_allclose(again.quantiles(0.5), post.quantiles(0.5))
    report = again.report(out, truth=sim.truth)
    assert report.is_file() and "Diagnostics over pixels" in report.read_text()
    for fig in ("maps.png", "diagnostics.png", "traces.png", "truth.png"):
        _png_ok(out / "figures" / fig)


def _png_ok(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000, path
    image = mpimg.imread(path)
    assert image.std() > 0.01, f"{path}: blank image"


def test_bootstrap_of_rl(tiny):
    _, problem = tiny
    post = probdeconv.sample(problem, method="bootstrap", num_samples=12, iterations=20,
                             batch=4, progress_bar=False)
    draws = post.store.read("image")
    assert draws.shape == (1, 12, 12, 1) and np.all(draws >= 0)
    assert post.map_image is not None and np.all(post.std > 0)
    assert 0.01 <= post.bkg_summary()["bkg"]["mean"] <= 10.0


def test_fisher_precision_is_exact_and_compiles_once(conjugate):
    """One pixel: expected Fisher S/λ, observed d/λ², prior −∂² log p = (k−1)/λ²."""
    from probdeconv.inference import fisher

    problem, a, b, _ = conjugate
    d = float(np.sum(np.asarray(problem.datasets[0].counts)))
    k = problem.config.image_gamma.k
    sizes = []
    for lam in (12.0, 17.0):
        h_exp = fisher.precision_matrix(problem, np.array([lam]))
        h_obs = fisher.precision_matrix(problem, np.array([lam]), kind="observed")
        assert h_exp[0, 0] == pytest.approx(10.0 / lam + (k - 1) / lam**2, rel=1e-9)
        assert h_obs[0, 0] == pytest.approx((d + k - 1) / lam**2, rel=1e-9)
        sizes.append(fisher._columns._cache_size())
    assert sizes[0] == sizes[1]  # new numbers, same shapes: no recompilation


def test_bad_options_name_the_culprit(conjugate):
    problem = conjugate[0]
    with pytest.raises(ParameterError, match="valid choices"):
        probdeconv.sample(problem, method="gibbs")
    with pytest.raises(ParameterError, match="num_warmupp"):
        probdeconv.sample(problem, method="nuts", num_warmupp=10)
    with pytest.raises(ParameterError, match="max_params"):
        probdeconv.sample(problem, method="laplace", max_params=0)


def test_cli_sample_then_report(tmp_path, capsys):
    data = tmp_path / "sim"
    simulate(**TINY, out=data)
    out = tmp_path / "post"
    rc = main(["--quiet", "sample", str(ROOT / "models" / "nuts.yml"), "--data", str(data),
               "--out", str(out), "--seed", "0", "--set", "sampling:num_warmup=100",
               "--set", "sampling:num_samples=100"])
    assert rc == 0, capsys.readouterr().err
    for name in ("posterior.h5", "draws.h5", "posterior.nc", "posterior_E0.fits", "report.md",
                 "config.yml", "run.yml", "summary.yml"):
        assert (out / name).is_file(), name
    post = Posterior.load(out)
    np.testing.assert_allclose(hp.read_map(out / "posterior_E0.fits"), post.mean[:, 0])
    assert xr.open_datatree(out / "posterior.nc", engine="h5netcdf")["posterior"][
        "image"].shape == (2, 100, 12, 1)
    (out / "figures" / "maps.png").unlink()
    assert main(["report", str(out)]) == 0
    _png_ok(out / "figures" / "maps.png")


def test_bootstrap_of_map_rl_uses_the_priors(tiny):
    """MAP-RL bootstrap with a strong gamma prior: replicates are pulled towards k θ."""
    sim, _ = tiny
    strong = probdeconv.problem_from_dataif([sim.dataif()], bkg_free=True,
                                            bkg_range={"bkg": [0.01, 10.0]},
                                            image_prior="gamma", gamma=(50.0, 1e-6))
    post = probdeconv.sample(strong, method="bootstrap", algorithm="MAP_RL", num_samples=8,
                             iterations=30, batch=4, acceleration="LineSearch",
                             progress_bar=False)
    draws = post.store.read("image")
    assert draws.shape[1] == 8 and np.all(draws >= 0)
    mean = float(np.mean(draws))
    assert 0.5 * 49e-6 < mean < 1.5 * 49e-6  # the mode (k-1) θ dominates this tiny data set
    with pytest.raises(ParameterError, match="valid choices"):
        probdeconv.sample(strong, method="bootstrap", algorithm="MAP_RL", acceleration="classic",
                          progress_bar=False)
