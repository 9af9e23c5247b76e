"""One posterior for both engines, one prior-section reader, an array-only Problem, plain draws.

- the YAML ``prior:`` section in MAP-RL's layout and in the sampler files' layout gives the
  same posterior (:mod:`probdeconv.config.priors`), and its errors name the key;
- MAP-EM registers exactly the log-prior and log-posterior of
  :mod:`probdeconv.forward.posterior` (the NumPyro model's, tested in
  test_inference_model.py);
- :mod:`probdeconv.inference` imports only the core (forward, priors, algorithms, errors);
- the draws file (:mod:`probdeconv.io.draws`) round-trips a store.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_arrays

from probdeconv import ParameterError, problem_from_dataif
from probdeconv import forward as fm
from probdeconv.algorithms import em, map_em
from probdeconv.config.priors import MAP_KEYS, check_prior_section, prior_options
from probdeconv.forward.posterior import log_posterior, log_prior_terms, make_config
from probdeconv.inference.draws import DrawStore
from probdeconv.io.draws import DrawsFile, open_draws, write_draws
from probdeconv.results.maps import model_axes
from probdeconv.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
FLUX = "cm-2 s-1 sr-1"
COSIPY = {"TSV": {"coefficient": 2.0},
          "gamma": {"model": {"theta": {"value": 5.0e4, "unit": "m-2 s-1 sr-1"},
                              "k": {"value": 1.5}},
                    "background": {"theta": {"value": 3.0}, "k": {"value": 2.0}}}}
SAMPLER = {"image": {"kind": "gamma", "k": 1.5, "theta": 5.0},
           "background": {"free": True, "kind": "gamma", "k": 2, "theta": 3.0,
                          "range": {"bkg": [0.1, 10.0]}},
           "TSV": {"coefficient": 2}}


def _dataset():
    counts, response, bkgs, _ = synthetic_arrays(0)
    return (fm.make_dataset(counts, response, bkgs),)


def test_both_layouts_give_the_same_posterior():
    dss = _dataset()
    a = prior_options(COSIPY, bkg_names=["bkg"], nside=1, keys=MAP_KEYS)
    b = prior_options(SAMPLER, bkg_names=["bkg"], nside=1)
    assert a["gamma"] == pytest.approx((1.5, 5.0), rel=1e-12)  # 5e4 m-2 = 5 cm-2
    assert a["bkg_gamma"] == b["bkg_gamma"] == (2.0, 3.0)
    assert b["bkg_free"] is True and b["bkg_range"] == [[0.1, 10.0]] and "bkg_free" not in a
    cfg_a = make_config((12, 2), n_bkg=1, bkg_free=True, bkg_range=[[0.1, 10.0]], **a)
    cfg_b = make_config((12, 2), n_bkg=1, **b)
    image = jnp.asarray(np.random.default_rng(1).random((12, 2)) + 0.1)
    bkg = jnp.asarray([0.7])
    la, lb = (float(log_posterior(dss, image, bkg, c)) for c in (cfg_a, cfg_b))
    assert la == pytest.approx(lb, rel=1e-14)
    assert set(log_prior_terms(image, bkg, cfg_a)) == {"gamma_model", "gamma_bkg", "TSV"}
    # the sampler files may use MAP-RL's gamma section as well
    c = prior_options({**COSIPY, "background": {"range": [0.1, 10.0]}}, bkg_names=["bkg"],
                      nside=1)
    assert c["image_prior"] == "gamma" and c["bkg_free"] and c["bkg_range"] == [[0.1, 10.0]]


def test_entropy_reference_in_the_model_unit_or_its_own():
    kw = dict(bkg_names=[], nside=1, keys=MAP_KEYS, model_unit_to_flux=1e-4)
    plain = prior_options({"entropy": {"coefficient": 1.0, "reference": 2.0}}, **kw)
    given = prior_options({"entropy": {"coefficient": 1.0,
                                       "reference": {"value": 2.0, "unit": "m-2 s-1 sr-1"}}},
                          **kw)
    assert float(plain["priors"]["entropy"].reference) == pytest.approx(2e-4, rel=1e-12)
    assert float(given["priors"]["entropy"].reference) == pytest.approx(2e-4, rel=1e-12)


@pytest.mark.parametrize(("prior", "keys", "needle"), [
    ({"L1": {"coefficient": 1}}, MAP_KEYS, "prior:L1: unknown key"),
    ({"image": {"kind": "gamma"}}, MAP_KEYS, "prior:image: unknown key"),
    ({"TSV": {}}, MAP_KEYS, "prior:TSV:coefficient: missing required key"),
    ({"TSV": {"coefficient": -1}}, MAP_KEYS, "prior:TSV:coefficient: got -1 (int)"),
    ({"gamma": {"model": {"k": {"value": 0}}}}, MAP_KEYS, "prior:gamma:model:k:value: got 0"),
    ({"gamma": {"model": {"theta": {"value": 1, "unit": "keV"}}}}, MAP_KEYS,
     "prior:gamma:model:theta:unit: got 'keV' (str); expected an astropy unit string "
     "convertible to cm-2 s-1 sr-1"),
    ({"image": {"kind": "lognormal", "k": 2}}, None, "prior:image:k: unknown key"),
    ({"image": {"kind": "cauchy"}}, None, "prior:image:kind: got 'cauchy'"),
    ({"image": {"kind": "gamma"}, "gamma": {}}, None, "gives both gamma and image"),
    ({"background": {"kind": "uniform", "k": 2}}, None, "k and theta need kind: gamma"),
    ({"background": {"range": {"bkg": [2, 1]}}}, None, "prior:background:range:bkg: got [2, 1]"),
    ({"background": {"range": {"cr": [0, 1]}}}, None, "unknown background(s) ['cr']"),
])
def test_prior_errors_name_the_key(prior, keys, needle):
    kw = {} if keys is None else {"keys": keys}
    with pytest.raises(ParameterError) as err:
        prior_options(prior, bkg_names=["bkg"], nside=1, **kw)
    assert needle in str(err.value)


def test_check_keeps_the_layout_and_normalises_numbers():
    tree = check_prior_section({"gamma": {"model": {"theta": {"value": ".inf", "unit": FLUX},
                                                    "k": {"value": 1}}}}, keys=MAP_KEYS)
    assert tree == {"gamma": {"model": {"theta": {"value": math.inf, "unit": FLUX},
                                        "k": {"value": 1.0}}}}


def test_map_em_registers_the_one_log_posterior():
    """MAP-EM's log-prior terms and log-posterior are those of forward.posterior."""
    dss = _dataset()
    cfg = make_config((12, 2), n_bkg=1, **prior_options(COSIPY, bkg_names=["bkg"], nside=1,
                                                        keys=MAP_KEYS),
                      bkg_free=True, bkg_range=[[0.1, 10.0]])
    params = map_em.MAPParams(em=em.make_params(dss, em.EMOptions(), bkg_range=[[0.1, 10.0]]),
                              posterior=cfg)
    step = map_em.build_step(map_em.MAPOptions(acceleration="LineSearch"))
    state = map_em.init(jnp.ones((12, 2)), jnp.ones(1), dss, params)
    for _ in range(3):
        state, info = step(state, dss, params)
    want = log_prior_terms(state.model, state.bkg_norm, cfg)
    assert set(info.log_prior) == set(want) == {"gamma_model", "gamma_bkg", "TSV"}
    for k, v in want.items():
        assert float(info.log_prior[k]) == pytest.approx(float(v), rel=1e-12)
    # no mask and minimum_flux 0: the iterate is the image the NumPyro model would see
    lp = float(log_posterior(dss, state.model, state.bkg_norm, cfg))
    assert float(info.log_posterior) == pytest.approx(lp, rel=1e-12)


