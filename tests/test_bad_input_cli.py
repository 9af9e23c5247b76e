"""Bad input and faults that used to end in "internal error": each is one line naming the
culprit, what was expected and the fix, exit code 2, and nothing left half-written."""

from __future__ import annotations

import errno
import json
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from probdeconv import (
    DataError,
    FileFormatError,
    Histogram,
    ImageDeconvolution,
    ModelTypeError,
)
from probdeconv.cli.main import error_line, main
from probdeconv.config import Parameters
from probdeconv.errors import OutputError, ParameterError
from probdeconv.io.atomic import atomic_target
from probdeconv.io.memory import require_memory
from probdeconv.results.sampling import check_bootstrap_memory
from probdeconv.shell.problem import problem_from_parameters
from probdeconv.shell.response import FullDetectorResponse
from probdeconv.simulate import SimulationConfig, load_simulation, simulate
from probdeconv.simulate.simulation import check_simulation_memory

ROOT = Path(__file__).resolve().parents[1]
RL = str(ROOT / "models" / "rl.yml")
SHORT = ["--set", "deconvolution:parameter:iteration_max=2"]
MANIFEST = ("name: x\nevent: event.h5\nbackgrounds: {bkg: background.h5}\n"
            "response: response.h5\nccm: ccm.h5\n")
BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    simulate(sky="bulge511", nside=1, seed=4, out=d, overwrite=True, phi_bins=6)
    return d


@pytest.fixture(scope="module")
def finished(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["--quiet", "run", RL, "--data", str(sim), "--out", str(out), *SHORT]) == 0
    return out


def _line(capsys) -> str:
    # logged warnings of the run (e.g. the iteration limit) may precede the one error line
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("WARNING ")]
    assert len(err) == 1 and err[0].startswith("probdeconv: error:"), err
    return err[0]


def _manifest_dir(sim: Path, d: Path, manifest: str = MANIFEST, damage=None) -> Path:
    d.mkdir()
    for name in ("event.h5", "background.h5", "ccm.h5", "response.h5"):
        shutil.copy(sim / name, d / name)
    if damage is not None:
        damage(d / "response.h5")
    (d / "dataset.yml").write_text(manifest)
    return d


