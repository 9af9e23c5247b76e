"""The NumPyro sky model, its log-posterior, gradient MAP and the MAPGradient class."""

from __future__ import annotations

import math
from pathlib import Path

import astropy.units as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_arrays
from histpy import Axis, HealpixAxis
from numpyro.infer import Trace_ELBO
from numpyro.infer.autoguide import AutoDelta
from numpyro.infer.util import log_density
from scipy.special import gammaln

from probdeconv import AllSkyImageModel, DataIF_COSI_DC2, Histogram, Parameters
from probdeconv import forward as fm
from probdeconv.algorithms import em
from probdeconv.config import validate_algorithm_parameters, validate_run_parameters
from probdeconv.errors import DataError, ParameterError
from probdeconv.forward.posterior import log_posterior, make_config
from probdeconv.inference import map as gmap
from probdeconv.inference.model import sky_model
from probdeconv.priors import EPS, EntropyPrior, TSVPrior
from probdeconv.shell.map_gradient import MAPGradient
from probdeconv.shell.map_richardson_lucy import MAP_RichardsonLucy

MODELS = Path(__file__).resolve().parents[1] / "models"


# ----------------------------------------------------------------------------- problems
def _two_datasets():
    """A galactic and a spacecraft-frame dataset sharing one background (NSIDE 1, 2 Ei)."""
    out = []
    for seed, local in ((0, False), (1, True)):
        counts, response, bkgs, ccm = synthetic_arrays(seed, local=local)
        out.append(fm.make_dataset(counts, response, bkgs, ccm=ccm))
    return tuple(out)


def _simulated(scale: float = 1.0):
    """Counts drawn from a sparse true image (some true zeros), fixed background."""
    _, response, bkgs, _ = synthetic_arrays(0)
    rng = np.random.default_rng(100)
    truth = rng.gamma(3.0, 1.0, (12, 2)) * (rng.random((12, 2)) > 0.3)
    ds0 = fm.make_dataset(np.zeros((2, 3, 12)), response, bkgs)
    lam = np.asarray(fm.expected_counts(ds0, jnp.asarray(truth), jnp.ones(1)))
    counts = rng.poisson(lam * scale).reshape(2, 3, 12)
    return (fm.make_dataset(counts, response, [b * scale for b in bkgs]),)


def _image(shape, seed=3):
    return jnp.asarray(np.random.default_rng(seed).random(shape) + 0.05)


# ------------------------------------------------------------------- log_density identity
def _log_d_factorial(datasets) -> float:
    return float(sum(np.sum(gammaln(np.asarray(ds.counts) + 1.0)) for ds in datasets))


MASK = np.ones((12, 2), bool)
MASK[[2, 7], 0] = False
MASK[5, :] = False

CASES = {
    # name: (make_config kwargs, bkg value or None)
    "flat": (dict(), None),
    "gamma-finite-theta-masked": (dict(image_prior="gamma", gamma=(2.5, 0.7), mask=MASK), None),
    "gamma-theta-inf": (dict(image_prior="gamma", gamma=(1.7, math.inf)), None),
    "flat-TSV-entropy": (dict(priors={"TSV": TSVPrior.build(1, 3.0),
                                      "entropy": EntropyPrior(0.5, jnp.asarray(0.3))}), None),
    "free-bkg-uniform": (dict(bkg_free=True, bkg_range=[[0.1, 5.0]]), 0.8),
    "free-bkg-gamma": (dict(bkg_free=True, bkg_prior="gamma", bkg_gamma=(3.0, 0.5),
                            image_prior="gamma", gamma=(1.0, 2.0)), 1.3),
    "lognormal": (dict(image_prior="lognormal", lognormal=(np.linspace(-1, 0, 24).reshape(12, 2),
                                                           0.8), mask=MASK), None),
}


