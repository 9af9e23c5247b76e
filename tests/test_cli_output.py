"""The output directory of the command line: created only for valid input, refused when it
holds another run (without --overwrite), locked, never a mix of two runs; resume only of
the same run; interruption messages that are true; what the report keeps."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probdeconv.cli.main import main
from probdeconv.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
RL = str(ROOT / "models" / "rl.yml")
ONE = ["--set", "deconvolution:parameter:iteration_max=2"]


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    """Two tiny simulations of the same shape (other seeds): NSIDE 1, 6 Phi bins."""
    out = {}
    for seed in (1, 2):
        d = tmp_path_factory.mktemp(f"sim{seed}")
        simulate(sky="bulge511", nside=1, seed=seed, out=d, overwrite=True, phi_bins=6)
        out[seed] = d
    return out


@pytest.fixture(scope="module")
def finished(sims, tmp_path_factory):
    """A finished run (2 iterations) to read from; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["--quiet", "run", RL, "--data", str(sims[1]), "--out", str(out), *ONE]) == 0
    return out


def _run(sims, out, *extra, seed=1):
    return main(["--quiet", "run", RL, "--data", str(sims[seed]), "--out", str(out), *ONE,
                 *extra])


def _one_error_line(capsys) -> str:
    # logged warnings of the run (e.g. the iteration limit) may precede the one error line
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("WARNING ")]
    assert len(err) == 1 and err[0].startswith("probdeconv: error:"), err
    assert "Traceback" not in err[0] and "internal error" not in err[0]
    return err[0]


@pytest.mark.parametrize("extra, needle", [
    (["--set", "no:such:key=1"], "no such key"),
    (["--set", "deconvolution:parameter:iteration_max=-3"], "iteration_max"),
    (["--set", "model_definition:property:nside=16"], "the data have NSIDE 1"),
    (["--set", "model_definition:property:energy_edges:value=[500.0, 520.0]"],
     "energy edges are [509.0, 513.0]"),
])
def test_a_rejected_run_creates_no_directory(sims, tmp_path, capsys, extra, needle):
    out = tmp_path / "never"
    assert _run(sims, out, *extra) == 2
    assert needle in _one_error_line(capsys)
    assert not out.exists()  # neither --out nor run.log before the inputs are validated


def test_set_nside_contradicted_by_the_data_names_both_values(sims, tmp_path, capsys):
    assert _run(sims, tmp_path / "o", "--set", "model_definition:property:nside=5") == 2
    line = _one_error_line(capsys)
    assert "nside=5" in line and "NSIDE 1" in line and "drop this --set" in line


def test_non_empty_out_is_refused_and_overwrite_leaves_no_stale_outputs(finished, tmp_path,
                                                                         sims, capsys):
    out = tmp_path / "run"
    assert _run(sims, out) == 0
    (out / "image_E7.fits").write_bytes(b"from an earlier run with 8 energy bins")
    (out / "notes.txt").write_text("the user's own file")
    before = (out / "iterations.csv").read_text()
    assert _run(sims, out, "--set", "deconvolution:parameter:iteration_max=3") == 2
    line = _one_error_line(capsys)
    assert "not empty" in line and "--overwrite" in line and "--resume" in line
    assert (out / "iterations.csv").read_text() == before  # nothing touched
    assert _run(sims, out, "--overwrite", "--set",
                "deconvolution:parameter:iteration_max=3") == 0
    assert not (out / "image_E7.fits").exists()  # the stale map of the earlier run is gone
    assert (out / "notes.txt").read_text() == "the user's own file"  # not ours: kept
    assert len((out / "iterations.csv").read_text().splitlines()) == 4


def test_overwrite_and_resume_together_are_refused(sims, tmp_path, capsys):
    assert _run(sims, tmp_path / "o", "--overwrite", "--resume") == 2
    assert "choose one" in _one_error_line(capsys)


