"""Time-dependent backgrounds: one normalisation per group of time bins ("nodes").

A background template ``B[k, t, i]`` may be scaled by a different normalisation in each
of a few groups of consecutive time (or ScAtt) bins.  Such a group is a *node*; each node
is a normalisation of its own (a global background index, named ``"<bkg>:node<j>"``), so
every background code path (EM update, posterior, reports) works per node:

- the dataset keeps one template per background and records, in ``bkg_rows[k, t]``, the
  local normalisation row of template ``k`` in time bin ``t`` (no copy of the template per
  node); ``bkg_index[r]`` is the global index of row ``r``;
- :func:`with_time_nodes` turns a dataset with one row per template into one with nodes;
  one node per template gives back the plain dataset (``bkg_rows = None``), so a fit with
  one node is the scalar fit exactly;
- :class:`NodeWalkPrior` is the optional smoothness prior between neighbouring nodes, a
  Gaussian random walk on ``log b`` with a relative step ``σ``:
  ``log P = −½ Σ_pairs ((log b_j − log b_i) / σ)²`` (improper: no anchor; the range or the
  data fix the level).

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset, background_counts
>>> ds = make_dataset(np.ones((4, 1, 1, 2)), np.ones((2, 1, 1, 1, 2)), [np.ones((4, 1, 1, 2))],
...                   ccm=(np.array([[0, 1, 2, 3], [0, 0, 1, 1], [0, 0, 1, 1]]), np.ones(4)))
>>> nodes = node_of_time(4, 2)
>>> nodes.tolist()
[0, 0, 1, 1]
>>> dn = with_time_nodes(ds, [nodes], [[0, 1]])
>>> dn.bkg_index, np.asarray(background_counts(dn, np.array([1.0, 3.0])))[:, 0].tolist()
((0, 1), [1.0, 1.0, 3.0, 3.0])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DataError, ParameterError
from .dataset import Dataset

__all__ = ["NodeWalkPrior", "node_of_time", "node_names", "with_time_nodes",
           "row_sums", "walk_prior", "node_coefficients", "observed_time"]


class NodeWalkPrior(NamedTuple):
    """Gaussian random walk on ``log b`` between neighbouring nodes (a pytree).

    ``pairs[p] = (i, j)`` are global background indices of neighbouring nodes of one
    background and ``sigma[p]`` the relative step allowed between them.
    """

    pairs: jax.Array  # [P, 2] int
    sigma: jax.Array  # [P]

    def log_prob(self, bkg_norm: jax.Array) -> jax.Array:
        """``−½ Σ_p ((log b_j − log b_i) / σ_p)²``."""
        logb = jnp.log(bkg_norm)
        step = logb[self.pairs[:, 1]] - logb[self.pairs[:, 0]]
        return -0.5 * jnp.sum((step / self.sigma) ** 2)


def walk_prior(groups: Sequence[Sequence[int]], sigma: Sequence[float | None],
               dtype: Any = "float64") -> NodeWalkPrior | None:
    """The random-walk prior over consecutive nodes of each background.

    ``groups[c]`` lists the global indices of background ``c``'s nodes in time order and
    ``sigma[c]`` its relative step (``None``: no smoothness prior for that background).
    ``None`` when no background has a prior (or all have one node).

    Examples
    --------
    >>> p = walk_prior([[0, 1, 2], [3]], [0.1, 0.1])
    >>> np.asarray(p.pairs).tolist(), round(float(p.log_prob(np.array([1.0, 1.1, 1.1, 5.0]))), 3)
    ([[0, 1], [1, 2]], -0.454)
    """
    pairs, sig = [], []
    for c, (group, s) in enumerate(zip(groups, sigma, strict=True)):
        if s is None:
            continue
        s = float(s)
        if not (np.isfinite(s) and s > 0):
            raise ParameterError(f"smoothness of background #{c}: got {s!r}; expected a "
                                 "finite relative step > 0 (e.g. 0.05 for 5 % between nodes).")
        pairs += [(int(a), int(b)) for a, b in zip(group[:-1], group[1:])]
        sig += [s] * (len(group) - 1)
    if not pairs:
        return None
    return NodeWalkPrior(jnp.asarray(np.array(pairs, dtype=np.int32)),
                         jnp.asarray(np.array(sig), dtype=dtype))


def node_of_time(n_time: int, nodes: Any, *, time_edges: np.ndarray | None = None,
                 what: str = "nodes") -> np.ndarray:
    """The node of each of ``n_time`` bins, ``[n_time]`` ints ``0 .. n_nodes − 1``.

    Parameters
    ----------
    n_time
        Number of time (or ScAtt) bins of the data.
    nodes
        An integer ``n``: ``n`` groups of consecutive bins, as equal in size as possible;
        a list of bin edges in bin index, ``[0, ..., n_time]`` (strictly increasing); or a
        mapping ``{"time": [t0, ..., tn]}``: edges in the units of ``time_edges``, each moved
        to the nearest bin edge.
    time_edges
        The ``n_time + 1`` edges of the time axis (needed for ``{"time": ...}``).
    what
        Name used in error messages (e.g. the YAML path).

    Raises
    ------
    ParameterError
        A count below 1 or above ``n_time``, edges that do not start at 0 / end at
        ``n_time`` / increase, time edges that give an empty node, or no time axis.

    Examples
    --------
    >>> node_of_time(5, 2).tolist(), node_of_time(5, [0, 1, 5]).tolist()
    ([0, 0, 0, 1, 1], [0, 1, 1, 1, 1])
    >>> node_of_time(4, {"time": [0.0, 22.0, 40.0]},
    ...              time_edges=np.array([0.0, 10.0, 20.0, 30.0, 40.0])).tolist()
    [0, 0, 1, 1]
    """
    n_time = int(n_time)
    if isinstance(nodes, dict):
        if set(nodes) - {"time", "unit"} or "time" not in nodes:
            raise ParameterError(f"{what}: got {nodes!r}; expected {{time: [t0, ..., tn]}} "
                                 "(edges in the unit of the data's time axis).")
        if time_edges is None:
            raise ParameterError(f"{what}: node edges in time need a time axis; the data "
                                 "have none (galactic frame or ScAtt binning). Give a count "
                                 "or edges in bin index instead.")
        te = np.asarray(time_edges, dtype=np.float64)
        want = np.asarray(nodes["time"], dtype=np.float64)
        edges = np.abs(te[None, :] - want[:, None]).argmin(axis=1)
        edges[0], edges[-1] = 0, n_time
        if want.ndim != 1 or want.size < 2 or np.any(np.diff(edges) <= 0):
            raise ParameterError(f"{what}: time edges {want.tolist()} give the bin edges "
                                 f"{edges.tolist()}; expected at least two edges that leave "
                                 "every node at least one time bin.")
        return np.repeat(np.arange(edges.size - 1), np.diff(edges)).astype(np.int32)
    if isinstance(nodes, bool | np.bool_):
        raise ParameterError(f"{what}: got {nodes!r}; expected a number of nodes (integer "
                             f">= 1) or bin edges [0, ..., {n_time}].")
    if isinstance(nodes, int | np.integer):
        n = int(nodes)
        if not 1 <= n <= n_time:
            raise ParameterError(f"{what}: got {n} node(s); expected an integer from 1 to "
                                 f"{n_time}, the number of time bins of the data.")
        return (np.arange(n_time) * n // n_time).astype(np.int32)
    try:
        edges = np.asarray(nodes)
        ok = edges.ndim == 1 and edges.size >= 2 and np.issubdtype(edges.dtype, np.integer)
    except (TypeError, ValueError):
        ok = False
    if not ok or edges[0] != 0 or edges[-1] != n_time or np.any(np.diff(edges) <= 0):
        raise ParameterError(f"{what}: got {nodes!r}; expected a number of nodes (integer "
                             f"from 1 to {n_time}), bin edges [0, ..., {n_time}] (integers, "
                             "strictly increasing) or {time: [t0, ..., tn]}.")
    return np.repeat(np.arange(edges.size - 1), np.diff(edges)).astype(np.int32)


def node_names(name: str, n_nodes: int) -> list[str]:
    """Global names of a background's nodes: the name itself for one node, else
    ``"<name>:node<j>"``.

    >>> node_names("bkg", 1), node_names("bkg", 2)
    (['bkg'], ['bkg:node0', 'bkg:node1'])
    """
    return [name] if n_nodes == 1 else [f"{name}:node{j}" for j in range(n_nodes)]


def with_time_nodes(ds: Dataset, node_maps: Sequence[np.ndarray | None],
                    global_index: Sequence[Sequence[int]]) -> Dataset:
    """The dataset with its templates split into time nodes (templates not copied).

    Parameters
    ----------
    ds
        A dataset with one normalisation row per template (``bkg_rows is None``).
    node_maps
        Per template: ``[n_time]`` node of each time bin (:func:`node_of_time`), or
        ``None`` for one node.
    global_index
        Per template: the global background index of each of its nodes.

    Raises
    ------
    DataError
        Lengths that do not match the templates, nodes or time bins.
    """
    n_k, n_t = ds.backgrounds.shape[0], ds.n_time
    if ds.bkg_rows is not None:
        raise DataError("with_time_nodes: the dataset has time nodes already.")
    if len(node_maps) != n_k or len(global_index) != n_k:
        raise DataError(f"with_time_nodes: {len(node_maps)} node maps and {len(global_index)} "
                        f"index lists for {n_k} background template(s).")
    rows = np.zeros((n_k, n_t), dtype=np.int32)
    flat_index: list[int] = []
    for k, (nodes, idx) in enumerate(zip(node_maps, global_index)):
        nodes = np.zeros(n_t, np.int32) if nodes is None else np.asarray(nodes, np.int32)
        n_nodes = int(nodes.max()) + 1 if nodes.size else 1
        if nodes.shape != (n_t,) or len(idx) != n_nodes:
            raise DataError(f"with_time_nodes: template #{k} has {len(idx)} global indices "
                            f"for a node map of shape {nodes.shape} with {n_nodes} node(s); "
                            f"expected one index per node and one node per time bin ({n_t}).")
        rows[k] = len(flat_index) + nodes
        flat_index += [int(i) for i in idx]
    if len(flat_index) == n_k:  # one node each: the plain dataset
        return dataclasses.replace(ds, bkg_index=tuple(flat_index))
    dtype = ds.counts.dtype
    time_totals = jnp.sum(ds.backgrounds, axis=2)  # [k, t, i] -> [k, t]
    totals = jax.ops.segment_sum(time_totals.reshape(-1), jnp.asarray(rows.reshape(-1)),
                                 num_segments=len(flat_index))  # -> [rows]
    return dataclasses.replace(ds, bkg_index=tuple(flat_index), bkg_rows=jnp.asarray(rows),
                               bkg_time_totals=time_totals.astype(dtype),
                               bkg_totals=totals.astype(dtype))


def row_sums(ds: Dataset, per_template_time: jax.Array) -> jax.Array:
    """Sum a ``[k, t]`` array (template, time bin) into the dataset's normalisation rows,
    ``[len(bkg_index)]`` (the identity's row sums over ``t`` without time nodes)."""
    if ds.bkg_rows is None:
        return jnp.sum(per_template_time, axis=1)
    return jax.ops.segment_sum(per_template_time.reshape(-1), ds.bkg_rows.reshape(-1),
                               num_segments=len(ds.bkg_index))


def node_coefficients(ds: Dataset, bkg_norm: jax.Array) -> jax.Array:
    """The normalisation of each template in each time bin, ``[k, t]``, from the global
    normalisations (a dataset with time nodes)."""
    b = bkg_norm[jnp.asarray(ds.bkg_index)]  # [rows]
    return b[ds.bkg_rows]  # [k, t]


def observed_time(ds: Dataset) -> jax.Array:
    """The time bin of each bin of the observed-bin view, ``[n_obs]``."""
    n_i = ds.counts.shape[1]
    if ds.observes_all:
        return jnp.arange(ds.n_bins) // n_i
    return ds.obs_index // n_i