def _expected_constant(name, kwargs, datasets, image, bkg) -> float:
    """log_density − log_posterior, computed independently of the library."""
    c = -_log_d_factorial(datasets)
    mask = np.asarray(kwargs.get("mask", np.ones((12, 2), bool)))
    lam = np.asarray(image)[mask]
    n_masked = int(np.sum(~mask))
    if kwargs.get("image_prior") == "gamma" and math.isfinite(kwargs["gamma"][1]):
        k, theta = kwargs["gamma"]
        c += lam.size * (-gammaln(k) - k * np.log(theta))
        c += -(k - 1) * n_masked * np.log(EPS) + (k - 1) * np.sum(np.log(lam) - np.log(lam + EPS))
    if kwargs.get("image_prior") == "lognormal":
        scale = np.broadcast_to(kwargs["lognormal"][1], mask.shape)[mask]
        c += -np.sum(np.log(scale) + 0.5 * np.log(2 * np.pi))
    if kwargs.get("bkg_free") and kwargs.get("bkg_prior", "uniform") == "uniform":
        lo, hi = np.asarray(kwargs["bkg_range"]).T
        c += -np.sum(np.log(hi - lo))
    return c


@jax.jit
def _jit_log_density(datasets, config, params):
    """NumPyro's log_density of the model, compiled once (faster than op-by-op here)."""
    lp, trace = log_density(sky_model, (datasets, config), {}, params)
    return lp, {name: site["value"] for name, site in trace.items() if site["type"] == "sample"}


@pytest.mark.parametrize("name", list(CASES))
def test_log_density_equals_log_posterior_plus_constants(name):
    kwargs, bkg = CASES[name]
    dss = _two_datasets()
    cfg = make_config((12, 2), n_bkg=1, **kwargs)
    image = _image((12, 2))
    params = {"image": image}
    if bkg is not None:
        params["bkg_norm"] = jnp.array([bkg])
    lp, sites = _jit_log_density(dss, cfg, params)
    assert {"obs_0", "obs_1", "image"} <= set(sites)
    assert ("bkg_norm" in sites) == (bkg is not None)
    post = log_posterior(dss, image, params.get("bkg_norm"), cfg)
    const = _expected_constant(name, kwargs, dss, image, bkg)
    assert float(lp) == pytest.approx(float(post) + const, rel=1e-12)


def test_masked_pixels_are_inert():
    dss = _two_datasets()
    cfg = make_config((12, 2), n_bkg=1, mask=MASK, image_prior="gamma", gamma=(2.0, 1.0),
                      priors={"TSV": TSVPrior.build(1, 1.0)})

    @jax.jit
    def lp_and_grad(img):
        return jax.value_and_grad(lambda x: log_density(sky_model, (dss, cfg), {},
                                                        {"image": x})[0])(img), \
            log_posterior(dss, img, None, cfg)

    image = _image((12, 2))
    (lp, grad), post = lp_and_grad(image)
    assert np.all(np.asarray(grad)[~MASK] == 0) and np.all(np.asarray(grad)[MASK] != 0)
    (lp2, _), post2 = lp_and_grad(jnp.where(MASK, image, 123.0))  # masked values do not matter
    assert float(lp2) == float(lp) and float(post2) == float(post)


def test_autodelta_objective_has_no_jacobian():
    """AutoDelta's loss is −log p(data, z) at the constrained point: the same maximiser."""
    dss = _two_datasets()
    cfg = make_config((12, 2), n_bkg=1, bkg_free=True, bkg_range=[[0.1, 5.0]],
                      priors={"TSV": TSVPrior.build(1, 1.0)})
    image, bkg = _image((12, 2)), jnp.array([0.9])
    guide = AutoDelta(sky_model)

    @jax.jit
    def both(image, bkg):
        params = {"image_auto_loc": image, "bkg_norm_auto_loc": bkg}
        loss = Trace_ELBO().loss(jax.random.PRNGKey(0), params, sky_model, guide, dss, cfg)
        return loss, log_density(sky_model, (dss, cfg), {}, {"image": image, "bkg_norm": bkg})[0]

    loss, lp = both(image, bkg)
    assert float(loss) == pytest.approx(-float(lp), rel=1e-12)


