"""Devices and hosts for a split data space: the mesh, the blocks of each process, and
the start of JAX on several hosts.

The data space of a dataset is cut into equal blocks along one axis, one block per device
of a one-axis :class:`jax.sharding.Mesh` (axis :data:`DATA_AXIS`); on several hosts the
devices are ordered by process so that each process holds consecutive blocks, the bins
:func:`process_rows` of the data axis.  :mod:`probdeconv.forward.sharding` places a
dataset's arrays on such a mesh.

Examples
--------
>>> mesh = data_mesh(1)
>>> mesh.size, process_rows(10, mesh)
(1, slice(0, 10, None))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from ..errors import ParameterError

__all__ = ["DATA_AXIS", "data_mesh", "block_layout", "process_blocks", "process_rows",
           "gather_counts", "initialize_hosts", "set_cpu_devices"]

logger = logging.getLogger(__name__)

DATA_AXIS = "data"
"""Name of the mesh axis that the data space is split along."""


def data_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh (axis :data:`DATA_AXIS`) over ``devices``.

    ``None``: every device of every process; an integer ``n``: the first ``n`` devices of
    each process; or a list of devices.  Devices are ordered by process, so that each
    process's blocks are consecutive.

    Examples
    --------
    >>> data_mesh(1).shape
    OrderedDict({'data': 1})
    """
    all_devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if devices is None:
        chosen = all_devices
    elif isinstance(devices, int | np.integer):
        n_local = jax.local_device_count()
        if not 1 <= int(devices) <= n_local:
            raise ParameterError(
                f"devices: asked for {int(devices)} per process but JAX sees {n_local} "
                f"({all_devices[0].platform}); on the CPU set "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N (or the command line's "
                "--devices N) before JAX starts.")
        chosen = [d for p in range(jax.process_count())
                  for d in [d for d in all_devices if d.process_index == p][:int(devices)]]
    else:
        chosen = list(devices)
    return Mesh(np.array(chosen), (DATA_AXIS,))


def block_layout(n: int, n_blocks: int) -> tuple[int, int]:
    """``(block size, padded length)`` of an axis of ``n`` bins cut into ``n_blocks`` blocks.

    >>> block_layout(10, 4)
    (3, 12)
    """
    size = max(1, -(-int(n) // int(n_blocks)))
    return size, size * int(n_blocks)


def process_blocks(mesh: Mesh) -> range:
    """The blocks (mesh positions) whose devices belong to this process (contiguous)."""
    mine = [b for b, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    if not mine or mine != list(range(mine[0], mine[-1] + 1)):
        raise ParameterError(f"mesh: the devices of process {jax.process_index()} are at "
                             f"positions {mine}; build the mesh with data_mesh() so that "
                             "each process's devices are contiguous.")
    return range(mine[0], mine[-1] + 1)


def process_rows(n: int, mesh: Mesh) -> slice:
    """The bins ``[start, stop)`` of a data axis of length ``n`` that this process holds
    (time bins in the spacecraft frame, data bins in the galactic frame).

    >>> process_rows(10, data_mesh(1))
    slice(0, 10, None)
    """
    size, _ = block_layout(n, mesh.size)
    blocks = process_blocks(mesh)
    return slice(min(n, blocks.start * size), min(n, blocks.stop * size))



def gather_counts(values: Sequence[int]) -> np.ndarray:
    """The values of every process, ``[n_processes, len(values)]``."""
    arr = np.asarray(values, dtype=np.int64)
    if jax.process_count() == 1:
        return arr[None]
    return np.asarray(multihost_utils.process_allgather(arr)).reshape(-1, arr.size)


def set_cpu_devices(n: int) -> None:
    """Let the CPU backend show ``n`` devices (before JAX starts its backends; on a GPU
    machine the GPUs are used and this changes nothing they do).

    Raises
    ------
    ParameterError
        JAX has already started with another number of CPU devices.
    """
    if int(n) < 1:
        raise ParameterError(f"--devices: got {n}; expected an integer >= 1.")
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError as exc:
        if len(jax.local_devices(backend="cpu")) != int(n):
            raise ParameterError(f"--devices {n}: JAX has already started ({exc}); set "
                                 f"XLA_FLAGS=--xla_force_host_platform_device_count={n} "
                                 "before starting Python.") from exc


def initialize_hosts(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> None:
    """Start JAX on several hosts (``jax.distributed.initialize``), one process per host.

    Without arguments JAX detects Slurm and Open MPI launches (and the
    ``PROBDECONV_COORDINATOR``, ``PROBDECONV_NUM_PROCESSES`` and ``PROBDECONV_PROCESS_ID``
    environment variables are used when set).  Call it before anything else uses JAX.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("PROBDECONV_COORDINATOR") or None
    if num_processes is None and env.get("PROBDECONV_NUM_PROCESSES"):
        num_processes = int(env["PROBDECONV_NUM_PROCESSES"])
    if process_id is None and env.get("PROBDECONV_PROCESS_ID"):
        process_id = int(env["PROBDECONV_PROCESS_ID"])
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    except (RuntimeError, ValueError) as exc:
        raise ParameterError(
            f"jax.distributed.initialize failed ({exc}); give the coordinator address "
            "(host:port of process 0), the number of processes and this process's id, or "
            "launch under Slurm (srun) or Open MPI (mpirun) so that JAX finds them.") from exc
    logger.info("process %d of %d; %d local device(s), %d in all", jax.process_index(),
                jax.process_count(), jax.local_device_count(), jax.device_count())
