"""The stopping rule by log-likelihood (or log-posterior) gain, absolute or relative.

probdeconv/algorithms/stopping.py holds the rule; RL, RLadvanced and MAP_RL read
``stopping_criteria: {statistics, threshold, relative}`` and stop at the first iteration
(from the second) whose gain is below the threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_shell import _problem

from probdeconv import DataIF_COSI_DC2, ImageDeconvolution
from probdeconv.algorithms.stopping import gain, gain_below
from probdeconv.config import validate_algorithm_parameters
from probdeconv.errors import ParameterError
from probdeconv.shell.run_checks import run_checks, statistic_series, stopping_rule

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_gain_absolute_and_relative():
    assert gain(-90.0, -100.0) == 10.0
    assert gain(-90.0, -100.0, relative=True) == pytest.approx(10.0 / 90.0, rel=1e-15)
    # the same gain is small relative to a large statistic and large relative to a small one
    assert gain_below(-1e7, -1e7 - 5.0, 1e-6, relative=True)
    assert not gain_below(-1e3, -1e3 - 5.0, 1e-6, relative=True)
    assert not gain_below(-1e7, -1e7 - 5.0, 1.0)  # absolute: 5 >= 1


@pytest.mark.parametrize("relative", [False, True])
def test_a_fall_a_nan_or_a_threshold_at_or_below_zero_never_stops(relative):
    assert not gain_below(-101.0, -100.0, 1e9, relative)  # fell
    assert not gain_below(float("nan"), -100.0, 1e9, relative)
    assert not gain_below(-100.0, float("-inf"), 1e9, relative)
    assert not gain_below(-100.0, -100.0, 0.0, relative)  # cosipy: threshold 0 never stops
    assert not gain_below(-100.0, -100.0, -1.0, relative)
    assert gain_below(-100.0, -100.0, 1e-300, relative)  # no change at all: stop


def test_schema_default_is_cosipys_absolute_rule_and_relative_must_be_a_boolean():
    for algorithm in ("RL", "RLadvanced", "MAP_RL"):
        p = validate_algorithm_parameters(algorithm, {})
        assert p["stopping_criteria"]["relative"] is False
    p = validate_algorithm_parameters("RL", {"stopping_criteria": {"threshold": 1e-6,
                                                                   "relative": True}})
    assert p["stopping_criteria"] == {"statistics": "log-likelihood", "threshold": 1e-6,
                                      "relative": True}
    with pytest.raises(ParameterError, match="stopping_criteria:relative"):
        validate_algorithm_parameters("RL", {"stopping_criteria": {"relative": "maybe"}})


def _run(name: str, iterations: int, *overrides: str):
    ev, bkg, rsp = _problem(11)
    deconv = ImageDeconvolution()
    deconv.progress = False
    deconv.set_dataset([DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp)])
    deconv.read_parameterfile(MODELS / name)
    deconv.override_parameter(
        "model_definition:property:nside = 1",
        "model_definition:property:energy_edges:value = [100.0, 500.0, 1000.0]",
        "model_definition:initialization:parameter:value = [1.0, 1.0]",
        f"deconvolution:parameter:iteration_max = {iterations}", *overrides)
    deconv.initialize()
    results = deconv.run_deconvolution()
    return deconv.deconvolution, results


@pytest.mark.parametrize("name", ["rl.yml", "map_rl_tsv.yml"])
def test_relative_rule_stops_at_the_first_small_relative_gain(name):
    # a monotone run (no acceleration) to iteration 12 without a rule ...
    plain = ["deconvolution:parameter:acceleration:activate = false"]
    if name == "map_rl_tsv.yml":  # a prior this tiny NSIDE-1 problem can carry
        plain.append("deconvolution:parameter:prior:TSV:coefficient = 1.0e-2")
    _, full = _run(name, 12, *plain, "deconvolution:parameter:stopping_criteria:threshold = -1")
    stat_name, stat = statistic_series(full)
    rel = np.diff(stat) / np.abs(stat[1:])  # relative gain of iterations 2..12
    assert np.all(rel > 0)
    # ... a threshold between the relative gains of iterations 4 and 5 stops at 5
    threshold = float(np.sqrt(rel[2] * rel[3]))
    assert rel[3] < threshold < rel[2]
    algo, results = _run(name, 12, *plain,
                         f"deconvolution:parameter:stopping_criteria:threshold = {threshold!r}",
                         "deconvolution:parameter:stopping_criteria:relative = true")
    assert len(results) == 5
    np.testing.assert_array_equal(statistic_series(results)[1], stat[:5])  # same path
    rule = stopping_rule(algo)
    assert rule == {"statistic": stat_name, "threshold": threshold, "relative": True}
    checks = run_checks(results, iteration_max=algo.iteration_max, stopping=rule)
    assert any(c.ok and "Stopped by the stopping rule" in c.text and "(relative)" in c.text
               for c in checks)
    # the same number as an absolute threshold is far below every gain: no early stop
    _, absolute = _run(name, 12, *plain,
                       f"deconvolution:parameter:stopping_criteria:threshold = {threshold!r}")
    assert len(absolute) == 12