def test_make_config_errors_name_the_culprit():
    with pytest.raises(ParameterError, match="image_prior: got 'laplace'"):
        make_config((12, 1), image_prior="laplace")
    with pytest.raises(ParameterError, match="k = 0.0"):
        make_config((12, 1), image_prior="gamma", gamma=(0.0, 1.0))
    with pytest.raises(ParameterError, match="reserved"):
        make_config((12, 1), priors={"image": TSVPrior.build(1, 1.0)})
    with pytest.raises(ParameterError, match="all finite or all inf"):
        make_config((12, 1), n_bkg=2, bkg_free=True, bkg_range=[[0, 1], [0, math.inf]])
    with pytest.raises(DataError, match=r"n_bkg=1"):
        log_posterior(_two_datasets(), _image((12, 2)), None, make_config((12, 2)))


# ------------------------------------------------------------------------- gradient MAP
def _kkt(dss, cfg, image):
    """Max |∂logP/∂λ| / S on pixels > 1e-6 max, and max ∂logP/∂λ / S on the others."""
    grad = np.asarray(jax.jit(jax.grad(lambda x: log_posterior(dss, x, None, cfg)))(image))
    s = np.asarray(fm.summed_exposure(dss))
    lam = np.asarray(image)
    big = lam > 1e-6 * lam.max()
    return np.max(np.abs(grad / s)[big]), (np.max((grad / s)[~big]) if (~big).any() else -1.0)


def test_map_flat_is_the_em_fixed_point_and_satisfies_kkt():
    dss = _simulated()
    # Flat: gamma k = 1, θ = ∞.  The TSV factor with coefficient 0 adds nothing; it gives the
    # config the structure of the TSV test below, so both share one compiled L-BFGS loop.
    cfg = make_config((12, 2), n_bkg=1, image_prior="gamma", gamma=(1.0, math.inf),
                      priors={"TSV": TSVPrior.build(1, 0.0)})
    res = gmap.map_run(jnp.ones((12, 2)), None, dss, cfg, max_iterations=3000, tolerance=1e-14)
    assert res.converged
    assert np.all(np.diff(res.log_posterior) >= 0)
    interior, boundary = _kkt(dss, cfg, res.image)
    assert interior < 1e-6 and boundary <= 0
    assert np.sum(np.asarray(res.image) < 1e-6 * float(res.image.max())) >= 1  # KKT boundary

    opts = em.EMOptions(simple=True)
    params = em.make_params(dss, opts)
    state = em.init(jnp.ones((12, 2)), jnp.ones(1), dss, params)
    step = em.build_step(opts)
    for _ in range(5000):
        state, info = step(state, dss, params)
    ll_em = float(info.loglik.sum())
    ll_map = float(fm.total_log_likelihood(dss, res.image, jnp.ones(1)))
    assert ll_map == pytest.approx(ll_em, rel=1e-6)
    a, b = np.asarray(state.model), np.asarray(res.image)
    big = a > 0.01 * a.max()
    np.testing.assert_allclose(b[big], a[big], rtol=1e-4)


def test_map_with_tsv_satisfies_kkt():
    dss = _simulated()
    cfg = make_config((12, 2), n_bkg=1, image_prior="gamma", gamma=(1.0, math.inf),
                      priors={"TSV": TSVPrior.build(1, 0.05)})
    res = gmap.map_run(jnp.ones((12, 2)), None, dss, cfg, max_iterations=2000, tolerance=1e-14)
    assert res.converged and np.all(np.diff(res.log_posterior) >= 0)
    interior, boundary = _kkt(dss, cfg, res.image)
    assert interior < 1e-6 and boundary <= 0