def _relative_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 2:
            out |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
    return out


def test_inference_imports_only_the_core():
    for path in sorted((ROOT / "probdeconv" / "inference").glob("*.py")):
        upward = _relative_imports(path) - {"forward", "priors", "algorithms", "errors"}
        assert not upward, f"{path.name} imports {sorted(upward)} (inference may import only " \
            "forward, priors, algorithms and errors)"


def test_draws_file_round_trip(tmp_path):
    store = DrawStore(2, {"x": (3,), "n": ()}, {"n": np.int64},
                      backend=DrawsFile(tmp_path / "a.h5"))
    rng = np.random.default_rng(0)
    chunks = [{"x": rng.random((2, 4, 3)), "n": rng.integers(0, 9, (2, 4))} for _ in range(2)]
    for c in chunks:
        store.append(c)
    again = DrawStore.restore(**open_draws(tmp_path / "a.h5"))
    want = np.concatenate([c["x"] for c in chunks], axis=1)
    np.testing.assert_array_equal(again.read("x"), want)
    np.testing.assert_allclose(again.mean("x"), want.reshape(-1, 3).mean(axis=0), rtol=1e-12)
    assert again.n_draws == 8 and again.dtypes["n"] == np.int64
    memory = DrawStore(2, {"x": (3,)})
    memory.append({"x": want})
    write_draws(tmp_path / "b.h5", memory)
    copy = DrawStore.restore(**open_draws(tmp_path / "b.h5"))
    np.testing.assert_array_equal(copy.read("x", slice(1, 3)), want[:, :, 1:3])
    np.testing.assert_allclose(copy.var("x"), memory.var("x"), rtol=1e-12)


def test_problem_holds_arrays_and_a_plain_grid_that_gives_back_the_axes():
    data = simulate(sky="points", nside=1, seed=1, phi_bins=4, n_samples=500,
                    scatt_nside=1, psichi_oversampling=1).dataif()
    p = problem_from_dataif([data], bkg_free=True, bkg_range={"bkg": [0.1, 10.0]})
    for field in dataclasses.fields(p):  # no histograms: arrays, numbers and strings only
        assert "histpy" not in type(getattr(p, field.name)).__module__, field.name
    axes, want = model_axes(p.grid, p.model_shape), data.model_axes
    assert axes.shape == want.shape and axes[0].nside == want[0].nside
    np.testing.assert_allclose(axes[1].edges.to_value("keV"), want[1].edges.to_value("keV"))
    assert p.pixel_area == pytest.approx(4 * np.pi / 12)
