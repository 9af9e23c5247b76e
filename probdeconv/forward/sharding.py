"""Split the data space of a dataset or a :class:`~probdeconv.forward.problem.Problem` over
devices and hosts with JAX's own partitioner (``jax.sharding``).

Every result of the forward model is a sum over data bins, so the data space can be cut
into blocks, one per device of a one-axis :class:`jax.sharding.Mesh` (axis ``"data"``):

- spacecraft frame: blocks of time / ScAtt bins ``t``: counts ``[t, i]``, backgrounds
  ``[k, t, i]`` and the coordinate-conversion matrix entries of those ``t`` live on the
  block's device; the response (the same for every ``t``) is on every device;
- galactic frame (one time bin): blocks of data bins ``i``: counts, backgrounds *and* the
  response columns ``R[:, i]`` of the block live on its device (no device holds the whole
  response).

The arrays of the :class:`~probdeconv.forward.Dataset` are placed with
:class:`~jax.sharding.NamedSharding` annotations and the code that uses them is unchanged:
``jit`` partitions expectation, adjoint, exposure, likelihoods and background products
and adds the block sums (an all-reduce).  Richardson-Lucy, MAP-RL, the accelerators,
gradient MAP, SVI, Laplace and NUTS therefore run the same on one device or many.

The data axis is padded up to a multiple of the number of devices with bins of zero
counts, zero backgrounds and zero response (no CCM entry): their expectation is the
offset ``ε = ALMOST_ZERO`` alone, which adds the constant ``n_pad · ε`` to ``Σ E`` and
changes nothing else (not the image, gradients, EM steps nor background products).  The
observed-bin view is built per block (each block's non-zero bins, padded with empty bins
of the same block to a common length) so that it is split like the data.

Several hosts: start one process per host with
:func:`~probdeconv.forward.mesh.initialize_hosts` (``jax.distributed``), build one mesh over
all processes' devices with :func:`~probdeconv.forward.mesh.data_mesh` and give each
process only its bins of the data axis (:func:`~probdeconv.forward.mesh.process_rows`) with
:func:`make_sharded_dataset`; or load everything in every process and keep only the local
blocks with :func:`shard_dataset`.

What stays whole on every device: the image, the backgrounds' normalisations, the response
in the spacecraft frame, and (gathered by the partitioner at each iteration) the
algorithms' reduced sky ``[n_obs + 1]`` (:func:`~probdeconv.forward.reduced_sky`) and,
in the spacecraft frame, the rotated sky ``[t, v, Ei]``: the response products, the
largest work, are split; the communication per iteration is of the size of the observed
bins, not of the response.

Examples
--------
>>> import numpy as np, jax.numpy as jnp
>>> from probdeconv.forward import make_dataset, total_log_likelihood
>>> from probdeconv.forward.mesh import data_mesh
>>> rng = np.random.default_rng(0)
>>> ds = make_dataset(rng.poisson(2.0, (1, 3, 12)), rng.random((12, 1, 1, 3, 12)))
>>> mesh = data_mesh(1)
>>> sharded = shard_dataset(ds, mesh)
>>> lam, b = jnp.full((12, 1), 0.1), jnp.zeros(0)
>>> bool(jnp.isclose(total_log_likelihood([sharded], lam, b),
...                  total_log_likelihood([ds], lam, b), rtol=1e-12))
True
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..errors import DataError, ParameterError
from .dataset import Dataset, make_dataset
from .mesh import DATA_AXIS, block_layout, data_mesh, gather_counts, process_blocks, process_rows
from .model import log_likelihood
from .problem import Problem

__all__ = ["HANDLED", "shard_dataset", "shard_problem", "make_sharded_dataset", "is_sharded",
           "pad_data", "trim_data", "padded_log_likelihood", "data_mesh", "process_rows"]

logger = logging.getLogger(__name__)


def is_sharded(ds: Dataset) -> bool:
    """Whether the dataset's counts are split over more than one device."""
    sharding = getattr(ds.counts, "sharding", None)
    return sharding is not None and len(sharding.device_set) > 1


