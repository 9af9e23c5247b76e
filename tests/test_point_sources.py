"""Point sources beside the image: interpolated templates, EM and NumPyro fits, catalogues.

Tiny problems (NSIDE <= 4); every test runs in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import healpy as hp
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from astropy.coordinates import SkyCoord

import probdeconv  # noqa: F401  (float64)
from probdeconv import ImageDeconvolution
from probdeconv import forward as fm
from probdeconv.algorithms import em
from probdeconv.cli.main import main
from probdeconv.errors import FileFormatError, ParameterError
from probdeconv.forward.point_sources import add_components, point_source_templates
from probdeconv.shell.point_sources import (
    PointSourceSpec,
    attitude_weights,
    ccm_weights,
    galactic_weights,
    parse_point_sources,
    read_catalogue,
)
from probdeconv.shell.problem import problem_from_parameters
from probdeconv.simulate import load_simulation, simulate
from probdeconv.simulate.point_sources import point_source_truth, scatt_attitudes

NSIDE = 2
ROOT = Path(__file__).resolve().parents[1]


def _galactic_dataset(seed=0, n_e=2):
    rng = np.random.default_rng(seed)
    npix = hp.nside2npix(NSIDE)
    response = rng.random((npix, n_e, 2, 3, 12))
    counts = rng.poisson(3.0, (2, 3, 12)).astype(float)
    return fm.make_dataset(counts, response, [np.ones((2, 3, 12))])


@pytest.fixture(scope="module")
def sim():
    """A tiny spacecraft-frame simulation with an exact point source beside the sky."""
    return simulate(sky="points", nside=NSIDE, seed=3, phi_bins=6, scatt_nside=1,
                    point_sources=[{"name": "bright", "l": 40.0, "b": 20.0, "flux": 1e-3}])


def test_pixel_centre_source_is_a_one_pixel_image():
    """Galactic frame: weights (1, 0, 0, 0) at a pixel centre, and the template of flux f
    equals the expected counts of a one-pixel image of intensity f / ΔΩ (to rounding)."""
    ds = _galactic_dataset()
    j = 17
    lon, lat = hp.pix2ang(NSIDE, j, lonlat=True)
    src = PointSourceSpec("c", float(lon), float(lat))
    w = galactic_weights([src], NSIDE, nest=False)
    assert w[0, 0, j] == pytest.approx(1.0, abs=1e-12)
    assert np.sum(np.abs(w)) == pytest.approx(1.0, abs=1e-12)
    flux = np.array([2e-3, 5e-4])  # per Ei bin
    t = np.asarray(point_source_templates(ds, w))[0]  # [Ei, t, i]
    image = np.zeros(ds.model_shape)
    image[j] = flux / ds.pixel_area
    one_pixel = np.asarray(fm.sky_counts(ds, jnp.asarray(image)))
    np.testing.assert_allclose(np.einsum("e,eti->ti", flux, t), one_pixel, rtol=1e-12)


def test_interpolated_template_is_the_weighted_sum_of_pixel_templates():
    ds = _galactic_dataset(seed=1)
    src = PointSourceSpec("x", 33.3, -12.7)
    pix, wt = hp.get_interp_weights(NSIDE, 33.3, -12.7, lonlat=True)
    assert np.count_nonzero(wt > 1e-6) >= 2  # a direction between pixel centres
    t = np.asarray(point_source_templates(ds, galactic_weights([src], NSIDE, False)))[0]
    centres = [PointSourceSpec(f"p{k}", *map(float, hp.pix2ang(NSIDE, int(p), lonlat=True)))
               for k, p in enumerate(pix)]
    tc = np.asarray(point_source_templates(ds, galactic_weights(centres, NSIDE, False)))
    np.testing.assert_allclose(t, np.einsum("k,keti->eti", wt, tc), rtol=1e-12)


def test_spacecraft_source_at_a_pixel_centre_follows_the_ccm(sim):
    """The source direction rotated into spacecraft coordinates per ScAtt bin and
    interpolated over the local pixels gives the CCM row of the model pixel it sits on (the
    CCM is built the same way for pixel centres); so does the CCM-row interpolation."""
    j = 29
    lon, lat = hp.pix2ang(NSIDE, j, lonlat=True)
    src = [PointSourceSpec("c", float(lon), float(lat))]
    coords, values = sim.ccm.coo()
    n_t, npix = sim.ccm.axes.shape[0], hp.nside2npix(NSIDE)
    row = np.zeros((n_t, npix))
    on = coords[1] == j
    np.add.at(row, (coords[0][on], coords[2][on]), values[on])
    exact = attitude_weights(src, *scatt_attitudes(sim.scatt), n_t, NSIDE)[0]
    np.testing.assert_allclose(exact, row, rtol=1e-9, atol=1e-9 * row.max())
    from_ccm = ccm_weights(src, coords, values, n_t, NSIDE, False, npix)[0]
    np.testing.assert_allclose(from_ccm, row, rtol=1e-9, atol=1e-9 * row.max())


def test_simulated_source_is_in_the_data_and_gets_its_key(sim):
    data = sim.dataif().with_point_sources([{"name": "bright", "l": 40.0, "b": 20.0}])
    assert data.keys_bkg_models() == ["bkg", "bright@E0"]
    assert point_source_truth(sim.config) == {"bright@E0": 1e-3}
    low, high = data.default_norm_range("bright@E0")
    assert low == 0.0 and high > 1e-3 and data.default_norm("bright@E0") > 0
    assert data.point_sources[0].name == "bright"


def _ps_problem(seed=0):
    """Galactic dataset whose counts are exactly the expectation of two sources (2 Ei
    bins), a faint image and a background: noiseless."""
    ds = _galactic_dataset(seed)
    srcs = [PointSourceSpec("a", 20.0, 10.0), PointSourceSpec("b", 250.0, -40.0)]
    t = point_source_templates(ds, galactic_weights(srcs, NSIDE, False))  # [2, 2, 1, i]
    # (a,E0), (a,E1), (b,E0), (b,E1): most counts come from the sources
    flux = np.array([3.0, 1.0, 2.0, 4.0])
    ds = add_components(ds, t.reshape(4, *ds.counts.shape), first_index=1)
    image = np.zeros(ds.model_shape)
    norms = jnp.asarray([0.5, *flux])
    counts = np.asarray(fm.expected_counts(ds, jnp.asarray(image), norms, almost_zero=0.0))
    return fm.with_counts(ds, counts.reshape(ds.counts.shape)), flux


def test_em_flux_update_never_lowers_the_likelihood():
    ds, _ = _ps_problem()
    dss = (ds,)
    opts = em.EMOptions(simple=True, optimize_bkg=True)
    params = em.make_params(dss, opts, bkg_range=np.array([[0, 100]] * 5))
    state = em.init(jnp.full(ds.model_shape, 1e-3), jnp.ones(5), dss, params)
    step = em.build_step(opts)
    prev = float(em.state_loglik(state.model, dss, state.bkg_norm))
    for _ in range(30):
        state, info = step(state, dss, params)
        now = float(info.loglik.sum())
        assert now >= prev - 1e-10 * abs(prev)
        prev = now
    assert bool(jnp.all(state.bkg_norm >= 0))


def test_fluxes_recovered_on_a_noiseless_case():
    """Image held at 0 (all pixels masked): EM on the background and the four source fluxes
    converges to the true fluxes (noiseless counts), within 1e-4 relative."""
    ds, flux = _ps_problem(seed=2)
    dss = (ds,)
    opts = em.EMOptions(simple=True, optimize_bkg=True)
    params = em.make_params(dss, opts, mask=np.zeros(ds.model_shape, bool),
                            bkg_range=np.array([[0, 100]] * 5))
    state = em.init(jnp.zeros(ds.model_shape), jnp.ones(5), dss, params)
    step = em.build_step(opts)
    for _ in range(3000):
        state, _ = step(state, dss, params)
    np.testing.assert_allclose(np.asarray(state.bkg_norm[1:]), flux, rtol=1e-4)
    assert float(state.bkg_norm[0]) == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("bad", [(10.0, 95.0), (np.nan, 0.0), ("east", 3.0),
                                 {"name": "s", "l": 1.0, "b": -91.0}])
def test_invalid_position_is_a_clear_error(bad):
    with pytest.raises(ParameterError, match="galactic|pair of numbers"):
        parse_point_sources([bad])


def test_invalid_position_refused_by_the_data_interface(sim):
    with pytest.raises(ParameterError, match="not a valid galactic coordinate"):
        sim.dataif().with_point_sources([(12.0, 120.0)])


def test_catalogue_forms_agree(tmp_path):
    (tmp_path / "c.yml").write_text("point_sources:\n  - {name: a, l: 10.0, b: 5.0, "
                                    "flux: [1.0e-3]}\n  - {name: b, l: 200.0, b: -3.0}\n")
    (tmp_path / "c.csv").write_text("name,l,b,flux_0\na,10.0,5.0,1e-3\nb,200.0,-3.0,2e-3\n")
    (tmp_path / "c.ecsv").write_text(
        "# %ECSV 1.0\n# ---\n# datatype:\n# - {name: name, datatype: string}\n"
        "# - {name: l, datatype: float64}\n# - {name: b, datatype: float64}\n"
        "name l b\na 10.0 5.0\nb 200.0 -3.0\n")
    forms = [read_catalogue(tmp_path / f"c.{ext}") for ext in ("yml", "csv", "ecsv")]
    for srcs in forms:
        assert [(s.name, s.l, s.b) for s in srcs] == [("a", 10.0, 5.0), ("b", 200.0, -3.0)]
    assert forms[0][0].flux == (1e-3,) and forms[1][1].flux == (2e-3,)
    sky = parse_point_sources([SkyCoord(l=10.0, b=5.0, unit="deg", frame="galactic")])
    assert sky[0].l == pytest.approx(10.0) and sky[0].b == pytest.approx(5.0)
    with pytest.raises(FileFormatError, match="no such point-source catalogue"):
        read_catalogue(tmp_path / "missing.yml")


def test_numpyro_problem_has_flux_sites_and_refuses_fixed_backgrounds(sim):
    data = sim.dataif().with_point_sources([{"name": "bright", "l": 40.0, "b": 20.0}])
    p = problem_from_parameters([data], {"background": {"free": True,
                                                        "range": {"bkg": [0.1, 10.0]}}})
    assert p.bkg_names == ("bkg", "bright@E0") and p.config.bkg_free
    rng = np.asarray(p.config.bkg_range)
    assert rng[0].tolist() == [0.1, 10.0] and rng[1, 0] == 0.0 and rng[1, 1] > 1e-3
    with pytest.raises(ParameterError, match="point sources"):
        problem_from_parameters([data], {"background": {"free": False}})


def test_cli_simulate_point_source(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["--quiet", "simulate", "--nside", "2", "--phi-bins", "6", "--scatt-nside", "1",
                 "--point-source", "30,10,2e-4,extra", "--out", str(out)]) == 0
    cfg = load_simulation(out).config
    assert cfg.point_sources == ({"l": 30.0, "b": 10.0, "flux": 2e-4, "name": "extra"},)
    assert main(["--quiet", "simulate", "--nside", "2", "--point-source", "30,north,1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "expected l,b,flux[,name]" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["rl", "map_rl_tsv", "map_gradient"])
def test_yaml_point_source_catalogue_beside_the_image(model, sim, tmp_path):
    """model_definition:point_sources names a CSV catalogue relative to the parameter file;
    RL, MAP-RL and gradient MAP fit the source's flux with the background (a few
    iterations; the statistic they maximise never falls)."""
    (tmp_path / "cat.csv").write_text("name,l,b\nbright,40.0,20.0\n")
    params = yaml.safe_load((ROOT / "models" / f"{model}.yml").read_text())
    params["model_definition"]["property"]["nside"] = NSIDE
    params["model_definition"]["point_sources"] = "cat.csv"
    params["deconvolution"]["parameter"]["iteration_max"] = 5
    (tmp_path / "run.yml").write_text(yaml.safe_dump(params))
    deconv = ImageDeconvolution()
    deconv.set_dataset([sim.dataif()])
    deconv.read_parameterfile(tmp_path / "run.yml")
    deconv.initialize()
    res = deconv.run_deconvolution(progress=False)
    flux = res[-1]["background_normalization"]["bright@E0"]
    assert 0 < flux < deconv.deconvolution.dict_bkg_norm_range["bright@E0"][1]
    stat = [float(r["log-posterior"]) if model != "rl" else float(np.sum(r["log-likelihood"]))
            for r in res]
    assert np.all(np.diff(stat) >= -1e-9 * np.abs(stat[1:]))
    params["deconvolution"]["parameter"]["background_normalization_optimization"][
        "activate"] = False  # the background fixed: the fluxes cannot be fitted with it
    (tmp_path / "fixed.yml").write_text(yaml.safe_dump(params))
    deconv.read_parameterfile(tmp_path / "fixed.yml")
    with pytest.raises(ParameterError, match="point sources.*activate"):
        deconv.initialize()
