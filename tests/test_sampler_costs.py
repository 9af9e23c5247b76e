"""The samplers' costs and their fixes (issue 15), on tiny problems.

- NUTS/HMC and SVI pass the datasets to compiled code as arguments: no compiled module
  holds a data-sized constant (checked on the StableHLO JAX dumps);
- the Fisher diagonal from the squared response equals the diagonal of the columns to
  1e-12 in both frames, and the start computes it once, without columns;
- SVI's timings account for the whole run;
- the likelihood and the bootstrap run over the observed bins with the numbers of the
  dense data space;
- the log-space Laplace approximation with gamma marginals is exact on a faint conjugate
  pixel (the log-normal is 2.16× too wide there); faint pixels get upper limits;
- unexposed pixels under an improper prior are masked, not written as inf / NaN.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_arrays
from scipy.stats import norm

import probdeconv
from probdeconv import forward as fm
from probdeconv.algorithms import em
from probdeconv.forward import make_dataset, with_counts
from probdeconv.forward.problem import Problem
from probdeconv.inference import fisher, start
from probdeconv.inference.fisher_diag import pair_plan
from probdeconv.inference.laplace import run_laplace
from probdeconv.inference.mcmc import run_mcmc
from probdeconv.inference.svi import run_svi
from probdeconv.priors import TSVPrior
from probdeconv.results.posterior import Posterior

Z = norm.ppf(1 - 1e-4 / 2)  # two-sided 1e-4 false-alarm rate per comparison
_CONSTANT = re.compile(r"stablehlo\.constant dense<[^>]*> : tensor<([0-9x]+)x(?:f64|f32)>")


def _largest_constant(directory: Path) -> int:
    """Elements of the largest floating-point array constant in the dumped modules."""
    largest = 0
    for path in directory.iterdir():
        for m in _CONSTANT.finditer(path.read_text(errors="replace")):
            largest = max(largest, int(np.prod([int(n) for n in m.group(1).split("x")])))
    return largest


def test_samplers_pass_the_data_as_arguments_not_constants(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, (3, 5, 40)).astype(float)  # 600 bins; response 7200 entries
    ds = make_dataset(counts, rng.random((12, 1, 3, 5, 40)))
    problem = Problem.from_datasets([ds])
    prepared = start.prepare(problem)
    dump = tmp_path / "ir"
    jax.config.update("jax_dump_ir_to", str(dump))
    try:
        run_mcmc(problem, num_warmup=10, num_samples=10, chains=1, progress_bar=False,
                 start=prepared)
        run_svi(problem, num_steps=20, num_draws=10, progress_bar=False, start=prepared)
    finally:
        jax.config.update("jax_dump_ir_to", "")
    assert len(list(dump.iterdir())) > 10  # the samplers' modules were dumped
    assert _largest_constant(dump) < ds.n_bins  # no data-sized constant in any of them


# --------------------------------------------------------------------------- Fisher diagonal
def _problem(local: bool, seed: int = 1, duplicate: bool = False) -> Problem:
    c, r, b, ccm = synthetic_arrays(seed=seed, local=local, n_pix=12, n_e=2)
    if duplicate:  # repeated (t, lb, NuLambda) entries and one pixel seen twice in a row
        coords, values = ccm
        ccm = (np.concatenate([coords, coords[:, :5]], axis=1),
               np.concatenate([values, 0.5 * values[:5]]))
    ds = make_dataset(c, r, b, ccm=ccm, n_model_pixels=12)
    mask = np.ones((12, 2), bool)
    mask[3, 1] = False
    return Problem.from_datasets([ds], bkg_free=True, mask=mask, image_prior="gamma",
                                 gamma=(2.0, 5.0), priors={"TSV": TSVPrior.build(1, 0.3)})


@pytest.mark.parametrize("local,duplicate", [(False, False), (True, False), (True, True)])
def test_fisher_diagonal_from_the_squared_response_equals_the_columns(local, duplicate):
    problem = _problem(local, duplicate=duplicate)
    theta = np.random.default_rng(2).random(problem.n_params) + 0.1
    for kind in ("expected", "observed"):
        dense = np.diag(fisher.precision_matrix(problem, theta, kind=kind))
        fast = fisher.precision_matrix(problem, theta, kind=kind, diagonal=True)
        np.testing.assert_allclose(fast, dense, rtol=1e-12, atol=0.0)
    plan = pair_plan(problem.datasets[0])
    if local:  # pixel pairs that share a CCM row, each once
        assert len(set(zip(plan.lo.tolist(), plan.hi.tolist()))) == len(plan.lo)
        assert np.all(plan.lo <= plan.hi)


def test_the_start_computes_the_fisher_diagonal_once_without_columns(monkeypatch):
    problem = _problem(True)
    calls = []
    real = start.data_diagonal_theta

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(start, "data_diagonal_theta", counted)
    monkeypatch.setattr(fisher, "_columns", lambda *a, **k: pytest.fail("a column of F"))
    prepared = start.prepare(problem)
    assert len(calls) == 1
    assert prepared.notes["mode_converged"]
    assert np.all(np.isfinite(np.asarray(prepared.latent.scale)))


# --------------------------------------------------------------------------- SVI timings
def test_svi_timings_account_for_the_whole_run():
    problem = _problem(False)
    draws = run_svi(problem, num_steps=200, num_draws=50, progress_bar=False)
    t = draws.timings
    parts = ("start_map", "start_mode", "start_precision", "init", "compile", "fit", "draws")
    assert set(parts) | {"total"} == set(t)
    assert 0.9 * t["total"] <= sum(t[k] for k in parts) <= t["total"]
    assert t["compile"] > 0 and t["fit"] > 0


# --------------------------------------------------------------------------- observed bins
def _sparse_dataset(seed: int = 3):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.2, (3, 2, 3, 12)).astype(float)  # mostly empty bins
    response = rng.random((12, 1, 2, 3, 12))
    bkg = [0.05 * rng.random((3, 2, 3, 12)) + 0.01]
    t = np.repeat(np.arange(3), 12 * 4)
    lb = np.tile(np.repeat(np.arange(12), 4), 3)
    ccm = (np.array([t, lb, rng.integers(0, 12, t.size)]), rng.random(t.size) * 5.0)
    return make_dataset(counts, response, bkg, ccm=ccm, n_model_pixels=12)


def test_observed_bin_likelihood_and_gradient_equal_the_dense_ones():
    ds = _sparse_dataset()
    assert not ds.observes_all and ds.n_observed < ds.n_bins / 2
    image = jnp.asarray(np.random.default_rng(4).random((12, 1)) + 0.01)
    bkg = jnp.array([1.3])

    def dense(x, b):
        return fm.log_likelihood(ds, fm.expected_counts(ds, x, b))

    def reduced(x, b):
        return fm.observed_log_likelihood(ds, x, b)

    np.testing.assert_allclose(reduced(image, bkg), dense(image, bkg), rtol=1e-13)
    for gr, gd in zip(jax.grad(reduced, (0, 1))(image, bkg), jax.grad(dense, (0, 1))(image, bkg)):
        np.testing.assert_allclose(gr, gd, rtol=1e-11, atol=1e-12)


def test_bootstrap_replicates_over_observed_bins_equal_dense_ones():
    ds = _sparse_dataset()
    problem = Problem.from_datasets([ds], bkg_free=True, bkg_range=[[0.01, 10.0]])
    rep = np.random.default_rng(5).poisson(np.asarray(ds.counts)).astype(float)
    assert np.all(rep[np.asarray(ds.counts) == 0] == 0)  # a resample is 0 where d is
    opts = em.EMOptions(optimize_bkg=True)
    params = em.make_params((ds,), opts, mask=problem.mask, bkg_range=np.asarray(
        problem.config.bkg_range), n_bkg=1)
    step = em.build_step(opts)
    image0 = jnp.full((12, 1), 0.1)
    out = []
    for d in (with_counts(ds, jnp.asarray(rep)),  # concrete counts: its own view
              fm.with_observed_counts(ds, jnp.asarray(rep.reshape(-1)[np.asarray(
                  ds.obs_index)]))):  # the data's observed bins
        state = em.init(image0, jnp.ones(1), (d,), params)
        for _ in range(15):
            state, _ = step(state, (d,), params)
        out.append(np.asarray(state.model))
    np.testing.assert_allclose(out[1], out[0], rtol=1e-10)
    post = probdeconv.sample(problem, method="bootstrap", num_samples=6, iterations=10,
                             batch=3, progress_bar=False)
    assert post.n_draws == 6 and np.all(np.isfinite(post.mean)) and np.all(post.std > 0)


# --------------------------------------------------------------------------- faint pixels
def test_log_space_laplace_is_exact_on_a_faint_conjugate_pixel(tmp_path):
    """No counts, flat prior: the posterior is Gamma(1, S) (mean = std = 1/S, 95 % upper
    limit ln 20 / S); the log-normal approximation's std is √((e−1)e)/S = 2.16/S."""
    ds = make_dataset(np.zeros((1, 1, 5)), np.full((1, 1, 1, 1, 5), 2.0), pixel_area=1.0)
    problem = Problem.from_datasets([ds])
    s, n = 10.0, 40000
    prepared = start.prepare(problem, full=True, precondition="none")
    post = run_laplace(problem, num_draws=n, seed=3, start=prepared)
    x = post.store.read("image")[0, :, 0, 0]
    assert abs(x.mean() - 1 / s) < Z * (1 / s) / np.sqrt(n)
    assert x.std() == pytest.approx(1 / s, rel=0.03)
    assert np.quantile(x, 0.95) == pytest.approx(np.log(20) / s, rel=0.03)
    wide = run_laplace(problem, marginals="lognormal", num_draws=n, seed=3, start=prepared)
    assert wide.store.read("image")[0, :, 0, 0].std() == pytest.approx(
        np.sqrt((np.e - 1) * np.e) / s, rel=0.1)  # the defect of issue 15, item 5
    result = Posterior.from_draws(problem, post)  # faint: quote the upper limit
    assert result.faint[0, 0]
    assert np.asarray(result.upper_limit_map(0.95))[0, 0] == pytest.approx(np.log(20) / s,
                                                                            rel=0.03)
    report = result.report(tmp_path).read_text()
    assert "## Faint pixels" in report and "1 of 1 free pixels" in report


