"""Properties of the simulated instrument, survey and data set (probdeconv.simulate).

Everything runs at NSIDE <= 4.  Statistical checks use 5σ bounds (two-sided false-alarm
rate 5.7e-7 per check); the counts are drawn with fixed seeds, so the tests are
deterministic.
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import h5py
import healpy as hp
import numpy as np
import pytest
from scipy.integrate import quad

from probdeconv import (
    AllSkyImageModel,
    CoordsysConversionMatrix,
    DataIF_COSI_DC2,
    FileFormatError,
    FullDetectorResponse,
    Histogram,
    ParameterError,
    RichardsonLucy,
)
from probdeconv.simulate import (
    FILE_NAMES,
    SimulationConfig,
    load_simulation,
    phi_bin_fractions,
    simulate,
)

NSIDE = 4
R_E = 2.8179403262e-13  # cm
M_E = 510.99895  # keV


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sim")


@pytest.fixture(scope="module")
def sim(sim_dir):
    return simulate(sky="bulge511", nside=NSIDE, seed=0, out=sim_dir)


def _pixel_vectors(nside: int) -> np.ndarray:
    return np.array(hp.pix2vec(nside, np.arange(hp.nside2npix(nside))))  # [3, npix]


# ----------------------------------------------------------------------- response


def test_response_ring_geometry_and_sparsity(sim):
    """For each source direction ν and scatter angle φ the response is a ring at φ from ν."""
    cfg = sim.config
    rsp = np.asarray(sim.response)[:, 0, 0]  # [ν, Phi, PsiChi]
    vec = _pixel_vectors(NSIDE)
    edges = np.linspace(0.0, cfg.phi_max, cfg.phi_bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    width = np.hypot(cfg.arm_sigma, np.diff(edges)[0] / np.sqrt(12.0))
    pix_radius = np.rad2deg(hp.max_pixrad(NSIDE))
    seen = np.flatnonzero(rsp.sum(axis=(1, 2)) > 0)
    assert 0.4 < seen.size / rsp.shape[0] < 0.8  # field of view: zenith angle < horizon
    n_checked = 0
    for v in seen:
        dist = np.rad2deg(np.arccos(np.clip(vec[:, v] @ vec, -1.0, 1.0)))  # [PsiChi]
        for f, phi in enumerate(centres):
            row = rsp[v, f]
            # exactly zero beyond the ring cut (plus the pixel radius: pixel-integrated)
            assert not np.any(row[np.abs(dist - phi) > cfg.ring_cut * width + pix_radius])
            if 15.0 < phi < 165.0:  # a ring, not a blob around ν or its antipode
                assert abs(dist[np.argmax(row)] - phi) < 0.5 * np.rad2deg(
                    hp.nside2resol(NSIDE))
                assert abs(np.sum(row * dist) / row.sum() - phi) < 2.5
                n_checked += 1
    assert n_checked > 1000
    # sparsity: 86.6 % of all bins (78.6 % within the field of view) are exactly zero
    assert np.mean(rsp == 0) > 0.85
    assert np.mean(rsp[seen] == 0) > 0.75


def _kn_bin(lo: float, hi: float, energy: float) -> float:
    """∫ dσ/dΩ 2π sin φ dφ over [lo, hi] deg (written out again, independently)."""

    def density(phi: float) -> float:
        p = 1.0 / (1.0 + energy / M_E * (1.0 - np.cos(phi)))
        return 0.5 * R_E**2 * p**2 * (p + 1.0 / p - np.sin(phi) ** 2) * 2 * np.pi * np.sin(phi)

    return quad(density, np.deg2rad(lo), np.deg2rad(hi), epsabs=0, epsrel=1e-12)[0]


@pytest.mark.parametrize("energy", [200.0, 511.0, 1500.0])
def test_klein_nishina_bin_fractions(energy):
    edges = np.linspace(0.0, 180.0, 31)
    expected = np.array([_kn_bin(a, b, energy) for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(phi_bin_fractions(edges, energy), expected / expected.sum(),
                               rtol=1e-9)


def test_response_phi_marginal_is_klein_nishina(sim):
    """Σ over Em and PsiChi, divided by the area × energy dispersion, is the KN shape."""
    rsp = np.asarray(sim.response)  # [ν, Ei, Em, Phi, PsiChi]
    edges = sim.response.axes["Phi"].edges.to_value(u.deg)
    energy = float(sim.response.axes["Ei"].centers.to_value(u.keV)[0])
    kn = np.array([_kn_bin(a, b, energy) for a, b in zip(edges[:-1], edges[1:])])
    kn /= kn.sum()
    marginal = rsp.sum(axis=(1, 2, 4))  # [ν, Phi]
    seen = marginal.sum(axis=1) > 0
    shape = marginal[seen] / marginal[seen].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shape, np.broadcast_to(kn, shape.shape), rtol=1e-6)
    # forward peaked at 511 keV, and the Phi axis covers all scatters
    assert np.argmax(kn) < len(kn) // 2


# -------------------------------------------------------------------- survey / CCM


def test_ccm_rows_hold_four_weights_summing_to_the_dwell_time(sim):
    cfg, ccm = sim.config, sim.ccm
    assert ccm.axes.labels.tolist() == ["ScAtt", "lb", "NuLambda"] and ccm.unit == u.s
    assert 20 <= sim.scatt.n_bins <= 60
    coords, values = ccm.coo()
    npix = hp.nside2npix(NSIDE)
    row = coords[0] * npix + coords[1]
    n_per_row = np.bincount(row, minlength=sim.scatt.n_bins * npix)
    assert np.all(n_per_row == 4) and np.all(values > 0)
    sums = np.bincount(row, weights=values, minlength=n_per_row.size).reshape(-1, npix)
    np.testing.assert_allclose(sums, np.broadcast_to(sim.scatt.dwell[:, None], sums.shape),
                               rtol=1e-12)
    assert sim.scatt.dwell.sum() == pytest.approx(cfg.duration, rel=1e-12)


def test_ccm_maps_a_direction_near_its_local_position(sim):
    """The biggest weight of (t, lb) sits near lb's direction in the bin's frame."""
    coords, values = sim.ccm.coo()
    vec = _pixel_vectors(NSIDE)
    t, lb, nu = coords
    b = sim.scatt
    y = np.cross(b.z, b.x)
    local = np.stack([np.sum(b.x[t] * vec[:, lb].T, 1), np.sum(y[t] * vec[:, lb].T, 1),
                      np.sum(b.z[t] * vec[:, lb].T, 1)])  # [3, nnz]
    cos = np.sum(local * vec[:, nu], axis=0)
    assert np.rad2deg(np.arccos(np.clip(cos, -1, 1))).max() < 2 * np.rad2deg(
        hp.max_pixrad(NSIDE))


# -------------------------------------------------------------------------- counts


def test_same_seed_same_counts_other_seed_other_counts():
    kw = dict(sky="points", nside=2, phi_bins=10, n_samples=2000)
    a, b, c = simulate(seed=5, **kw), simulate(seed=5, **kw), simulate(seed=6, **kw)
    np.testing.assert_array_equal(np.asarray(a.event), np.asarray(b.event))
    assert not np.array_equal(np.asarray(a.event), np.asarray(c.event))
    np.testing.assert_array_equal(np.asarray(a.background), np.asarray(c.background))


def test_counts_are_poisson_around_the_forward_expectation(sim):
    expected = np.asarray(sim.expected_counts())
    counts = np.asarray(sim.event)
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    total = expected.sum()
    assert abs(counts.sum() - total) < 5 * np.sqrt(total)
    # Pearson chi2 per bin over well-filled bins: mean 1, sd sqrt(2/n)
    full = expected > 20
    chi2 = np.mean((counts[full] - expected[full]) ** 2 / expected[full])
    assert abs(chi2 - 1.0) < 5 * np.sqrt(2.0 / full.sum())
    # the sky is there: a clear excess over the background alone
    bkg = np.asarray(sim.background)
    assert counts.sum() - bkg.sum() > 10 * np.sqrt(bkg.sum())
    assert bkg.sum() == pytest.approx(sim.config.background_rate * sim.config.duration)


def test_sources_are_detectable(sim):
    sig = sim.detection_significance()
    assert set(sig) == {"bulge", "disk", "crab_like", "cygx1_like", "cena_like"}
    assert min(sig.values()) > 5.0


# --------------------------------------------------------------------------- files


def test_files_reopen_through_probdeconv_readers(sim, sim_dir):
    assert {k: p.name for k, p in sim.paths.items()} == FILE_NAMES
    with FullDetectorResponse.open(sim_dir / "response.h5") as rsp:
        assert not rsp.is_sparse and rsp.unit == u.cm**2
        image = rsp.to_image_response()
    assert image.axes == sim.response.axes
    np.testing.assert_array_equal(np.asarray(image), np.asarray(sim.response))
    ccm = CoordsysConversionMatrix.open(sim_dir / "ccm.h5")
    assert ccm.is_sparse and ccm.axes == sim.ccm.axes and ccm.unit == u.s
    assert ccm == sim.ccm  # histpy value equality: axes, unit, contents
    for key in ("event", "background"):
        h = Histogram.open(sim_dir / FILE_NAMES[key])
        assert h.axes.labels.tolist() == ["ScAtt", "Em", "Phi", "PsiChi"] and not h.is_sparse
        assert h == getattr(sim, key)
    truth = AllSkyImageModel.open(sim_dir / "truth.h5")
    assert truth.unit == sim.truth.unit and truth.nside == NSIDE
    assert truth == sim.truth and type(truth) is type(sim.truth)
    again = load_simulation(sim_dir)
    assert again.config == sim.config
    assert again.event == sim.event
    np.testing.assert_allclose(again.scatt.dwell, sim.scatt.dwell)
    np.testing.assert_allclose(again.scatt.z, sim.scatt.z, atol=1e-12)
    data = again.dataif("again")  # DataIF_COSI_DC2 through FullDetectorResponse.open
    assert data.data_axes.labels.tolist() == ["ScAtt", "Em", "Phi", "PsiChi"]
    assert data.model_axes.labels.tolist() == ["lb", "Ei"]


def test_response_file_layout_matches_cosipy(sim_dir, testdata):
    """Same groups, axis order, attribute names and TYPE values as cosipy's dense file."""
    ours = h5py.File(sim_dir / "response.h5", "r")
    theirs = h5py.File(testdata / "test_full_detector_response_dense.h5", "r")
    with ours, theirs:
        assert list(ours["DRM/AXES"]) == list(theirs["DRM/AXES"])
        assert set(theirs["DRM"].attrs) <= set(ours["DRM"].attrs)
        for name in theirs["DRM/AXES"]:
            a, b = ours["DRM/AXES"][name].attrs, theirs["DRM/AXES"][name].attrs
            assert set(a) == set(b), name
            assert {k: str(a[k]) for k in ("TYPE", "SCHEME", "UNIT") if k in a} == \
                   {k: str(b[k]) for k in ("TYPE", "SCHEME", "UNIT") if k in b}
        assert ours["DRM/CONTENTS"].ndim == theirs["DRM/CONTENTS"].ndim == 5


