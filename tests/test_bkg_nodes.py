"""Time-dependent backgrounds: one normalisation per group of time bins (time nodes)."""

from __future__ import annotations

import astropy.units as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from conftest import synthetic_arrays
from numpyro import handlers
from numpyro.infer.util import log_density

from probdeconv import AllSkyImageModel, MAP_RichardsonLucy, RichardsonLucy
from probdeconv import forward as fm
from probdeconv.algorithms import em, map_em
from probdeconv.cli.main import main
from probdeconv.config import validate_algorithm_parameters
from probdeconv.errors import ParameterError
from probdeconv.forward.nodes import node_of_time, walk_prior, with_time_nodes
from probdeconv.forward.posterior import log_posterior, make_config
from probdeconv.inference.model import sky_model
from probdeconv.shell.problem import problem_from_parameters
from probdeconv.simulate import chunk_edges, load_simulation, simulate, survey_bins

N_T = 4


def _nodes_dataset(seed=0, n_bkg=1):
    counts, response, bkgs, ccm = synthetic_arrays(seed, local=True, n_t=N_T, n_bkg=n_bkg)
    ds = fm.make_dataset(counts, response, bkgs, ccm=ccm)
    return ds, counts, bkgs


def test_forward_with_nodes_matches_dense_templates():
    """Expected counts and background products with nodes equal those of one template
    per node (the template zeroed outside its node), dense and reduced."""
    ds, counts, bkgs = _nodes_dataset(n_bkg=2)
    nodes = np.array([0, 0, 1, 1])
    dn = with_time_nodes(ds, [nodes, None], [[0, 1], [2]])
    split = [np.where((nodes == j)[:, None, None, None], bkgs[0], 0.0) for j in (0, 1)]
    dense = fm.make_dataset(counts, np.ones((12, 2, 2, 3, 12)), [*split, bkgs[1]],
                            ccm=(np.array([[0], [0], [0]]), np.ones(1)))
    b = jnp.array([0.7, 1.3, 2.1])
    lam = jnp.full(ds.model_shape, 0.05)
    np.testing.assert_allclose(fm.background_counts(dn, b), fm.background_counts(dense, b),
                               rtol=1e-13)
    h = jnp.asarray(np.random.default_rng(1).random(ds.counts.shape))
    np.testing.assert_allclose(fm.background_product(dn, h), fm.background_product(dense, h),
                               rtol=1e-13)
    full = fm.log_likelihood(dn, fm.expected_counts(dn, lam, b))
    assert float(fm.observed_log_likelihood(dn, lam, b)) == pytest.approx(float(full),
                                                                          rel=1e-12)
    r = fm.observed_counts(dn) / fm.reduced_expectation(dn, fm.reduced_sky(dn, lam), b)[:-1]
    np.testing.assert_allclose(fm.reduced_background_product(dn, r),
                               fm.background_product(dn, fm.unobserved(dn, r)), rtol=1e-12)
    np.testing.assert_allclose(dn.bkg_totals, [split[0].sum(), split[1].sum(), bkgs[1].sum()],
                               rtol=1e-13)


def test_em_update_per_node_is_the_closed_form():
    """One EM step: b_j ← b_j Σ_{t∈j} Σ_i B (d/E) / Σ_{t∈j} Σ_i B for every node j."""
    ds, counts, bkgs = _nodes_dataset(seed=2)
    nodes = np.array([0, 1, 1, 2])
    dn = with_time_nodes(ds, [nodes], [[0, 1, 2]])
    opts = em.EMOptions(optimize_bkg=True)
    params = em.make_params((dn,), opts, bkg_range=np.tile([0.0, 1e3], (3, 1)))
    lam, b = jnp.full(ds.model_shape, 0.05), jnp.array([0.8, 1.1, 1.4])
    state, _ = em.step(em.init(lam, b, (dn,), params), (dn,), params, opts)
    e = np.asarray(fm.expected_counts(dn, lam, b))  # [t, i]
    bk = bkgs[0].reshape(N_T, -1)
    ratio = counts.reshape(N_T, -1) / e
    want = [b[j] * (bk[nodes == j] * ratio[nodes == j]).sum() / bk[nodes == j].sum()
            for j in range(3)]
    np.testing.assert_allclose(state.bkg_norm, want, rtol=1e-12)


