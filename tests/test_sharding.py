"""The data space split over devices and hosts (probdeconv.forward.sharding) gives the
one-device numbers.

JAX fixes its devices when it starts, so the split runs happen in subprocesses
(tests/sharding_worker.py): four host devices (``XLA_FLAGS=
--xla_force_host_platform_device_count=4``) in one process, and two processes joined by
``jax.distributed`` on 127.0.0.1, each building only its slice of the data.  Both frames are
cut unevenly (5 time bins, 78 data bins), so padding blocks are always exercised.

Tolerances: images and every product to 1e-10 relative (the sums only change order);
the log-likelihood to 1e-10 relative and, after removing the known constant of the padding
bins (``n_pad · ε``, ε = 1e-12, their expectation), to 1e-12.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import healpy as hp
import jax.numpy as jnp
import numpy as np
import pytest

from probdeconv.cli.devices import refuse_unsplit
from probdeconv.cli.main import main
from probdeconv.config import Parameters
from probdeconv.errors import DataError, ParameterError
from probdeconv.forward import total_log_likelihood
from probdeconv.forward.dataset import ALMOST_ZERO
from probdeconv.forward.mesh import block_layout, data_mesh, process_rows
from probdeconv.forward.sharding import (
    make_sharded_dataset,
    padded_log_likelihood,
    shard_dataset,
    trim_data,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sharding_worker as worker  # noqa: E402

RTOL = 1e-10
KEYS = ("exposure", "backproject", "expected", "rl_image")


def _env(n_devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    return env


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))


def _close_loglik(one: float, many: float, n_pad: int) -> None:
    assert abs(many - one) <= RTOL * abs(one)
    assert abs(many + n_pad * ALMOST_ZERO - one) <= 1e-12 * abs(one)


@pytest.fixture(scope="module")
def one_device():
    """The reference: every computation on this process's one device, unsplit."""
    return {frame: worker.run_all(worker.dataset(frame), **worker.FULL[frame])
            for frame in ("local", "galactic")}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A light spacecraft-frame simulation (NSIDE 2, 10 Phi bins, NSIDE-1 attitude bins)."""
    out = tmp_path_factory.mktemp("sim")
    assert main(["--quiet", "simulate", "--nside", "2", "--phi-bins", "10", "--scatt-nside",
                 "1", "--seed", "2", "--out", str(out), "--overwrite"]) == 0
    return out


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory, sim):
    tmp = tmp_path_factory.mktemp("sharding")
    out = tmp / "devices.json"
    subprocess.run([sys.executable, str(HERE / "sharding_worker.py"), "devices", str(out),
                    str(sim), str(tmp / "run")], env=_env(4), check=True, timeout=600,
                   cwd=HERE.parent)
    result = json.loads(out.read_text())
    result["run"] = tmp / "run"
    return result


@pytest.mark.parametrize("frame", ["local", "galactic"])
def test_four_devices_equal_one(one_device, four_devices, frame):
    """Forward products and RL + SQUAREM (both frames), MAP-RL (gamma, TSV, LineSearch) and
    gradient MAP (L-BFGS) (spacecraft frame) split over 4 host devices equal the one-device
    numbers."""
    one, many = one_device[frame], four_devices[frame]
    assert many["n_devices"] == 4
    full = ("maprl_image", "map_image") if frame == "local" else ()
    for key in (*KEYS, *full):
        assert _rel(one[key], many[key]) <= RTOL, key
    n_pad = many["n_bins"] - one["n_bins"]
    assert n_pad > 0  # uneven: 5 time bins or 78 data bins over 4 devices
    full = ("maprl_logpost", "map_logpost") if frame == "local" else ()
    for key in ("loglik", "rl_loglik", *full):
        _close_loglik(one[key], many[key], n_pad)


def test_sampler_runs_split(four_devices):
    """A short NUTS run over a split problem gives finite draws of the image's shape."""
    nuts = four_devices["samplers"]["nuts"]
    assert nuts["finite"] and nuts["shape"] == [1, 8, worker.N_PIX, 1]
    assert nuts["mean"] > 0