def _flip_a_compressed_block(path: Path) -> None:
    with h5py.File(path, "r") as f:
        info = f["DRM/CONTENTS"].id.get_chunk_info(3)
    data = bytearray(path.read_bytes())
    data[info.byte_offset + info.size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def _delete_contents(path: Path) -> None:
    with h5py.File(path, "a") as f:
        del f["DRM/CONTENTS"]


@pytest.mark.parametrize("damage, needle", [
    (_flip_a_compressed_block, "NuLambda pixel 3 cannot be read"),
    (_truncate, "truncated"),
    (_delete_contents, "DRM/CONTENTS is missing"),
])
def test_a_damaged_response_is_named(sim, tmp_path, capsys, damage, needle):
    d = _manifest_dir(sim, tmp_path / "data", damage=damage)
    out = tmp_path / "out"
    assert main(["--quiet", "run", RL, "--data", str(d), "--out", str(out), *SHORT]) == 2
    line = _line(capsys)
    assert "response.h5" in line and needle in line and "regenerate" in line
    assert not out.exists()
    assert main(["info", str(d / "response.h5")]) == 2  # info reports it as damaged too
    assert needle in _line(capsys)
    with pytest.raises(FileFormatError, match=needle):
        with FullDetectorResponse.open(d / "response.h5") as rsp:
            rsp.to_image_response()


@pytest.mark.parametrize("manifest, needle", [
    (MANIFEST.replace("{bkg: background.h5}", "[background.h5]"),
     "backgrounds: got ['background.h5'] (list); expected a mapping"),
    (MANIFEST.replace("event: event.h5", "event: 5"), "event: got 5 (int); expected a file"),
    (MANIFEST.replace("response: response.h5", "response: [a, b]"), "response: got"),
    (BOMB + MANIFEST, "YAML refused"),
])
def test_a_bad_manifest_is_named(sim, tmp_path, capsys, manifest, needle):
    d = _manifest_dir(sim, tmp_path / "data", manifest=manifest)
    assert main(["--quiet", "run", RL, "--data", str(d), "--out", str(tmp_path / "o")]) == 2
    line = _line(capsys)
    assert "dataset.yml" in line and needle in line
    assert not (tmp_path / "o").exists()


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    path = tmp_path / "bomb.yml"
    path.write_text(BOMB)
    t0 = time.perf_counter()
    with pytest.raises(FileFormatError, match="more than 64 aliases"):
        Parameters.open(path)
    assert time.perf_counter() - t0 < 1.0
    few = tmp_path / "anchors.yml"  # a few anchors, as people write them, still load
    few.write_text("base: &b {value: [1.0e-4], unit: cm-2 s-1 sr-1}\na: *b\nc: *b\n")
    assert Parameters.open(few)["c:value"] == [1.0e-4]
    wide = tmp_path / "wide.yml"  # 64 aliases, but they expand it to 301311 values
    wide.write_text("a: &a [" + ", ".join(["1"] * 1000) + "]\nb: &b ["
                    + ", ".join(["*a"] * 60) + "]\nc: [*b, *b, *b, *b]\n")
    with pytest.raises(FileFormatError, match="expand it to 301311 values"):
        Parameters.open(wide)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_a_run_names_the_file_and_leaves_no_temporary(sim, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr("probdeconv.shell.allsky_image.AllSkyImageModel.write", _enospc)
    out = tmp_path / "run"
    assert main(["--quiet", "run", RL, "--data", str(sim), "--out", str(out), *SHORT]) == 2
    line = _line(capsys)
    assert "image.hdf5" in line and "No space left on device" in line
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporaries
    assert not (out / "image.hdf5").exists()
    monkeypatch.undo()
    assert main(["report", str(out)]) == 2  # the run did not finish: report refuses
    assert "has not finished" in capsys.readouterr().err


def test_disk_full_during_simulate_leaves_no_partial_simulation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("histpy.Histogram.write", _enospc)
    out = tmp_path / "sim"
    assert main(["--quiet", "simulate", "--nside", "1", "--out", str(out)]) == 2
    line = _line(capsys)
    assert ".h5" in line and "No space left on device" in line and "free space" in line
    assert list(out.iterdir()) == []  # the response written first was removed again


def test_the_atomic_writer_removes_its_temporary_on_any_write_error(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(OutputError, match="table.csv.*No space left") as info:
        with atomic_target(target, True, "table") as tmp:
            tmp.write_text("half")
            _enospc()
    assert isinstance(info.value, OSError)  # also an OSError, as before
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


@pytest.mark.parametrize("name, text, needle", [
    ("iterations.csv", "", "no iterations"),
    ("iterations.csv", "iteration,log_likelihood,alpha\n1,abc,1.0\n", "line 2"),
    ("iterations.csv", "iteration\n1\n", "line 2"),
    ("run.yml", ": : [\n", "damaged run record"),
    ("run.yml", "", "damaged run record (top level is NoneType"),
    ("run.yml", "- a\n- b\n", "damaged run record (top level is list"),
])
def test_report_on_a_damaged_directory(finished, tmp_path, capsys, name, text, needle):
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    (d / name).write_text(text)
    assert main(["report", str(d)]) == 2
    line = _line(capsys)
    assert name in line and needle in line


def _rewrite_checkpoint(path: Path, change) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(bytes(arrays["header"]).decode())
    change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage, needle", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "not a readable"),
    (lambda p: _rewrite_checkpoint(p, lambda h: h.pop("history")), "incomplete checkpoint"),
    (lambda p: _rewrite_checkpoint(p, lambda h: h.update(iteration_count="two")),
     "incomplete checkpoint"),
])
def test_resume_from_a_damaged_checkpoint(finished, sim, tmp_path, capsys, damage, needle):
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    damage(d / "checkpoint.npz")
    assert main(["--quiet", "run", RL, "--data", str(sim), "--out", str(d), "--resume",
                 "--set", "deconvolution:parameter:iteration_max=4"]) == 2
    line = _line(capsys)
    assert "checkpoint.npz" in line and needle in line and "afresh" in line


def test_api_set_dataset_of_wrong_objects_and_an_unknown_dtype(sim):
    with pytest.raises(ModelTypeError, match="item 0 is a str .*expected a data interface"):
        ImageDeconvolution().set_dataset(["not a dataif"])
    s = load_simulation(sim)
    with pytest.raises(DataError, match="dtype='double-precision'; expected 'float64'"):
        type(s.dataif()).load("x", s.event, {"bkg": s.background}, s.response,
                              coordsys_conv_matrix=s.ccm, dtype="double-precision")


def test_simulate_at_an_nside_that_cannot_fit_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROBDECONV_MEMORY_LIMIT", str(4 * 2**30))
    out = tmp_path / "big"
    assert main(["--quiet", "simulate", "--nside", "32", "--out", str(out)]) == 2
    line = _line(capsys)
    assert "NSIDE 32" in line and "needs about 102" in line and "4.0 GiB available" in line
    assert "NSIDE 8 needs about" in line  # the largest that fits
    assert not out.exists()
    check_simulation_memory(SimulationConfig(nside=8), 60)  # fits: no error


def test_a_bootstrap_batch_that_cannot_fit_is_refused(sim, monkeypatch):
    problem = problem_from_parameters([load_simulation(sim).dataif()], None)
    monkeypatch.setenv("PROBDECONV_MEMORY_LIMIT", str(2**30))
    check_bootstrap_memory(problem, 8)
    with pytest.raises(ParameterError, match=r"batch=10000000 .* lower sampling:batch to \d+"):
        check_bootstrap_memory(problem, 10_000_000)
    with pytest.raises(ParameterError, match="needs about"):
        require_memory(2**31, "two GiB", "ask for less")


@pytest.mark.parametrize("exc, needle", [
    (OSError(errno.ENOSPC, "No space left on device", "out/image.hdf5"),
     "out/image.hdf5: No space left on device; the disk is full"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/x"), "read-only"),
    (MemoryError("Unable to allocate 33.8 GiB"), "out of memory (Unable to allocate 33.8 GiB)"),
    (FileFormatError("f.h5 exists; pass overwrite=True to replace it"), "add --overwrite"),
])
def test_error_lines_speak_the_command_line(exc, needle):
    line = error_line(exc)
    assert needle in line and "\n" not in line and "overwrite=True" not in line


def test_api_resume_refuses_a_checkpoint_of_other_data_or_mask(sim, tmp_path):
    def deconv(data, n, mask=None):
        d = ImageDeconvolution()
        d.set_dataset([data])
        d.set_mask(mask)
        d.read_parameterfile(RL)
        d.override_parameter("model_definition:property:nside = 1",
                             f"deconvolution:parameter:iteration_max = {n}")
        d.initialize()
        return d

    data = load_simulation(sim).dataif()
    ckpt = tmp_path / "checkpoint.npz"
    deconv(data, 2).run_deconvolution(checkpoint=ckpt)
    other = simulate(sky="bulge511", nside=1, seed=9, phi_bins=6).dataif()
    with pytest.raises(FileFormatError, match="written for other data: the event counts of "
                                              "dataset 0"):
        deconv(other, 3).run_deconvolution(checkpoint=ckpt, resume=True)
    axes = data.exposure_map.axes
    mask = Histogram(axes, contents=np.ones(axes.shape, bool))
    mask[0, 0] = False
    with pytest.raises(FileFormatError, match="another mask"):
        deconv(data, 3, mask).run_deconvolution(checkpoint=ckpt, resume=True)
    assert len(deconv(data, 3).run_deconvolution(checkpoint=ckpt, resume=True)) == 3
