"""The command line end to end: simulate → run → report, resume after SIGKILL, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import healpy as hp
import numpy as np
import pytest

from probdeconv.cli.main import main
from probdeconv.shell.allsky_image import AllSkyImageModel

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["--quiet", "simulate", "--nside", "2", "--seed", "3", "--out", str(out),
                 "--overwrite"]) == 0
    return out


def _png_ok(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000, path


def test_simulate_run_report_end_to_end(sim_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["--quiet", "run", str(ROOT / "models" / "rl.yml"), "--data", str(sim_dir),
               "--out", str(out), "--set", "deconvolution:parameter:iteration_max=6"])
    assert rc == 0
    for name in ("image.hdf5", "image_E0.fits", "iterations.csv", "iterations.fits",
                 "config.yml", "run.yml", "run.log", "report.md", "checkpoint.npz"):
        assert (out / name).is_file(), name
    image = AllSkyImageModel.open(out / "image.hdf5")
    m = hp.read_map(out / "image_E0.fits")
    np.testing.assert_allclose(m, np.asarray(image)[:, 0])
    assert len((out / "iterations.csv").read_text().splitlines()) == 7  # header + 6
    for fig in ("image.png", "curves.png", "residuals.png"):
        _png_ok(out / "figures" / fig)
    (out / "figures" / "curves.png").unlink()
    assert main(["report", str(out)]) == 0
    _png_ok(out / "figures" / "curves.png")
    assert "deconvolution:parameter:iteration_max=6" in (out / "run.yml").read_text()


def test_info_and_module_entry_point(sim_dir):
    r = subprocess.run([sys.executable, "-m", "probdeconv", "info", str(sim_dir / "ccm.h5")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ScAtt" in r.stdout and "NuLambda" in r.stdout


@pytest.mark.parametrize("argv, needle", [
    (["run", "models/rl.yml", "--data", "/nonexistent/dir", "--out", "OUT"], "no such directory"),
    (["run", "models/nothere.yml", "--data", "SIM", "--out", "OUT"], "nothere.yml"),
    (["run", "models/rl.yml", "--data", "SIM", "--out", "OUT", "--set", "no:such:key=1"],
     "no such key"),
    (["run", "models/rl.yml", "--data", "SIM", "--out", "OUT", "--set", "oops"], "KEY=VALUE"),
    (["info", "README.md"], "not an HDF5 file"),
    (["run", "models/rl.yml", "--data", "SIM", "--out", "OUT", "--resume"], "no checkpoint"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, sim_dir, tmp_path, capsys):
    argv = [a.replace("SIM", str(sim_dir)).replace("OUT", str(tmp_path / "o")) for a in argv]
    argv = [str(ROOT / a) if a.startswith("models/") or a == "README.md" else a for a in argv]
    assert main(["--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("probdeconv: error:") and needle in err[0]


def _run(sim_dir, out, extra=(), env=None, wait=True):
    cmd = [sys.executable, "-m", "probdeconv", "--quiet", "run", str(ROOT / "models" / "rl.yml"),
           "--data", str(sim_dir), "--out", str(out), "--checkpoint-every", "2",
           "--set", "deconvolution:parameter:iteration_max=14",
           "--set", "deconvolution:parameter:stopping_criteria:threshold=-1", *extra]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if wait:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    return p


def test_kill_and_resume_gives_the_same_image(sim_dir, tmp_path):
    """SIGKILL mid-run, --resume: the final image equals an uninterrupted run, bit for bit."""
    ref = tmp_path / "ref"
    _run(sim_dir, ref)
    out = tmp_path / "killed"
    env = dict(os.environ, PROBDECONV_ITERATION_DELAY="0.25")
    p = _run(sim_dir, out, env=env, wait=False)
    ckpt = out / "checkpoint.npz"
    deadline = time.time() + 240
    while time.time() < deadline:
        if ckpt.is_file() and "iteration_count\": 6" in ckpt.read_bytes().decode("latin1"):
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not (out / "image.hdf5").exists()  # it was stopped before the end
    np.load(ckpt)  # the checkpoint survived the kill intact
    _run(sim_dir, out, extra=["--resume"])
    a = np.asarray(AllSkyImageModel.open(ref / "image.hdf5"))
    b = np.asarray(AllSkyImageModel.open(out / "image.hdf5"))
    np.testing.assert_array_equal(a, b)
    ref_rows = (ref / "iterations.csv").read_text().splitlines()
    out_rows = (out / "iterations.csv").read_text().splitlines()
    assert ref_rows == out_rows


def test_resume_refuses_a_checkpoint_of_other_data(sim_dir, tmp_path, capsys):
    """A checkpoint whose stored expectation does not fit this run's data is named, not used."""
    out = tmp_path / "o"
    base = ["--quiet", "run", str(ROOT / "models" / "rl.yml"), "--data", str(sim_dir),
            "--out", str(out), "--checkpoint-every", "1",
            "--set", "deconvolution:parameter:iteration_max=2"]
    assert main(base) == 0
    ckpt = out / "checkpoint.npz"
    with np.load(ckpt) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["sky0"] = arrays["sky0"][:-1]  # as if written for data with other non-zero bins
    np.savez(ckpt, **arrays)
    capsys.readouterr()  # the first run's warnings (iteration limit before the stopping rule)
    assert main([*base, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expectation of dataset 0" in err[0] and "afresh" in err[0]


def test_map_gradient_runs_and_resumes_from_the_command_line(sim_dir, tmp_path):
    """MAP_gradient through `probdeconv run` (the loop of ImageDeconvolution): outputs,
    a non-decreasing log-posterior, and --resume with a higher iteration_max equal to one run."""
    def run(out, n, extra=()):
        return main(["--quiet", "run", str(ROOT / "models" / "map_gradient.yml"), "--data",
                     str(sim_dir), "--out", str(out), "--checkpoint-every", "2",
                     "--set", f"deconvolution:parameter:iteration_max={n}",
                     "--set", "deconvolution:parameter:optimizer:tolerance=0.0", *extra])

    assert run(tmp_path / "ref", 5) == 0
    ref = tmp_path / "ref"
    for name in ("image.hdf5", "image_E0.fits", "iterations.csv", "iterations.fits",
                 "run.yml", "report.md", "checkpoint.npz"):
        assert (ref / name).is_file(), name
    rows = (ref / "iterations.csv").read_text().splitlines()
    assert rows[0].split(",")[3] == "log_posterior" and len(rows) == 6
    post = [float(r.split(",")[3]) for r in rows[1:]]
    assert np.all(np.isfinite(post)) and np.all(np.diff(post) >= 0)
    assert "algorithm: MAP_gradient" in (ref / "run.yml").read_text()
    out = tmp_path / "two_parts"
    assert run(out, 3) == 0
    assert run(out, 5, ["--resume"]) == 0
    a = np.asarray(AllSkyImageModel.open(ref / "image.hdf5"))
    b = np.asarray(AllSkyImageModel.open(out / "image.hdf5"))
    np.testing.assert_array_equal(a, b)
    assert (out / "iterations.csv").read_text() == (ref / "iterations.csv").read_text()
