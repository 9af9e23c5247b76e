"""The one iteration loop: checkpoints, bit-for-bit resume and interruption, from Python.

``ImageDeconvolution.run_deconvolution`` is also what ``probdeconv run`` calls
(tests/test_cli.py covers the command line).  Also here: the checkpoint file format
(probdeconv/io/checkpoint.py) and the one registry of accelerator names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_shell import _problem

from probdeconv import DataIF_COSI_DC2, ImageDeconvolution
from probdeconv.algorithms import accelerate
from probdeconv.config import validate_algorithm_parameters
from probdeconv.errors import FileFormatError, ParameterError
from probdeconv.inference.bootstrap import run_bootstrap
from probdeconv.io import checkpoint as ckio

MODELS = Path(__file__).resolve().parents[1] / "models"

# model file -> overrides that make every run go to iteration_max (no early stop)
RUNS = {
    "rl.yml": ["deconvolution:parameter:stopping_criteria:threshold = -1"],
    "map_gradient.yml": ["deconvolution:parameter:optimizer:tolerance = 0.0"],
    "map_rl_tsv.yml": ["deconvolution:parameter:stopping_criteria:threshold = -1",
                       "deconvolution:parameter:prior:TSV:coefficient = 1.0e-2"],
    "rl_squarem.yml": ["deconvolution:parameter:stopping_criteria:threshold = -1"],
    "rl_simple.yml": [],
}


def _deconv(name: str, iterations: int, extra=()) -> ImageDeconvolution:
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
        f"deconvolution:parameter:iteration_max = {iterations}", *RUNS[name], *extra)
    deconv.initialize()
    return deconv


def _scalars(results) -> list:
    keys = ("iteration", "log-likelihood", "alpha", "background_normalization",
            "log-posterior")
    return [{k: r[k] for k in keys if k in r} for r in results]


@pytest.mark.parametrize("name", ["rl.yml", "map_gradient.yml", "map_rl_tsv.yml",
                                  "rl_squarem.yml", "rl_simple.yml"])
def test_resume_equals_an_uninterrupted_run_bit_for_bit(name, tmp_path):
    ref = _deconv(name, 7).run_deconvolution()
    ckpt = tmp_path / "checkpoint.npz"
    first = _deconv(name, 4).run_deconvolution(checkpoint=ckpt, checkpoint_every=3)
    assert len(first) == 4
    _, header = ckio.read_checkpoint(ckpt)
    assert header["iteration_count"] == 4 and header["stopped"]  # the last one is saved
    resumed = _deconv(name, 7)
    out = resumed.run_deconvolution(checkpoint=ckpt, resume=True)
    assert len(out) == len(ref) == 7
    np.testing.assert_array_equal(np.asarray(out[-1]["model"]), np.asarray(ref[-1]["model"]))
    assert _scalars(out) == _scalars(ref)  # floats compared exactly
    assert "model" not in out[0] and "model" in out[4]  # maps only after the resume
    assert resumed.deconvolution.dict_bkg_norm == ref[-1]["background_normalization"]


def test_keyboard_interrupt_from_a_callback_keeps_the_last_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    ref = _deconv("rl.yml", 9).run_deconvolution()

    def stop_at_5(algo):
        if algo.iteration_count == 5:
            raise KeyboardInterrupt

    deconv = _deconv("rl.yml", 9)
    deconv.checkpoint, deconv.checkpoint_every, deconv.callback = ckpt, 2, stop_at_5
    with pytest.raises(KeyboardInterrupt):
        deconv.run_deconvolution()
    arrays, header = ckio.read_checkpoint(ckpt)
    assert header["iteration_count"] == 4 and not header["stopped"]
    assert arrays["model"].shape == (12, 2) and "sky0" in arrays
    out = _deconv("rl.yml", 9).run_deconvolution(checkpoint=ckpt, resume=True)
    np.testing.assert_array_equal(np.asarray(out[-1]["model"]), np.asarray(ref[-1]["model"]))


def test_keyboard_interrupt_inside_a_step_keeps_the_last_checkpoint(tmp_path):
    """MAP_gradient interrupted in its optimiser step: the checkpoint of iteration 2 is whole."""
    ckpt = tmp_path / "checkpoint.npz"
    deconv = _deconv("map_gradient.yml", 6)
    algo = deconv.deconvolution
    step = algo.Mstep

    def interrupted_step():
        if algo.iteration_count == 3:
            raise KeyboardInterrupt
        step()

    algo.Mstep = interrupted_step
    with pytest.raises(KeyboardInterrupt):
        deconv.run_deconvolution(checkpoint=ckpt, checkpoint_every=1)
    before = ckpt.read_bytes()
    _, header = ckio.read_checkpoint(ckpt)
    assert header["iteration_count"] == 2 and header["algorithm"] == "MAP_gradient"
    out = _deconv("map_gradient.yml", 6).run_deconvolution(checkpoint=ckpt, resume=True)
    ref = _deconv("map_gradient.yml", 6).run_deconvolution()
    np.testing.assert_array_equal(np.asarray(out[-1]["model"]), np.asarray(ref[-1]["model"]))
    assert out[-1]["log-posterior"] == ref[-1]["log-posterior"]
    assert before != ckpt.read_bytes()  # the resumed run went on checkpointing


def test_a_run_that_stopped_by_its_criterion_has_nothing_left_after_resume(tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    stop_early = ["deconvolution:parameter:stopping_criteria:threshold = 1.0e+9",
                  "deconvolution:parameter:acceleration:activate = false"]  # monotone
    first = _deconv("rl.yml", 8, stop_early).run_deconvolution(checkpoint=ckpt)
    assert len(first) == 2  # the gain after iteration 2 is below the threshold
    again = _deconv("rl.yml", 8, stop_early)
    out = again.run_deconvolution(checkpoint=ckpt, resume=True)
    assert len(out) == 2 and again.deconvolution.iteration_count == 2
    np.testing.assert_array_equal(np.asarray(again.deconvolution.model),
                                  np.asarray(first[-1]["model"]))


def test_raising_iteration_max_continues_a_finished_run(tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    _deconv("rl_simple.yml", 3).run_deconvolution(checkpoint=ckpt)
    out = _deconv("rl_simple.yml", 5).run_deconvolution(checkpoint=ckpt, resume=True)
    ref = _deconv("rl_simple.yml", 5).run_deconvolution()
    np.testing.assert_array_equal(np.asarray(out[-1]["model"]), np.asarray(ref[-1]["model"]))


def test_resume_refuses_what_does_not_fit(tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    deconv = _deconv("rl.yml", 2)
    with pytest.raises(FileFormatError, match="no checkpoint at"):
        deconv.run_deconvolution(checkpoint=ckpt, resume=True)
    with pytest.raises(ParameterError, match="needs checkpoint="):
        deconv.run_deconvolution(resume=True)
    with pytest.raises(ParameterError, match="checkpoint_every=0"):
        deconv.run_deconvolution(checkpoint=ckpt, checkpoint_every=0)
    deconv.run_deconvolution(checkpoint=ckpt)
    with pytest.raises(FileFormatError, match="checkpoint of 'RL'.*'MAP_gradient'"):
        _deconv("map_gradient.yml", 3).run_deconvolution(checkpoint=ckpt, resume=True)
    arrays, header = ckio.read_checkpoint(ckpt)
    arrays["bkg_norm"] = arrays["bkg_norm"].astype(np.float32)
    ckio.write_checkpoint(ckpt, arrays, header)
    with pytest.raises(FileFormatError, match="background normalisations is .*float32.*afresh"):
        _deconv("rl.yml", 3).run_deconvolution(checkpoint=ckpt, resume=True)


def test_checkpoint_file_format(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    a = np.random.default_rng(0).random((3, 2)).astype(np.float32)
    ckio.write_checkpoint(path, {"model": a, "sky0": np.arange(4)}, {"history": [{"x": 1.5}]})
    arrays, header = ckio.read_checkpoint(path)
    np.testing.assert_array_equal(arrays["model"], a)
    assert arrays["model"].dtype == np.float32 and set(arrays) == {"model", "sky0"}
    assert header == {"format": "probdeconv-checkpoint", "version": 1,
                      "history": [{"x": 1.5}]}
    good = path.read_bytes()

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken)  # interrupted while writing
    with pytest.raises(KeyboardInterrupt):
        ckio.write_checkpoint(path, {"model": a}, {})
    monkeypatch.undo()
    assert path.read_bytes() == good and list(tmp_path.iterdir()) == [path]  # no stray file
    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(FileFormatError, match="not a readable probdeconv checkpoint"):
        ckio.read_checkpoint(path)
    np.savez(path, model=a)  # no header: an older layout or another program
    with pytest.raises(FileFormatError, match="not a probdeconv-checkpoint file"):
        ckio.read_checkpoint(path)
    with pytest.raises(Exception, match="reserved"):
        ckio.write_checkpoint(path, {"header": a}, {})


def test_accelerator_names_come_from_one_registry():
    reg = accelerate.REGISTRY
    assert accelerate.ACCELERATORS == ("none", *reg)
    assert set(accelerate.SEARCHED) == {n for n, a in reg.items() if a.searched}
    assert accelerate.accelerator_names("RL") == tuple(reg)
    assert "classic" not in accelerate.accelerator_names("MAP_RL", stand_ins=False)
    assert accelerate.resolve_accelerator("classic", "MAP_RL") == "MaxStep"
    assert accelerate.accelerator_names("RLsimple") == ()
    with pytest.raises(ParameterError, match="'Nesterov' is not available for RL"):
        accelerate.resolve_accelerator("Nesterov", "RL")
    # the parameter-file schema offers exactly the registry's names
    with pytest.raises(ParameterError) as err:
        validate_algorithm_parameters("RL", {"acceleration": {"activate": True,
                                                              "algorithm": "Nesterov"}})
    for name in reg:
        assert name in str(err.value)
    # MAP_RL reads the registry: "classic" in a parameter file runs MaxStep
    deconv = _deconv("map_rl_tsv.yml", 2, ["deconvolution:parameter:acceleration:algorithm = "
                                           "classic",
                                           "deconvolution:parameter:acceleration:activate = "
                                           "true"])
    assert deconv.deconvolution.acceleration_algorithm == "MaxStep"


def test_bootstrap_accelerators_from_the_registry():
    """The bootstrap scans the plain step: the registry's in-one-step accelerators only."""
    for algorithm in ("RL", "MAP_RL"):  # the options are checked before the problem is used
        with pytest.raises(ParameterError, match="'SQUAREM'; valid choices.*LineSearch"):
            run_bootstrap(None, algorithm=algorithm, acceleration="SQUAREM")
    with pytest.raises(ParameterError, match="'classic'; valid choices for the MAP_RL"):
        run_bootstrap(None, algorithm="MAP_RL", acceleration="classic")
