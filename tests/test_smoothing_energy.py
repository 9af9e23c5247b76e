"""Energy-dependent smoothing of Richardson-Lucy's update: one FWHM per energy bin."""

from __future__ import annotations

import astropy.units as u
import healpy as hp
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from probdeconv import AllSkyImageModel, RichardsonLucy
from probdeconv.algorithms import em
from probdeconv.config import validate_algorithm_parameters
from probdeconv.errors import ParameterError
from probdeconv.shell.smoothing import fwhm_per_energy
from probdeconv.simulate import simulate


def test_smooth_per_energy_is_each_bin_with_its_own_width():
    delta = np.random.default_rng(0).normal(size=(48, 3))
    widths = np.deg2rad([30.0, 10.0, 0.0])
    out = np.asarray(em.smooth(jnp.asarray(delta), jnp.asarray(widths)))
    for e, w in enumerate(widths):
        np.testing.assert_allclose(out[:, e], hp.smoothing(delta[:, e], fwhm=float(w)),
                                   rtol=1e-12, atol=1e-15)


@pytest.fixture(scope="module")
def two_energies():
    sim = simulate(sky="bulge511", nside=2, seed=0, phi_bins=4, n_samples=600, scatt_nside=1,
                   energy_edges=(400.0, 509.0, 513.0))
    model = AllSkyImageModel(2, sim.config.energy_edges * u.keV)
    model[:] = 1e-3 * model.unit
    return sim.dataif(), model


def _processed(data, model, fwhm):
    par = {"iteration_max": 2, "smoothing": {"activate": True, "FWHM": fwhm}}
    algo = RichardsonLucy(model, [data], None, par)
    algo.initialization()
    algo.iteration()  # the first update: from the same image in every run (energies mix later)
    return np.asarray(algo.results[-1]["processed_delta_model"]), algo


def test_rl_with_one_width_per_energy_equals_each_width_alone(two_energies):
    data, model = two_energies
    both, algo = _processed(data, model, {"value": [20.0, 5.0], "unit": "deg"})
    np.testing.assert_allclose(np.asarray(algo._params.smoothing_fwhm), np.deg2rad([20, 5]),
                               rtol=1e-15)
    wide, _ = _processed(data, model, {"value": 20.0, "unit": "deg"})
    narrow, _ = _processed(data, model, {"value": 5.0, "unit": "deg"})
    np.testing.assert_array_equal(both[:, 0], wide[:, 0])
    np.testing.assert_array_equal(both[:, 1], narrow[:, 1])
    # a list of Quantities (Python) and a table (YAML) give the same widths
    quantities, _ = _processed(data, model, [20.0 * u.deg, 300.0 * u.arcmin])
    np.testing.assert_array_equal(quantities, both)
    centres = np.asarray(algo.initial_model.axes[1].centers.to_value(u.keV))
    line = lambda e: 20.0 + (5.0 - 20.0) * (e - centres[0]) / (centres[1] - centres[0])  # noqa: E731
    table = {"energy": {"value": [450.0, 515.0], "unit": "keV"},
             "value": [line(450.0), line(515.0)], "unit": "deg"}
    tabled = fwhm_per_energy(table, algo.initial_model.axes[1])
    np.testing.assert_allclose(tabled.to_value(u.deg), [20.0, 5.0], rtol=1e-12)


def test_fwhm_of_the_wrong_length_or_table_is_named(two_energies):
    data, model = two_energies
    with pytest.raises(ParameterError, match=r"smoothing:FWHM: 3 width\(s\) given for 2 energy"):
        RichardsonLucy(model, [data], None, {"smoothing": {
            "activate": True, "FWHM": {"value": [1.0, 2.0, 3.0], "unit": "deg"}}})
    with pytest.raises(ParameterError, match=r"FWHM:energy: the table covers 500-600 keV"):
        RichardsonLucy(model, [data], None, {"smoothing": {"activate": True, "FWHM": {
            "energy": {"value": [500.0, 600.0], "unit": "keV"}, "value": [2.0, 1.0],
            "unit": "deg"}}})
    with pytest.raises(ParameterError, match=r"smoothing:FWHM:value\[1\]: got -1"):
        validate_algorithm_parameters("RL", {"smoothing": {"activate": True, "FWHM": {
            "value": [1.0, -1.0], "unit": "deg"}}})
    with pytest.raises(ParameterError, match=r"smoothing FWHM: got 3 width"):
        em.make_params([data.forward_dataset], em.EMOptions(smoothing=True),
                       smoothing_fwhm_rad=[0.1, 0.2, 0.3])


def test_fwhm_table_from_yaml_validates():
    par = yaml.safe_load("""
    smoothing:
      activate: true
      FWHM:
        energy: {value: [200, 500, 2000], unit: keV}
        value: [4.0, 2.5, 1.2]
        unit: deg
    """)
    out = validate_algorithm_parameters("RL", par)
    assert out["smoothing"]["FWHM"]["energy"]["value"] == [200.0, 500.0, 2000.0]
    assert out["smoothing"]["FWHM"]["value"] == [4.0, 2.5, 1.2]

