"""Every ready configuration in models/ validates and runs through ImageDeconvolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_shell import _problem

from probdeconv import DataIF_COSI_DC2, ImageDeconvolution

MODELS = Path(__file__).resolve().parents[1] / "models"
EM_FILES = ["rl.yml", "rl_simple.yml", "rl_squarem.yml", "map_rl_tsv.yml", "map_rl_entropy.yml",
            "map_gradient.yml"]


@pytest.mark.parametrize("name", EM_FILES)
def test_ready_configuration_runs(name, tmp_path):
    ev, bkg, rsp = _problem(11)
    data = DataIF_COSI_DC2.load("d", ev, {"bkg": bkg}, rsp)
    deconv = ImageDeconvolution()
    deconv.progress = False
    deconv.set_dataset([data])
    deconv.read_parameterfile(MODELS / name)
    deconv.override_parameter(
        "model_definition:property:nside = 1",
        "model_definition:property:energy_edges:value = [100.0, 500.0, 1000.0]",
        "model_definition:initialization:parameter:value = [1.0, 1.0]",
        "deconvolution:parameter:iteration_max = 3",
        f"deconvolution:parameter:save_results:directory = {tmp_path}",
    )
    if name == "map_rl_tsv.yml":  # flux ~1 here instead of ~1e-4: scale the prior
        deconv.override_parameter("deconvolution:parameter:prior:TSV:coefficient = 1.0e-2")
    deconv.initialize()
    results = deconv.run_deconvolution()
    assert 2 <= len(results) <= 3
    last = results[-1]
    assert np.all(np.asarray(last["model"]) >= 0)
    assert np.isfinite(last["log-likelihood"][0])
    if deconv.parameter["deconvolution:algorithm"] == "MAP_RL":
        assert np.isfinite(last["log-posterior"])