def test_autodelta_follows_adam_on_the_same_objective():
    """AutoDelta SVI (Adam) retraces plain Adam on log_posterior: no Jacobian, same point."""
    dss = _simulated()
    # The priors of MAPGradient (gamma, flat here): the class test below reuses the kernels.
    cfg = make_config((12, 2), n_bkg=1, image_prior="gamma", gamma=(1.0, math.inf),
                      bkg_free=True, bkg_prior="gamma", bkg_range=[[0.0, 100.0]])
    hist = {}
    for name in ("adam", "autodelta"):
        opts = gmap.MAPOptions(optimizer=name, learning_rate=0.05)
        res = gmap.map_run(jnp.ones((12, 2)), jnp.array([0.5]), dss, cfg, opts,
                           max_iterations=40, tolerance=0.0)
        hist[name] = res.log_posterior
    assert hist["adam"].shape == (41,) and hist["adam"][-1] > hist["adam"][0] + 10.0
    np.testing.assert_allclose(hist["autodelta"], hist["adam"], rtol=1e-9)


def test_map_step_compiles_once_per_option_set():
    """Two runs on new data and prior strengths: at most one trace (none if cached)."""
    opts = gmap.MAPOptions()
    key = (opts, 100)  # the default chunk: the TSV test above may have compiled it already
    before = gmap.TRACE_COUNT[key]
    for scale in (1.0, 2.0):
        dss = _simulated(scale)
        cfg = make_config((12, 2), n_bkg=1, image_prior="gamma", gamma=(1.0 + scale, math.inf),
                          priors={"TSV": TSVPrior.build(1, 0.01 * scale)})
        res = gmap.map_run(jnp.ones((12, 2)), None, dss, cfg, opts, max_iterations=7)
        assert res.iterations == 7 and res.log_posterior.shape == (8,)
    assert gmap.TRACE_COUNT[key] - before <= 1 and gmap.TRACE_COUNT[key] >= 1


# ------------------------------------------------------------------------ MAPGradient class
def _data_axes():
    return [Axis([100, 300, 1000], label="Em", unit="keV"),
            Axis([0, 60, 120, 180], label="Phi", unit="deg"),
            HealpixAxis(nside=1, label="PsiChi", coordsys="galactic")]


def _dataif(seed=0):
    rng = np.random.default_rng(seed)
    axes = [HealpixAxis(nside=1, label="NuLambda", coordsys="galactic"),
            Axis([100, 500, 1000], label="Ei", unit="keV", scale="log"), *_data_axes()]
    rsp = Histogram(axes, contents=rng.random((12, 2, 2, 3, 12)), unit="cm2 s")
    ev = Histogram(_data_axes(), contents=rng.poisson(6.0, (2, 3, 12)).astype(float))
    bkg = Histogram(_data_axes(), contents=rng.random((2, 3, 12)) + 0.5)
    return DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp)


def _model(value=0.1):
    m = AllSkyImageModel(1, [100, 500, 1000] * u.keV)
    m[:] = value * m.unit
    return m