def test_command_line_devices(four_devices, sim, tmp_path):
    """`probdeconv run --devices 4` (RL + SQUAREM, spacecraft frame) writes the one-device
    run's iterations and image."""
    assert four_devices["cli_rc"] == 0
    out = tmp_path / "one"
    assert main([*worker.CLI_ARGS, "--data", str(sim), "--out", str(out)]) == 0
    one = np.loadtxt(out / "iterations.csv", delimiter=",", skiprows=1, usecols=(1, 4))
    many = np.loadtxt(four_devices["run"] / "iterations.csv", delimiter=",", skiprows=1,
                      usecols=(1, 4))
    assert one.shape == many.shape == (3, 2)
    np.testing.assert_allclose(many, one, rtol=RTOL, atol=0)
    image = hp.read_map(out / "image_E0.fits")
    np.testing.assert_allclose(hp.read_map(four_devices["run"] / "image_E0.fits"), image,
                               rtol=0, atol=RTOL * np.abs(image).max())
    log = (four_devices["run"] / "run.log").read_text()
    assert "split over 4 device(s)" in log and "along time bins" in log
    assert "3 padded" in log  # 33 ScAtt bins in blocks of 9: the outputs drop the padding


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(one_device, tmp_path):
    """Two processes (jax.distributed, CPU, 127.0.0.1), each holding only its slice of the
    counts, backgrounds, CCM rows (spacecraft frame) or response columns (galactic), give
    the one-process numbers (forward products, RL + SQUAREM)."""
    out = tmp_path / "hosts.json"
    port = str(_free_port())
    cmd = [sys.executable, str(HERE / "sharding_worker.py"), "host", port]
    procs = [subprocess.Popen([*cmd, str(pid), str(out)], env=_env(1),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for pid in (0, 1)]
    logs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-4000:]
    many = json.loads(out.read_text())
    for frame in ("local", "galactic"):
        one = one_device[frame]
        assert many[frame]["n_devices"] == 2
        n = worker.N_TIME if frame == "local" else 78
        assert many[frame]["local_rows"] == block_layout(n, 2)[0]  # half the data, not all
        for key in KEYS:
            assert _rel(one[key], many[frame][key]) <= RTOL, (frame, key)
        n_pad = many[frame]["n_bins"] - one["n_bins"]
        for key in ("loglik", "rl_loglik"):
            _close_loglik(one[key], many[frame][key], n_pad)


def test_one_device_split_is_the_dataset():
    """On one device the split dataset has the same numbers (no padding)."""
    ds = worker.dataset("local")
    split = shard_dataset(ds, data_mesh(1))
    lam, b = jnp.full((worker.N_PIX, 1), 0.2), jnp.array([0.5])
    assert split.counts.shape == ds.counts.shape
    assert float(total_log_likelihood([split], lam, b)) == pytest.approx(
        float(total_log_likelihood([ds], lam, b)), rel=1e-13)


def test_padded_helpers():
    """pad/trim/log-likelihood of the real bins of a padded dataset."""
    ds = worker.dataset("local")
    e = np.asarray(ds.counts) + 0.5
    want = float(np.sum(np.asarray(ds.counts) * np.log(e)) - e.sum())
    assert float(padded_log_likelihood(ds, e)) == pytest.approx(want, rel=1e-13)
    assert np.array_equal(trim_data(np.arange(10.0).reshape(2, 5), (2, 3)),
                          np.arange(6.0).reshape(2, 3))
    assert block_layout(5, 4) == (2, 8)
    assert process_rows(5, data_mesh(1)) == slice(0, 5)


def test_bad_slices_are_refused():
    """A process's slice of the wrong length, or CCM entries of other time bins, are named."""
    a = worker.arrays("local")
    mesh = data_mesh(1)
    with pytest.raises(DataError, match="holds 4 time bins; expected 5"):
        make_sharded_dataset(a["counts"][:4], a["response"], mesh=mesh, n=5,
                             ccm=a["ccm"], n_model_pixels=worker.N_PIX)
    coords, values = a["ccm"]
    bad = coords.copy()
    bad[0, 0] = 7
    with pytest.raises(DataError, match="outside"):
        make_sharded_dataset(a["counts"], a["response"], mesh=mesh, n=5,
                             ccm=(bad, values), n_model_pixels=worker.N_PIX)
    with pytest.raises(ParameterError, match="devices: asked for 3"):
        data_mesh(3)


def test_settings_the_split_does_not_carry_are_refused():
    """Background time nodes (and point sources added after the split, in `run`) are refused
    with --devices, naming the key; without a mesh nothing is checked."""
    nodes = Parameters({"deconvolution": {"parameter": {
        "background_normalization_optimization": {"activate": True, "nodes": 4}}}})
    sources = Parameters({"model_definition": {"point_sources": [[0.0, 0.0]]}})
    mesh = data_mesh(1)
    with pytest.raises(ParameterError, match="background_normalization_optimization:nodes"):
        refuse_unsplit(nodes, mesh)
    with pytest.raises(ParameterError, match="model_definition:point_sources"):
        refuse_unsplit(sources, mesh)
    refuse_unsplit(sources, mesh, point_sources=False)  # `sample` adds them before the split
    refuse_unsplit(nodes, None)