def test_existing_output_is_not_overwritten_and_bad_settings_name_the_field(sim, sim_dir):
    with pytest.raises(FileFormatError, match="overwrite=True"):
        simulate(nside=NSIDE, out=sim_dir)
    with pytest.raises(ParameterError, match="arm_sigma"):
        SimulationConfig(arm_sigma=-1.0)
    with pytest.raises(ParameterError, match="unknown setting"):
        simulate(nside=2, phi_binz=10)
    with pytest.raises(ParameterError, match="preset"):
        simulate(sky="nosuchsky", nside=1)
    with pytest.raises(FileFormatError, match="simulation.yml"):
        load_simulation(sim_dir / "nowhere")


# ---------------------------------------------------------------------- end to end


def test_richardson_lucy_on_simulated_sky(sim, sim_dir):
    """Accelerated RL with background fitting raises logL and finds the bulge."""
    loaded = load_simulation(sim_dir)
    with FullDetectorResponse.open(loaded.paths["response"]) as rsp:
        data = DataIF_COSI_DC2.load("sim", loaded.event, {"bkg": loaded.background}, rsp,
                                    coordsys_conv_matrix=loaded.ccm)
    truth = np.asarray(sim.truth)[:, 0]
    model = AllSkyImageModel(NSIDE, data.model_axes["Ei"].edges)
    model[:] = truth.mean() * model.unit
    par = {"iteration_max": 6, "acceleration": {"activate": True, "alpha_max": 10.0},
           "response_weighting": {"activate": True, "index": 0.5},
           "stopping_criteria": {"statistics": "log-likelihood", "threshold": 1e-2},
           "background_normalization_optimization": {"activate": True,
                                                     "range": {"bkg": [0.5, 1.5]}}}
    algo = RichardsonLucy(model, [data], None, par)
    algo.initialization()
    start = data.calc_log_likelihood(data.calc_expectation(model, {"bkg": 1.0}))
    while not algo.iteration():
        pass
    logl = [r["log-likelihood"][0] for r in algo.results]
    assert len(logl) == 6 and logl[0] > start and all(np.diff(logl) > 0)
    assert algo.results[-1]["background_normalization"]["bkg"] == pytest.approx(1.0, abs=0.02)
    rec = np.asarray(algo.results[-1]["model"])[:, 0]
    assert np.corrcoef(rec, truth)[0, 1] > 0.8
    gc = hp.ang2vec(0.0, 0.0, lonlat=True)
    near_gc = np.rad2deg(np.arccos(np.clip(gc @ _pixel_vectors(NSIDE), -1, 1))) < 20
    pix_area = 4 * np.pi / truth.size
    assert rec[near_gc].sum() * pix_area == pytest.approx(truth[near_gc].sum() * pix_area,
                                                          rel=0.3)
    assert near_gc[np.argmax(rec)]