@pytest.mark.parametrize("kind", ["file", "under a file", "/dev/null", "read-only"])
def test_out_that_cannot_be_a_directory(sims, tmp_path, capsys, monkeypatch, kind):
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = {"file": afile, "under a file": afile / "sub", "/dev/null": Path("/dev/null"),
           "read-only": tmp_path / "ro" / "out"}[kind]
    if kind == "read-only":  # as root a chmod does not stop writes: the check is patched
        (tmp_path / "ro").mkdir()
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro"
                            else real(p, mode))
    for command in (["run", RL, "--data", str(sims[1])],
                    ["sample", str(ROOT / "models" / "laplace.yml"), "--data", str(sims[1])],
                    ["simulate", "--nside", "1"]):
        assert main(["--quiet", *command, "--out", str(out)]) == 2
        line = _one_error_line(capsys)
        assert str(out) in line and ("not a directory" in line or "cannot write" in line)
    assert afile.read_text() == "x"


def test_a_second_run_into_a_locked_directory_exits_2(sims, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)  # as a first run holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _run(sims, out, "--overwrite") == 2
        assert "another probdeconv command is writing into it" in _one_error_line(capsys)
        assert list(out.iterdir()) == []
    finally:
        os.close(fd)
    assert _run(sims, out, "--overwrite") == 0  # released: the next run proceeds