def pad_data(ds: Dataset, values, fill: float = 0.0) -> jax.Array:
    """A data-space array of the unsplit data (any shape with ``T × d`` bins) as an array
    shaped like ``ds.counts``, the padding bins set to ``fill``.

    Padding bins always follow the real bins in the flat ``(t, i)`` order (time bins are
    added after the last one; the galactic frame has one time bin).
    """
    flat = jnp.asarray(values, ds.counts.dtype).reshape(-1)
    if flat.size > ds.n_bins:
        raise DataError(f"pad_data: {flat.size} bins for a dataset of {ds.n_bins}.")
    flat = jnp.pad(flat, (0, ds.n_bins - flat.size), constant_values=fill)
    return flat.reshape(ds.counts.shape)


def trim_data(a, shape: tuple[int, ...]) -> np.ndarray:
    """The real bins of a (padded) data-space array, on the host, reshaped to ``shape``
    (the inverse of :func:`pad_data`); on several hosts every process gets every bin
    (all processes must call it)."""
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        a = multihost_utils.process_allgather(a, tiled=True)
    n = int(np.prod(shape))
    return np.array(a).reshape(-1)[:n].reshape(shape)


def padded_log_likelihood(ds: Dataset, expectation) -> jax.Array:
    """Poisson log-likelihood ``Σ d log E − Σ E`` of an expectation of the real bins
    (without padding) of a possibly padded dataset; the padding bins count 0."""
    n_pad = ds.n_bins - int(np.size(expectation))
    return log_likelihood(ds, pad_data(ds, expectation, 1.0)) + n_pad  # log 1 = 0


class _Host(NamedTuple):
    """One process's slice of a dataset, on the host: bins ``[start, stop)`` of the data
    axis (``t`` when ``ccm`` is given, else ``i``)."""

    counts: np.ndarray  # [T_loc, d] or [1, d_loc]
    backgrounds: np.ndarray  # [k, T_loc, d] or [k, 1, d_loc]
    response: object  # the whole response (time blocks) or its columns [(v, e), d_loc]
    ccm: tuple | None  # (t global, l, v, values) of the entries of this slice
    bkg_rows: np.ndarray | None  # [k, T_loc] time-node rows (time blocks only)
    start: int
    n: int  # length of the whole (unpadded) data axis


HANDLED = frozenset({"counts", "response", "backgrounds", "ccm_tv", "ccm_l", "ccm_values",
                     "obs_index", "obs_counts", "obs_backgrounds", "bkg_totals",
                     "response_totals", "bkg_rows", "bkg_time_totals"})
"""Array fields of a :class:`Dataset` that :func:`shard_dataset` knows how to split."""


def _check_fields(ds: Dataset) -> None:
    for f in dataclasses.fields(ds):
        if f.metadata.get("static") or f.name in HANDLED or getattr(ds, f.name) is None:
            continue
        raise ParameterError(f"sharding: the dataset field {f.name!r} cannot be split over "
                             "devices yet; run on one device (no --devices) or without it.")
    if not ds.is_local and not isinstance(ds.response, jax.Array | np.ndarray):
        raise ParameterError(f"sharding: a galactic-frame dataset is split along its data "
                             f"bins, which needs a dense response (got "
                             f"{type(ds.response).__name__}); use the dense response.")


def _host(ds: Dataset, rows: slice, n: int) -> _Host:
    """The slice ``rows`` of a whole dataset, as host arrays."""
    _check_fields(ds)
    counts, bkg = np.asarray(ds.counts), np.asarray(ds.backgrounds)
    if ds.is_local:
        tv = np.asarray(ds.ccm_tv, dtype=np.int64)
        t, v = np.divmod(tv, ds.n_local_pixels)
        keep = (t >= rows.start) & (t < rows.stop)
        ccm = (t[keep], np.asarray(ds.ccm_l)[keep], v[keep], np.asarray(ds.ccm_values)[keep])
        nodes = getattr(ds, "bkg_rows", None)
        nodes = None if nodes is None else np.asarray(nodes)[:, rows]
        return _Host(counts[rows], bkg[:, rows], ds.response, ccm, nodes, rows.start, n)
    return _Host(counts[:, rows], bkg[:, :, rows], np.asarray(ds.response)[:, rows], None,
                 None, rows.start, n)

