"""Which model do the data prefer: predictive checks, pointwise log-likelihood, PSIS-LOO,
``probdeconv compare``.

Data are simulated from the forward model itself (12 pixels, one energy bin, 576 data
bins, one background): a bright pixel on a faint sky over a flat-ish background.

False-alarm rates.  The PIT check of the true model fails when the KS p-value is below
1e-3: for exactly uniform PIT values that happens with probability 1e-3 (the in-sample
PIT is shrunk towards 0.5 by ~13 parameters / 576 bins, which makes the test more
conservative, not less).  The LOO check asks the true model to lead by more than 5
standard errors of the difference (normal approximation: a false alarm rate below 3e-7
when the expected lead is larger than that; here it is ~100 standard errors).  The seeds
are fixed, so each run repeats the same numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import gammaln

import probdeconv
from probdeconv import DataError, FileFormatError, ParameterError
from probdeconv import forward as fm
from probdeconv.cli.main import main
from probdeconv.forward import make_dataset
from probdeconv.forward.problem import Problem
from probdeconv.results.compare import compare, loo
from probdeconv.results.loglik import pointwise_log_likelihood
from probdeconv.results.posterior import Posterior

PIT_P_MIN = 1e-3
DATA_SHAPE = (2, 6, 48)  # Em, Phi, PsiChi: 576 bins


def _data(seed: int = 3):
    rng = np.random.default_rng(seed)
    shape = (12, 1, *DATA_SHAPE)  # [NuLambda, Ei, Em, Phi, PsiChi]: each pixel seen in ~15 %
    response = 0.5 * rng.random(shape) * (rng.random(shape) < 0.15)  # of the bins
    truth = np.full((12, 1), 2.0)
    truth[3, 0] = 40.0  # a bright pixel
    bkg = 2.0 + rng.random(DATA_SHAPE)
    ds0 = make_dataset(np.ones(DATA_SHAPE), response, [bkg])
    expected = np.asarray(fm.expected_counts(ds0, truth, np.array([1.0])))
    counts = rng.poisson(expected).reshape(DATA_SHAPE).astype(float)
    return make_dataset(counts, response, [bkg]), truth


@pytest.fixture(scope="module")
def models():
    ds, truth = _data()
    sky = Problem.from_datasets([ds], bkg_free=True, bkg_range=[[0.1, 10.0]])
    bkg_only = dataclasses.replace(sky, config=dataclasses.replace(
        sky.config, mask=sky.config.mask & False))
    post_sky = probdeconv.sample(sky, "laplace", num_samples=400, seed=0)
    post_bkg = probdeconv.sample(bkg_only, "laplace", num_samples=400, seed=1)
    return post_sky, post_bkg


def test_pit_of_the_true_model_is_uniform_and_rootogram_counts_sum(models):
    post_sky, post_bkg = models
    ppc = post_sky.predictive_checks()
    n_bins = int(np.prod(DATA_SHAPE))
    assert ppc.n_bins == n_bins and ppc.pit.shape == (n_bins,)
    assert np.all((ppc.pit >= 0) & (ppc.pit <= 1))
    assert ppc.observed.sum() == n_bins  # every bin in one count class
    np.testing.assert_array_equal(ppc.predicted.sum(axis=1), n_bins)  # each replicate too
    counts = np.asarray(post_sky.problem.datasets[0].counts).ravel()
    assert ppc.observed[0] == np.sum(counts == 0)
    assert ppc.ks_pvalue > PIT_P_MIN, ppc.check_line()
    assert "PIT uniform: KS p = " in ppc.check_line()
    # power: the model without the sky misses the bright pixel's counts
    wrong = post_bkg.predictive_checks()
    assert wrong.ks_pvalue < PIT_P_MIN and "NOT uniform" in wrong.check_line()


def test_pointwise_log_likelihood_sums_to_the_full_one_with_rest_points_and_groups():
    rng = np.random.default_rng(0)
    counts = np.zeros((1, 2, 50))
    counts[0, 0, rng.choice(50, 12, replace=False)] = rng.integers(1, 5, 12)
    ds = make_dataset(counts, np.ones((1, 1, 1, 2, 50)), [np.full((1, 2, 50), 0.05)],
                      pixel_area=0.01)
    assert not ds.observes_all  # a sparse data space: observed view + the rest
    post = probdeconv.sample(Problem.from_datasets([ds], bkg_free=True,
                                                   bkg_range=[[0.01, 10.0]]),
                             "laplace", num_samples=60, seed=0)
    image, bkg = post.store.read("image")[0, 6], post.bkg_draws()[0, 6]
    want = (float(fm.log_likelihood(ds, fm.expected_counts(ds, image, bkg)))
            - float(np.sum(gammaln(counts + 1))))
    for max_bytes, grouped in ((1e9, False), (1000.0, True)):  # 30 x 13 x 8 bytes > 1000
        ll = pointwise_log_likelihood(post, max_bytes=max_bytes, max_draws=30)
        v = ll.values["obs_0"]
        # every 2nd draw kept: draw 6 is the 4th
        assert v.shape[:2] == (1, 30) and ll.thin == 2 and ll.draw_index[3] == 6
        kinds = set(ll.kind["obs_0"])
        assert "rest" in kinds and ("group" if grouped else "bin") in kinds
        assert (ll.group > 1) == grouped
        assert float(v[0, 3].sum()) == pytest.approx(want, rel=1e-10)


def test_laplace_importance_weights_are_exact_for_a_gamma_posterior():
    """One pixel, flat prior: the posterior is Gamma(81, 4), which the log-space Laplace
    with gamma marginals reproduces exactly, so log p − log q is the same for every draw;
    with log-normal marginals it is not."""
    ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
    p = Problem.from_datasets([ds])
    for marginals, spread in (("gamma", 1e-3), ("lognormal", None)):
        post = probdeconv.sample(p, "laplace", marginals=marginals, num_samples=500, seed=0)
        w = post.store.read("stats.log_p") - post.store.read("stats.log_q")
        assert w.shape == (1, 500) and np.all(np.isfinite(w))
        if spread:
            assert np.std(w) < spread
        else:
            assert np.std(w) > 0.01
        x = post.store.read("image")[0, :, 0, 0]
        lp = post.store.read("stats.log_p")[0]
        if marginals == "gamma":  # flux-space log-posterior, up to a constant
            assert np.ptp(lp - (80 * np.log(x) - 4 * x)) < 1e-8
    # SVI: log p of the whitened log-flux z (log-posterior + Jacobian: 81 u − 4 e^u)
    post = probdeconv.sample(p, "svi", num_steps=300, num_samples=200, seed=0,
                             progress_bar=False)
    x = post.store.read("image")[0, :, 0, 0]
    lp, lq = post.store.read("stats.log_p")[0], post.store.read("stats.log_q")[0]
    assert np.ptp(lp - (81 * np.log(x) - 4 * x)) < 1e-8 and np.all(np.isfinite(lq))


def test_loo_prefers_the_true_model_by_far(models, tmp_path):
    post_sky, post_bkg = models
    result = compare({"sky+bkg": post_sky, "bkg only": post_bkg})
    t = result.table
    assert list(t.index) == ["sky+bkg", "bkg only"]
    lead, dse = -float(t["elpd_diff"].iloc[1]), float(t["dse"].iloc[1])
    assert lead > 5 * dse and lead > 20, t
    for m in result.models.values():  # Pareto k counted and the approximation corrected
        assert m.approximate and m.pareto_k.shape == (576,) and np.isfinite(m.approx_k)
        assert "Pareto k max" in m.diagnostic_line()
    # the same numbers from the saved directories
    a = post_sky.save(tmp_path / "sky")
    assert loo(a).elpd.elpd == pytest.approx(result.models["sky+bkg"].elpd.elpd, rel=1e-9)
    again = Posterior.load(a).predictive_checks()
    assert again.ks_pvalue == pytest.approx(post_sky.predictive_checks().ks_pvalue)
    with pytest.raises(ParameterError, match="two or more"):
        compare([a])
    bootstrap = Posterior(post_sky.problem, post_sky.store, method="bootstrap")
    with pytest.raises(ParameterError, match="bootstrap draws"):
        compare({"sky": post_sky, "bootstrap": bootstrap})


def test_cli_compare_writes_its_outputs_and_refuses_a_non_posterior(models, tmp_path, capsys):
    post_sky, post_bkg = models
    a, b = post_sky.save(tmp_path / "sky"), post_bkg.save(tmp_path / "bkg")
    out = tmp_path / "cmp"
    assert main(["--quiet", "compare", str(a), str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "elpd_diff" in text and "The data prefer sky over bkg" in text
    for name in ("compare.csv", "compare.md", "compare.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 100, name
    assert not list(out.glob(".*.tmp*"))  # atomic writes leave no temporary file
    assert (out / "compare.csv").read_text().splitlines()[1].startswith("sky,0,")
    assert "Pareto k" in (out / "compare.md").read_text()
    empty = tmp_path / "not_a_posterior"
    empty.mkdir()
    assert main(["compare", str(a), str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not_a_posterior" in err and "not a posterior directory" in err
    with pytest.raises(FileFormatError, match="no log_likelihood group"):
        loo(post_bkg.save(tmp_path / "no_ll", log_likelihood=False))
    with pytest.raises(DataError, match="without its problem"):
        loo(Posterior.load(a))


def test_loo_of_a_linear_laplace_drops_the_draws_outside_the_support():
    """Gaussian draws in flux can be negative: their weight is 0 (log p = −inf) and PSIS-LOO
    uses the others instead of returning NaN."""
    ds = make_dataset(np.array([[[1.0, 0.0, 2.0, 0.0, 1.0, 0.0]]]), np.ones((1, 1, 1, 1, 6)),
                      pixel_area=1.0)
    p = Problem.from_datasets([ds], image_prior="gamma", gamma=(2.0, 5.0))
    post = probdeconv.sample(p, "laplace", space="linear", num_samples=400, seed=0)
    negative = int(np.sum(post.store.read("image") < 0))
    assert negative > 0 and np.sum(np.isinf(post.store.read("stats.log_p"))) == negative
    m = loo(post)
    assert np.isfinite(m.elpd.elpd) and m.n_draws == 400 - negative