def test_map_gradient_class_end_to_end_and_against_map_rl(tmp_path):
    data = _dataif()
    model = _model()
    mask = Histogram(model.axes, contents=np.ones((12, 2), bool))
    mask[4, :] = False
    common = {"background_normalization_optimization": {"activate": True,
                                                        "range": {"bkg": [0.01, 10.0]}},
              "prior": {"TSV": {"coefficient": 0.01},
                        "gamma": {"model": {"theta": {"value": 50.0, "unit": "cm-2 s-1 sr-1"},
                                            "k": {"value": 1.2}},
                                  "background": {"theta": {"value": 20.0}, "k": {"value": 2.0}}}}}
    par = {**common, "iteration_max": 100, "optimizer": {"name": "lbfgs", "tolerance": 1e-13},
           "save_results": {"activate": True, "directory": str(tmp_path / "out")}}
    algo = MAPGradient(model, [data], mask, par)
    assert algo.algorithm_name == "MAP_gradient"
    algo.initialization()
    while not algo.iteration():
        pass
    algo.finalization()
    res = algo.results
    assert isinstance(res, list) and 1 < len(res) < 100
    keys = {"iteration", "model", "background_normalization", "log-likelihood", "log-prior",
            "log-posterior"}
    assert all(set(r) == keys for r in res)
    assert [r["iteration"] for r in res] == list(range(1, len(res) + 1))
    lp = np.array([r["log-posterior"] for r in res])
    assert np.all(np.diff(lp) >= 0)
    last = res[-1]
    assert isinstance(last["model"], AllSkyImageModel) and last["model"].unit == model.unit
    img = np.asarray(last["model"])
    assert np.all(img >= 0) and np.all(img[4] == 0)
    assert set(last["log-prior"]) == {"gamma_model", "gamma_bkg", "TSV"}
    assert len(last["log-likelihood"]) == 1 and 0.01 <= last["background_normalization"]["bkg"]
    total = sum(last["log-likelihood"]) + sum(last["log-prior"].values())
    assert last["log-posterior"] == pytest.approx(total, rel=1e-12)
    assert (tmp_path / "out" / "model.hdf5").exists() and (tmp_path / "out" / "results.fits"
                                                           ).exists()
    assert np.asarray(model)[0, 0] == 0.1  # the initial model is untouched
    assert algo.converged and len(res) < 100

    # MAP_RL (SQUAREM-accelerated MAP-EM) on the same parameters: the same log-posterior
    # function (equal at any point) and nearly the same maximum.  MAP-RL's fixed point is
    # off the exact MAP at second order in x = ∇log P_TSV / (S + 1/θ) (its filter is
    # exp(x) where stationarity needs 1/(1 − x)); here |x| < 5e-3 moves the image by
    # ~1e-5 and the log-posterior by ~5e-9 relative, and the gradient MAP is the higher one.
    rl = MAP_RichardsonLucy(_model(), [data], mask, {
        **common, "iteration_max": 300, "stopping_criteria": {"threshold": 1e-12},
        "acceleration": {"activate": True, "algorithm": "SQUAREM", "alpha_max": 10.0}})
    rl.initialization()
    while not rl.iteration():
        pass
    ref = rl.results[-1]
    assert last["log-posterior"] == pytest.approx(ref["log-posterior"], rel=3e-8)
    assert last["log-posterior"] >= ref["log-posterior"]
    a, b = np.asarray(ref["model"]), img
    big = a > 0.01 * a.max()
    np.testing.assert_allclose(b[big], a[big], rtol=1e-3)
    assert last["background_normalization"]["bkg"] == pytest.approx(
        ref["background_normalization"]["bkg"], rel=1e-3)


def test_map_gradient_class_autodelta_runs():
    data = _dataif(1)
    par = {"iteration_max": 3, "optimizer": {"name": "autodelta", "steps_per_iteration": 5,
                                             "learning_rate": 0.02},
           "background_normalization_optimization": {"activate": True}}
    algo = MAPGradient(_model(), [data], None, par)
    algo.initialization()
    while not algo.iteration():
        pass
    assert len(algo.results) == 3
    assert algo.results[-1]["log-posterior"] > algo.results[0]["log-posterior"] - 1.0
    assert np.all(np.asarray(algo.results[-1]["model"]) >= 0)


def test_map_gradient_parameters_and_model_file():
    p = validate_algorithm_parameters("MAP_gradient", None)
    assert p["optimizer"] == {"name": "lbfgs", "learning_rate": 0.05, "tolerance": 1e-10,
                              "steps_per_iteration": 1, "memory_size": 10}
    assert p["prior"] == {} and "acceleration" not in p
    with pytest.raises(ParameterError, match="optimizer:name: got 'bfgs'"):
        validate_algorithm_parameters("MAP_gradient", {"optimizer": {"name": "bfgs"}})
    with pytest.raises(ParameterError, match="optimizer:learning_rate: got 0"):
        validate_algorithm_parameters("MAP_gradient", {"optimizer": {"learning_rate": 0}})
    run = validate_run_parameters(Parameters.open(MODELS / "map_gradient.yml"))
    assert run["deconvolution:algorithm"] == "MAP_gradient"
    assert run["deconvolution:parameter:optimizer:name"] == "lbfgs"