def _blocks(host: _Host, mesh: Mesh, local: bool, n_v: int) -> list[dict]:
    """This process's blocks: host arrays of equal shapes (padding included)."""
    size, _ = block_layout(host.n, mesh.size)
    d = host.counts.shape[1]
    out = []
    for b in process_blocks(mesh):
        end = host.n - host.start
        lo = min(max(b * size - host.start, 0), end)
        sl = slice(lo, min(max((b + 1) * size - host.start, lo), end))
        pad = size - (sl.stop - sl.start)
        if local:
            counts = np.pad(host.counts[sl], ((0, pad), (0, 0)))
            bkg = np.pad(host.backgrounds[:, sl], ((0, 0), (0, pad), (0, 0)))
            t, l, v, c = host.ccm
            keep = (t >= b * size) & (t < (b + 1) * size)
            block = dict(counts=counts, backgrounds=bkg,
                         ccm=(t[keep] * n_v + v[keep], l[keep], c[keep]), offset=b * size * d)
            if host.bkg_rows is not None:
                block["bkg_rows"] = np.pad(host.bkg_rows[:, sl], ((0, 0), (0, pad)))
        else:
            counts = np.pad(host.counts[:, sl], ((0, 0), (0, pad)))
            bkg = np.pad(host.backgrounds[:, :, sl], ((0, 0), (0, 0), (0, pad)))
            resp = np.pad(host.response[:, sl], ((0, 0), (0, pad)))
            block = dict(counts=counts, backgrounds=bkg, response=resp, offset=b * size)
        block["nonzero"] = np.flatnonzero(counts)
        out.append(block)
    return out