@pytest.fixture(scope="module")
def drifting():
    sim = simulate(sky="points", nside=1, seed=3, phi_bins=4, n_samples=600, scatt_nside=1,
                   time_chunks=3, bkg_drift=0.2, background_rate=3.0)
    model = AllSkyImageModel(1, sim.config.energy_edges * u.keV)
    model[:] = 1e-3 * model.unit
    return sim, sim.dataif(), model


def _rl(cls, model, data, bkg_opt, iterations=3):
    algo = cls(model, [data], None, {"iteration_max": iterations,
                                     "background_normalization_optimization": bkg_opt})
    algo.initialization()
    for _ in range(iterations):
        algo.iteration()
    return algo


def test_one_node_is_the_scalar_fit_exactly(drifting):
    sim, data, model = drifting
    base = {"activate": True, "range": {"bkg": [0.1, 10.0]}}
    n_t = sim.event.axes[0].nbins
    runs = [_rl(RichardsonLucy, model, data, {**base, **extra})
            for extra in ({}, {"nodes": 1}, {"nodes": [0, n_t]})]
    for algo in runs[1:]:
        assert list(algo.dict_bkg_norm) == ["bkg"]
        np.testing.assert_array_equal(np.asarray(algo.model), np.asarray(runs[0].model))
        assert algo.dict_bkg_norm == runs[0].dict_bkg_norm


def test_nodes_from_yaml_in_rl_map_rl_and_the_sampler_model(drifting):
    sim, data, model = drifting
    bins, chunk, _ = survey_bins(sim.config)
    edges = chunk_edges(chunk)
    text = f"""
    iteration_max: 2
    background_normalization_optimization:
      activate: true
      range: {{bkg: [0.1, 10.0], "bkg:node2": [0.5, 2.0]}}
      nodes: {{bkg: {edges}}}
      smoothness: 0.05
    """
    par = yaml.safe_load(text)
    assert validate_algorithm_parameters("RL", par)["background_normalization_optimization"][
        "nodes"] == {"bkg": edges}
    algo = _rl(MAP_RichardsonLucy, model, data, par["background_normalization_optimization"],
               iterations=2)
    assert list(algo.dict_bkg_norm) == ["bkg:node0", "bkg:node1", "bkg:node2"]
    assert algo.dict_bkg_norm_range["bkg:node2"] == [0.5, 2.0]
    assert algo.dict_bkg_norm_range["bkg:node0"] == [0.1, 10.0]
    assert "smooth_bkg" in algo.results[-1]["log-prior"]
    prior = yaml.safe_load("""
    image: {kind: flat}
    background: {free: true, range: {bkg: [0.1, 10.0]}, nodes: 3, smoothness: 0.1}
    """)
    p = problem_from_parameters([data], prior)
    assert p.bkg_names == ("bkg:node0", "bkg:node1", "bkg:node2")
    assert np.asarray(p.config.bkg_range).tolist() == [[0.1, 10.0]] * 3


def test_numpyro_model_has_one_normalisation_per_node_and_the_walk(drifting):
    _, data, _ = drifting
    p = problem_from_parameters([data], {"image": {"kind": "flat"}, "background": {
        "free": True, "range": {"bkg": [0.1, 10.0]}, "nodes": 3, "smoothness": 0.05}})
    image, b = jnp.full(p.model_shape, 1e-3), jnp.array([0.9, 1.0, 1.2])
    values = {"image": image, "bkg_norm": b}
    tr = handlers.trace(handlers.substitute(sky_model, values)).get_trace(p.datasets, p.config)
    assert tr["bkg_norm"]["value"].shape == (3,)
    walk = -0.5 * ((np.log(1.0 / 0.9) / 0.05) ** 2 + (np.log(1.2 / 1.0) / 0.05) ** 2)
    assert float(tr["smooth_bkg"]["fn"].log_factor) == pytest.approx(walk, rel=1e-12)
    lp, _ = log_density(sky_model, (p.datasets, p.config), {}, values)
    flat = problem_from_parameters([data], {"image": {"kind": "flat"}, "background": {
        "free": True, "range": {"bkg": [0.1, 10.0]}, "nodes": 3}})
    lp0, _ = log_density(sky_model, (flat.datasets, flat.config), {}, values)
    assert float(lp - lp0) == pytest.approx(walk, rel=1e-9)