def test_simulate_options_for_lighter_data(tmp_path, capsys):
    from probdeconv.cli.main import main
    from probdeconv.simulate import load_simulation

    for name, extra in (("full", []), ("light", ["--phi-bins", "10", "--scatt-nside", "1"])):
        assert main(["simulate", "--nside", "2", "--out", str(tmp_path / name), *extra]) == 0
    full, light = (load_simulation(tmp_path / n) for n in ("full", "light"))
    assert light.config.phi_bins == 10 and light.config.scatt_nside == 1
    assert light.event.contents.size * 2 < full.event.contents.size  # lighter data space
    assert main(["simulate", "--nside", "2", "--phi-bins", "0", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "phi_bins" in capsys.readouterr().err


def test_unexposed_pixels_are_masked_not_written_as_inf(caplog):
    rng = np.random.default_rng(6)
    response = rng.random((12, 1, 2, 3, 12))
    response[[4, 9]] = 0.0  # two pixels no data bin sees
    ds = make_dataset(rng.poisson(4.0, (2, 3, 12)), response, [np.ones((2, 3, 12))])
    problem = Problem.from_datasets([ds], bkg_free=True, bkg_range=[[0.01, 10.0]])
    with caplog.at_level(logging.WARNING):
        post = probdeconv.sample(problem, method="laplace", num_samples=200)
    assert "zero exposure" in caplog.text and "4 E0" in caplog.text
    assert np.all(np.isfinite(post.mean)) and np.all(np.isfinite(post.std))
    assert not post.mask[4, 0] and not post.mask[9, 0] and post.mean[4, 0] == 0.0
    svi = probdeconv.sample(problem, method="svi", num_steps=100, num_samples=50,
                            progress_bar=False)
    assert np.all(np.isfinite(svi.mean))


def test_cli_sample_shows_progress_for_every_phase(tmp_path, capsys):
    from probdeconv.cli.main import main
    from probdeconv.simulate import simulate

    data = tmp_path / "sim"
    simulate(sky="points", nside=1, seed=1, phi_bins=4, duration=86400.0, n_samples=2000,
             scatt_nside=1, psichi_oversampling=1, out=data)
    root = Path(__file__).resolve().parents[1]
    rc = main(["sample", str(root / "models" / "laplace.yml"), "--data", str(data), "--out",
               str(tmp_path / "post"), "--set", "sampling:num_samples=200"])
    err = capsys.readouterr().err
    assert rc == 0, err
    for phase in ("start: MAP", "start: log-space mode", "precision matrix", "Laplace draws",
                  "saving posterior"):
        assert phase in err, phase
    report = (tmp_path / "post" / "report.md").read_text()
    assert "Settings" in report