def _observed_block(block: dict, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global flat indices, counts and backgrounds of a block's observed view: its non-zero
    bins and the first empty bins of the block up to ``length`` (sorted)."""
    flat = block["counts"].reshape(-1)
    nz = block["nonzero"]
    extra = np.flatnonzero(flat == 0)[:length - nz.size]
    idx = np.sort(np.concatenate([nz, extra]))
    bkg = block["backgrounds"].reshape(block["backgrounds"].shape[0], -1)[:, idx]
    return idx + block["offset"], flat[idx], bkg


def _assemble(mesh: Mesh, spec: P, shape: tuple, parts: list, dtype=None) -> jax.Array:
    """A global array of ``shape`` from this process's blocks (one per local device)."""
    sharding = NamedSharding(mesh, spec)
    devices = [mesh.devices.flat[b] for b in process_blocks(mesh)]
    arrays = [jax.device_put(np.ascontiguousarray(p, dtype=dtype), dev)
              for p, dev in zip(parts, devices, strict=True)]
    return jax.make_array_from_single_device_arrays(tuple(shape), sharding, arrays)


def _replicate(mesh: Mesh, tree):
    """Every array of ``tree`` (held whole by this process) on every device of ``mesh``."""
    def one(a):
        a = np.asarray(a)
        return _assemble(mesh, P(), a.shape, [a] * len(process_blocks(mesh)), a.dtype)
    return jax.tree_util.tree_map(one, tree)


def _ccm_fields(blocks: list[dict], mesh: Mesh, max_ccm: int, n_v: int, d: int,
                padded: int, dtype) -> dict:
    """CCM entries of each block, padded with zero-valued entries inside the block."""
    tv, l, c = [], [], []
    for b in blocks:
        btv, bl, bc = b["ccm"]
        fill = max_ccm - btv.size
        tv.append(np.concatenate([btv, np.full(fill, b["offset"] // d * n_v)]))
        l.append(np.concatenate([bl, np.zeros(fill, bl.dtype)]))
        c.append(np.concatenate([bc, np.zeros(fill)]))
    n_ccm = (mesh.size * max_ccm,)
    itype = np.int64 if padded * n_v >= 2**31 else np.int32
    return dict(ccm_tv=_assemble(mesh, P(DATA_AXIS), n_ccm, tv, itype),
                ccm_l=_assemble(mesh, P(DATA_AXIS), n_ccm, l, np.int32),
                ccm_values=_assemble(mesh, P(DATA_AXIS), n_ccm, c, dtype))


def _observed_fields(blocks: list[dict], mesh: Mesh, length: int, n_k: int, n_bins: int,
                     dtype) -> dict:
    views = [_observed_block(b, length) for b in blocks]
    n_obs = (mesh.size * length,)
    itype = np.int64 if n_bins >= 2**31 else np.int32
    return dict(
        obs_index=_assemble(mesh, P(DATA_AXIS), n_obs, [v[0] for v in views], itype),
        obs_counts=_assemble(mesh, P(DATA_AXIS), n_obs, [v[1] for v in views], dtype),
        obs_backgrounds=_assemble(mesh, P(None, DATA_AXIS), (n_k, *n_obs),
                                  [v[2] for v in views], dtype))


def _build(host: _Host, mesh: Mesh, template: Dataset) -> Dataset:
    local, dtype = template.is_local, template.counts.dtype
    n_v, d = template.n_local_pixels, host.counts.shape[1]
    blocks = _blocks(host, mesh, local, n_v)
    size, padded = block_layout(host.n, mesh.size)
    n_k = template.backgrounds.shape[0]
    sizes = gather_counts([max(b["nonzero"].size for b in blocks),
                     max(b["ccm"][0].size for b in blocks) if local else 0,
                     sum(b["nonzero"].size for b in blocks)])
    max_obs, max_ccm = sizes[:, :2].max(0)
    row = P(DATA_AXIS, None) if local else P(None, DATA_AXIS)
    shape = (padded, d) if local else (1, padded)
    fields = dict(
        counts=_assemble(mesh, row, shape, [b["counts"] for b in blocks], dtype),
        backgrounds=_assemble(mesh, P(None, *row), (n_k, *shape),
                              [b["backgrounds"] for b in blocks], dtype))
    replicated = NamedSharding(mesh, P())
    totals_dtype = template.response_totals.dtype
    if local:
        fields["response"] = _replicate(mesh, host.response)
        fields["response_totals"] = _replicate(mesh, template.response_totals)
        fields.update(_ccm_fields(blocks, mesh, int(max_ccm), n_v, d, padded, dtype))
        if host.bkg_rows is not None:
            fields["bkg_rows"] = _assemble(mesh, P(None, DATA_AXIS), (n_k, padded),
                                           [b["bkg_rows"] for b in blocks],
                                           host.bkg_rows.dtype)
    else:
        r_dtype = template.response.dtype
        fields["response"] = _assemble(mesh, P(None, DATA_AXIS), (host.response.shape[0],
                                                                  padded),
                                       [b["response"] for b in blocks], r_dtype)
        fields["response_totals"] = jax.jit(
            lambda r: jnp.sum(r, axis=1, dtype=totals_dtype),
            out_shardings=replicated)(fields["response"])
        if getattr(template, "bkg_rows", None) is not None:
            fields["bkg_rows"] = _replicate(mesh, template.bkg_rows)
    n_real = host.n * (d if local else 1)
    if 2 * int(sizes[:, 2].sum()) > n_real:  # dense data: the view is every bin (make_dataset)
        fields.update(obs_index=None, obs_counts=None, obs_backgrounds=None)
    else:
        fields.update(_observed_fields(blocks, mesh, max(1, int(max_obs)), n_k,
                                       shape[0] * shape[1], dtype))
    bkg = fields["backgrounds"]
    fields["bkg_totals"] = jax.jit(lambda b: jnp.sum(b, axis=(1, 2)),
                                   out_shardings=replicated)(bkg)
    if getattr(template, "bkg_time_totals", None) is not None:
        fields["bkg_time_totals"] = jax.jit(lambda b: jnp.sum(b, axis=2))(bkg)
    logger.info("sharded a dataset over %d device(s) along %s: %d bins per block, %d padded",
                mesh.size, "time bins" if local else "data bins", size, padded - host.n)
    return dataclasses.replace(template, **fields)


def shard_dataset(ds: Dataset, mesh: Mesh) -> Dataset:
    """The dataset split over ``mesh`` along its data axis (time bins in the spacecraft
    frame, data bins in the galactic frame).

    ``ds`` is the whole dataset; each process keeps only the blocks of its own devices
    (use :func:`make_sharded_dataset` to give a process its slice alone).
    """
    n = ds.n_time if ds.is_local else ds.counts.shape[1]
    rows = process_rows(n, mesh)
    return _build(_host(ds, rows, n), mesh, ds)


def shard_problem(problem: Problem, mesh: Mesh) -> Problem:
    """The problem with every dataset split over ``mesh`` (:func:`shard_dataset`)."""
    return dataclasses.replace(problem,
                               datasets=tuple(shard_dataset(ds, mesh) for ds in problem.datasets))


def make_sharded_dataset(counts: np.ndarray, response, backgrounds: Sequence[np.ndarray] = (),
                         *, mesh: Mesh, n: int, ccm: tuple[np.ndarray, np.ndarray] | None = None,
                         name: str = "dataset", **options) -> Dataset:
    """A sharded dataset from this process's slice of the data alone.

    The slice is ``rows = process_rows(n, mesh)`` of the data axis of length ``n``:

    - spacecraft frame (``ccm`` given): ``counts`` and each background ``[rows, Em, Phi,
      PsiChi]``; ``ccm = (coords, values)`` the entries whose time index lies in ``rows``
      (``coords[0]`` the global time index); ``response`` the whole ``[NuLambda, Ei, Em,
      Phi, PsiChi]`` (held by every process);
    - galactic frame: ``counts`` and backgrounds the data bins ``rows`` of the flattened
      ``(Em, Phi, PsiChi)`` axes (shape ``[len(rows)]``), ``response`` the same columns,
      ``[NuLambda, Ei, len(rows)]``.

    The slice is checked by :func:`~probdeconv.forward.make_dataset`, which takes the
    other ``options`` (``n_model_pixels``, ``pixel_area``, ``dtype``, ``bkg_index``...).

    Examples
    --------
    >>> import numpy as np
    >>> mesh = data_mesh(1)
    >>> rows = process_rows(4, mesh)
    >>> ds = make_sharded_dataset(np.ones(4)[rows], np.ones((3, 1, 4))[..., rows], mesh=mesh,
    ...                           n=4)
    >>> ds.counts.shape, ds.response.shape
    ((1, 4), (3, 4))
    """
    rows = process_rows(n, mesh)
    counts = np.asarray(counts)
    local = ccm is not None
    want = rows.stop - rows.start
    got = counts.shape[0] if local else int(np.prod(counts.shape))
    if got != want:
        raise DataError(f"{name}: this process (#{jax.process_index()}) holds {got} "
                        f"{'time' if local else 'data'} bins; expected {want}, bins "
                        f"[{rows.start}, {rows.stop}) of {n} (process_rows(n, mesh)).")
    response = np.asarray(response)
    if local:
        coords, values = ccm
        coords = np.array(coords, dtype=np.int64)
        if coords.ndim == 2 and coords.shape[0] == 3 and coords.size and (
                coords[0].min() < rows.start or coords[0].max() >= rows.stop):
            raise DataError(f"{name}: CCM entries for time bins outside [{rows.start}, "
                            f"{rows.stop}), this process's rows; give only those.")
        coords[0] -= rows.start
        ccm = (coords, values)
    else:
        counts = counts.reshape(1, 1, -1)
        backgrounds = [np.asarray(b).reshape(1, 1, -1) for b in backgrounds]
        response = response.reshape(*response.shape[:2], 1, 1, -1)
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        part = make_dataset(counts, response, backgrounds, ccm=ccm, name=name, **options)
    host = _host(part, slice(0, want), want)
    if local:
        t, l, v, c = host.ccm
        host = host._replace(ccm=(t + rows.start, l, v, c))
    return _build(host._replace(start=rows.start, n=n), mesh, part)