def test_map_em_with_the_walk_reaches_a_stationary_background():
    """MAP-EM's one-step-late background update stops where ∂ log posterior / ∂b = 0."""
    ds, counts, bkgs = _nodes_dataset(seed=4)
    dn = with_time_nodes(ds, [np.array([0, 1, 2, 3])], [[0, 1, 2, 3]])
    walk = walk_prior([[0, 1, 2, 3]], [0.05])
    cfg = make_config(ds.model_shape, n_bkg=4, bkg_free=True, bkg_walk=walk,
                                   mask=np.zeros(ds.model_shape, bool),
                                   bkg_range=np.tile([1e-3, 1e3], (4, 1)))
    params = map_em.MAPParams(em.make_params((dn,), em.EMOptions(), n_bkg=4,
                                             mask=np.zeros(ds.model_shape, bool)), cfg)
    state = map_em.init(jnp.zeros(ds.model_shape), jnp.ones(4), (dn,), params)
    step = map_em.build_step(map_em.MAPOptions())
    for _ in range(300):
        state, _ = step(state, (dn,), params)
    grad = jax.grad(lambda b: log_posterior((dn,), jnp.zeros(ds.model_shape), b,
                                            cfg))(state.bkg_norm)
    scale = float(jnp.max(dn.bkg_totals))
    assert float(jnp.max(jnp.abs(grad))) < 1e-6 * scale


@pytest.mark.parametrize("nodes, words", [
    (0, "expected an integer from 1 to 4"), (5, "expected an integer from 1 to 4"),
    ([0, 3], "bin edges [0, ..., 4]"), ([0, 2, 2, 4], "strictly increasing"),
    (True, "expected a number of nodes")])
def test_bad_nodes_are_named(nodes, words):
    with pytest.raises(ParameterError, match="background_normalization") as info:
        node_of_time(4, nodes, what="deconvolution:parameter:background_normalization_"
                                    "optimization:nodes")
    assert words in str(info.value)


def test_bad_nodes_in_a_run_are_named(drifting):
    _, data, model = drifting
    with pytest.raises(ParameterError, match=r"nodes.*expected an integer from 1 to"):
        RichardsonLucy(model, [data], None, {"background_normalization_optimization": {
            "activate": True, "nodes": 10_000}})
    with pytest.raises(ParameterError, match=r"nodes.*'albedo'.*no dataset has"):
        RichardsonLucy(model, [data], None, {"background_normalization_optimization": {
            "activate": True, "nodes": {"albedo": 2}}})
    with pytest.raises(ParameterError, match=r"smoothness:bkg: got -0.1; expected a finite"):
        RichardsonLucy(model, [data], None, {"background_normalization_optimization": {
            "activate": True, "nodes": 2, "smoothness": -0.1}})
    with pytest.raises(ParameterError, match=r"nodes \(dataset 'simulation'\): got 'many'"):
        RichardsonLucy(model, [data], None, {"background_normalization_optimization": {
            "activate": True, "nodes": "many"}})


def test_drifting_simulation_keeps_a_flat_template(drifting):
    sim, _, _ = drifting
    bins, chunk, factor = survey_bins(sim.config)
    assert sim.event.axes[0].nbins == bins.n_bins
    assert factor.min() < 0.95 and factor.max() > 1.05  # ±20 % sine over the mission
    flat = simulate(sky="points", nside=1, seed=3, phi_bins=4, n_samples=600, scatt_nside=1,
                    time_chunks=3, background_rate=3.0)
    np.testing.assert_array_equal(np.asarray(sim.background), np.asarray(flat.background))


def test_simulate_command_takes_a_drift(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["--quiet", "simulate", "--nside", "1", "--phi-bins", "4", "--scatt-nside", "1",
                 "--bkg-drift", "0.2", "--bkg-drift-shape", "linear", "--time-chunks", "2",
                 "--out", str(out)]) == 0
    cfg = load_simulation(out).config
    assert (cfg.bkg_drift, cfg.bkg_drift_shape, cfg.time_chunks) == (0.2, "linear", 2)
    assert main(["--quiet", "simulate", "--nside", "1", "--bkg-drift", "1.5", "--out",
                 str(tmp_path / "bad")]) != 0
    assert "bkg_drift 1.5" in capsys.readouterr().err