def test_an_interrupted_run_says_how_to_resume_and_report_refuses_the_mix(sims, tmp_path,
                                                                          capsys, monkeypatch):
    out = tmp_path / "run"
    assert _run(sims, out) == 0
    monkeypatch.setattr("probdeconv.cli.run.write_outputs",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    args = ["--quiet", "run", RL, "--data", str(sims[1]), "--out", str(out), "--resume",
            "--set", "deconvolution:parameter:iteration_max=4"]
    assert main(args) == 130  # killed while rewriting the outputs of a finished run
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("probdeconv: interrupted; the checkpoint") and "iteration 4" in err
    assert err.endswith("--set deconvolution:parameter:iteration_max=4 --resume`.")
    assert main(["report", str(out)]) == 2  # image of iteration 2, checkpoint of 4: a mix
    assert "has not finished" in _one_error_line(capsys)
    monkeypatch.undo()
    assert main(args) == 0  # the resume the message names finishes it
    assert main(["report", str(out)]) == 0


def test_a_killed_rerun_into_a_finished_directory_leaves_no_mix(sims, tmp_path, capsys,
                                                                 monkeypatch):
    out = tmp_path / "run"
    assert _run(sims, out) == 0
    monkeypatch.setattr("probdeconv.shell.image_deconvolution.ImageDeconvolution."
                        "run_deconvolution",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert _run(sims, out, "--overwrite", seed=2) == 130  # other data, killed at once
    assert "nothing to resume" in capsys.readouterr().err
    assert not (out / "image.hdf5").exists() and not (out / "report.md").exists()
    assert not (out / "checkpoint.npz").exists()  # the old run's outputs are all gone
    assert main(["report", str(out)]) == 2
    assert "has not finished" in _one_error_line(capsys)


def test_sigterm_ends_like_ctrl_c(sims, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr("probdeconv.cli.run.write_outputs",
                        lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(5))
    assert _run(sims, out) == 143
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("probdeconv: terminated (SIGTERM); the checkpoint")
    assert (out / "checkpoint.npz").is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after main


@pytest.mark.parametrize("command, needle", [
    ("sample", "`probdeconv sample` cannot resume a sampler: run the command again with "
               "--overwrite"),
    ("simulate", "is incomplete: run the command again with --overwrite"),
])
def test_interruption_messages_are_true_for_each_subcommand(sims, tmp_path, capsys,
                                                            monkeypatch, command, needle):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    module = sys.modules[f"probdeconv.cli.{'sample' if command == 'sample' else 'main'}"]
    monkeypatch.setattr(module, "sample" if command == "sample" else "simulate", interrupt)
    argv = {"sample": ["sample", str(ROOT / "models" / "laplace.yml"), "--data",
                       str(sims[1])],
            "simulate": ["simulate", "--nside", "1"]}[command]
    assert main(["--quiet", *argv, "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "use --resume" not in err[0]


def test_resume_refuses_other_data_or_changed_acceleration(sims, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(sims, out) == 0
    config = (out / "config.yml").read_text()
    assert _run(sims, out, "--resume", seed=2) == 2  # same shape, other counts
    line = _one_error_line(capsys)
    assert "written for other data" in line and "event counts" in line and "afresh" in line
    assert _run(sims, out, "--resume", "--set",  # rl.yml's accelerator is LineSearch
                "deconvolution:parameter:acceleration:algorithm=SQUAREM") == 2
    line = _one_error_line(capsys)
    assert "acceleration:algorithm" in line and "'SQUAREM' now" in line
    assert (out / "config.yml").read_text() == config  # a refused resume changes nothing
    assert _run(sims, out, "--resume", "--set",
                "deconvolution:parameter:iteration_max=3") == 0  # what may change


def test_report_keeps_the_algorithm_and_flux_lines(finished, tmp_path):
    def summary(text: str) -> list[str]:  # the lines under "## Summary" (after the checks)
        return text.split("## Summary\n\n", 1)[1].splitlines()[:2]

    first = summary((finished / "report.md").read_text())
    assert first[0].startswith("RL: 2 iterations") and first[1].startswith("Total flux")
    (finished / "report.md").unlink()
    assert main(["--quiet", "report", str(finished)]) == 0
    again = summary((finished / "report.md").read_text())
    assert again[0].split(" in ")[0] == first[0].split(" in ")[0] == "RL: 2 iterations"
    assert again[1] == first[1]


def test_a_background_norm_on_its_bound_is_a_warning(sims, tmp_path):
    out = tmp_path / "run"
    assert _run(sims, out, "--set", "deconvolution:parameter:"
                "background_normalization_optimization:range={bkg: [0.01, 0.5]}") == 0
    checks = (out / "report.md").read_text().split("## Summary")[0]  # the top of the report
    assert ("- **Warning:** background normalisation 'bkg' = 0.5 is on the upper bound 0.5"
            in checks)
    assert "WARNING" in (out / "run.log").read_text()
    (out / "report.md").unlink()
    assert main(["--quiet", "report", str(out)]) == 0
    assert (out / "report.md").read_text().split("## Summary")[0] == checks


def test_new_files_follow_the_umask(sims, tmp_path):
    old = os.umask(0o027)
    try:
        assert _run(sims, tmp_path / "run") == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir()
             if p.is_file()}
    assert set(modes) >= {"iterations.csv", "run.yml", "config.yml", "checkpoint.npz",
                          "image.hdf5", "image_E0.fits", "run.log", "report.md"}
    assert set(modes.values()) == {0o640}, modes


def test_info_reads_every_file_probdeconv_writes(finished, sims, tmp_path, capsys):
    post = tmp_path / "post"
    assert main(["--quiet", "sample", str(ROOT / "models" / "laplace.yml"), "--data",
                 str(sims[1]), "--out", str(post), "--set", "sampling:num_draws=20"]) == 0
    files = [p for d in (finished, post, sims[1]) for p in sorted(d.iterdir()) if p.is_file()]
    assert {p.name for p in files} >= {
        "image.hdf5", "image_E0.fits", "iterations.fits", "iterations.csv", "checkpoint.npz",
        "run.yml", "config.yml", "posterior.h5", "draws.h5", "posterior.nc",
        "posterior_E0.fits", "summary.yml", "response.h5", "ccm.h5", "simulation.yml"}
    capsys.readouterr()
    for path in files:
        if path.suffix in (".log", ".md"):
            continue
        assert main(["info", str(path)]) == 0, path
        out = capsys.readouterr().out
        assert out.strip(), path
    assert main(["info", str(finished / "image_E0.fits")]) == 0
    assert "NSIDE 1" in capsys.readouterr().out


def test_ctrl_c_while_the_command_starts_prints_one_line(sims, tmp_path):
    """SIGINT 1 s after the start (usually while importing): one line, no traceback."""
    cmd = [sys.executable, "-m", "probdeconv", "--quiet", "run", RL, "--data", str(sims[1]),
           "--out", str(tmp_path / "o"), "--set", "deconvolution:parameter:iteration_max=100000",
           "--set", "deconvolution:parameter:stopping_criteria:threshold=-1"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    lines = [line for line in err.strip().splitlines() if line.startswith("probdeconv:")]
    assert "Traceback" not in err and len(lines) == 1 and "interrupted" in lines[0], err
    assert p.returncode in (130, -signal.SIGINT)
