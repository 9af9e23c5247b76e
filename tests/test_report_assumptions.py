"""Uncertainty reports state their method's assumptions and its measured calibration first."""

from __future__ import annotations

import json

import numpy as np
from conftest import synthetic_arrays

import probdeconv
from probdeconv.forward import make_dataset
from probdeconv.forward.problem import Problem
from probdeconv.report.assumptions import (
    CALIBRATION_FILE,
    assumption_lines,
    calibration_key,
    calibration_lines,
    load_calibration,
)
from probdeconv.report.posterior import write_report

RECORD = {"skies": 10, "nside": 2, "pixels": 480,
          "in68": {"coverage": 0.70, "nominal": 0.68, "binomial_error": 0.0213, "z": 0.94},
          "in95": {"coverage": 0.90, "nominal": 0.95, "binomial_error": 0.0099, "z": -5.0},
          "sigma_ratio": {"pixels": 40, "q05": 0.97, "q50": 1.0, "q95": 1.04,
                          "within_10pc": 1.0}}


def test_each_method_names_its_assumptions():
    low = "\n".join(assumption_lines("laplace", {
        "space": "log", "fisher": "observed", "marginals": "gamma", "curvature": "lowrank",
        "rank": 64, "n_params": 769, "captured_variance": 0.42, "rank_converged": True,
        "rank_tolerance": 0.01, "rank_history": "32: inf, 64: 0.008"}))
    assert "Gaussian in log flux" in low and "rank 64 of 769" in low and "42.0%" in low
    assert "rule" in low and "met" in low
    dense = "\n".join(assumption_lines("laplace", {"curvature": "dense", "n_params": 5}))
    assert "Gaussian in log flux" in dense and "dense 5 × 5" in dense
    boot = "\n".join(assumption_lines("bootstrap", {"algorithm": "RL", "iterations": 50}))
    assert "spread of RL stopped after 50 iterations" in boot and "not a posterior" in \
        boot.lower()
    mgvi = "\n".join(assumption_lines("mgvi", {"n_samples": 8, "rounds": 3,
                                              "assumptions": "Gaussian in x"}))
    assert "8 (antithetic) samples per round, 3 rounds" in mgvi and "Gaussian in x" in mgvi
    assert "convergence" in "\n".join(assumption_lines("nuts", {}))


def test_calibration_table_from_the_record():
    key = calibration_key("laplace", {"curvature": "lowrank"})
    assert key == "laplace_lowrank"
    text = "\n".join(calibration_lines("laplace", {"curvature": "lowrank"}, {key: RECORD}))
    assert "| 68 % | 0.700 | 0.68 | 0.021 | +0.94 | yes |" in text
    assert "| 95 % | 0.900 | 0.95 | 0.010 | -5.00 | **no** |" in text  # outside 2 σ
    assert "within 10 % for 100.0%" in text
    missing = "\n".join(calibration_lines("svi", {}, {key: RECORD}))
    assert "No calibration measured for `svi`" in missing


def test_shipped_calibration_record_is_readable():
    records = load_calibration()
    assert CALIBRATION_FILE.exists() and records, "probdeconv/report/calibration.json"
    for rec in records.values():
        for level in ("in68", "in95"):
            assert 0 <= rec[level]["coverage"] <= 1 and rec[level]["binomial_error"] > 0
    assert json.loads(CALIBRATION_FILE.read_text())["written_by"].startswith("benchmarks/")


def test_posterior_report_states_assumptions_first(tmp_path):
    counts, response, bkgs, ccm = synthetic_arrays(seed=5, local=True)
    ds = make_dataset(counts * 20, response, bkgs, ccm=ccm, n_model_pixels=12,
                      pixel_area=1.0)
    problem = Problem.from_datasets([ds], bkg_free=True, bkg_range=[[0.01, 100.0]])
    post = probdeconv.sample(problem, method="laplace", curvature="lowrank", rank=4,
                             num_samples=50, init="em", mode_method="newton")
    text = write_report(post, tmp_path).read_text()
    top = text.split("## Settings")[0]
    assert "## Method assumptions" in top and "## Calibration of this method" in top
    assert f"rank {post.settings['rank']} of {problem.n_params}" in top
    assert np.isfinite(post.settings["captured_variance"])
