"""``--devices N`` and the several-host flags of ``probdeconv run`` and ``probdeconv sample``.

One host: ``--devices N`` splits the data space over ``N`` devices (the first ``N`` GPUs, or
``N`` CPU devices, which check the split but do not run faster than one).  Several hosts:
one process per host, started by Slurm (``srun``) or Open MPI (``mpirun``) with ``--hosts``,
or by hand with ``--coordinator HOST:PORT --num-processes P --process-id K`` (or the
``PROBDECONV_COORDINATOR`` / ``PROBDECONV_NUM_PROCESSES`` / ``PROBDECONV_PROCESS_ID``
environment variables); ``--devices N`` then counts devices per host.  Every process
computes the same image; process ``K > 0`` writes its outputs to ``<out>.process<K>``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import jax
from jax.sharding import Mesh

from ..errors import ParameterError
from ..forward import mesh as fmesh

__all__ = ["add_device_flags", "start_devices", "process_out", "refuse_unsplit"]

logger = logging.getLogger(__name__)

ENV = ("PROBDECONV_COORDINATOR", "PROBDECONV_NUM_PROCESSES", "PROBDECONV_PROCESS_ID")


def add_device_flags(p: argparse.ArgumentParser) -> None:
    """The device and host flags (see the module docstring)."""
    g = p.add_argument_group("devices and hosts (split the data space)")
    g.add_argument("--devices", type=int, default=None, metavar="N",
                   help="split the data space over N devices per host (GPUs, or CPU "
                        "devices: a check, not a speed-up); default one device")
    g.add_argument("--hosts", action="store_true",
                   help="one process per host, found from Slurm (srun) or Open MPI (mpirun)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="several hosts started by hand: the address of process 0")
    g.add_argument("--num-processes", type=int, default=None, metavar="P",
                   help="with --coordinator: the number of processes")
    g.add_argument("--process-id", type=int, default=None, metavar="K",
                   help="with --coordinator: this process's number, 0 .. P-1")


def start_devices(args) -> Mesh | None:
    """Set the devices up before JAX starts; the mesh to split the data over, or ``None``
    (one device, one process)."""
    devices = getattr(args, "devices", None)
    hosts = bool(getattr(args, "hosts", False) or getattr(args, "coordinator", None)
                 or any(os.environ.get(k) for k in ENV))
    if devices is None and not hosts:
        return None
    if devices is not None:
        fmesh.set_cpu_devices(devices)
    if hosts:
        fmesh.initialize_hosts(args.coordinator, args.num_processes, args.process_id)
    mesh = fmesh.data_mesh(devices)
    logger.info("data space split over %d device(s) (%s) in %d process(es)", mesh.size,
                mesh.devices.flat[0].platform, len({d.process_index for d in mesh.devices.flat}))
    return mesh


def process_out(out: str | os.PathLike) -> Path:
    """The output directory of this process: ``out`` for process 0, else
    ``<out>.process<K>``."""
    k = jax.process_index()
    return Path(out) if k == 0 else Path(f"{out}.process{k}")


def _keys(tree, prefix: str = ""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield f"{prefix}{k}"
            yield from _keys(v, f"{prefix}{k}:")


def refuse_unsplit(params, mesh: Mesh | None, point_sources: bool = True) -> None:
    """Refuse, before any work, the settings whose arrays the split does not handle yet:
    background time nodes and (``point_sources``) point sources added after the split."""
    if mesh is None:
        return
    keys = list(_keys(params.to_dict()))
    bad = [k for k in keys if k.endswith(":nodes")
           or (point_sources and k.endswith("point_sources"))]
    if bad:
        raise ParameterError(f"{bad[0]}: not available with --devices or several hosts yet "
                             "(the split data space does not carry it); run on one device.")
