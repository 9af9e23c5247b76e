"""Pointwise Poisson log-likelihood of posterior draws, for PSIS-LOO (ArviZ).

A *point* of the leave-one-out cross-validation is one of

- a bin of the dataset's observed-bin view (the bins with counts, plus the few empty
  bins that round the view up, :func:`probdeconv.forward.make_dataset`): its
  ``log p(d_i | E_i) = d_i log E_i − E_i − log d_i!``;
- the *rest* of a time bin: every bin outside the view (all have ``d = 0``) of that time
  bin together, ``−Σ E`` over them (one point per time bin; none when the view is every
  bin).

The points sum to the full log-likelihood ``Σ_i log p(d_i | E_i)``; ``E`` is
:func:`probdeconv.forward.expected_counts` of each draw (the one forward model).

Memory is ``draws × points × 8`` bytes.  Two reductions, both recorded in the group's
attributes (``thin``, ``group``) and in the report: draws are thinned to at most
``max_draws`` in all (every ``thin``-th draw of each chain), and when the array would
still exceed ``max_bytes`` the view's bins are summed in consecutive groups of ``group``
bins (then a point is a group of bins: leave-one-group-out).  Larger groups make PSIS
less reliable (higher Pareto k); the report says so.

Approximate posteriors (SVI, Laplace) carry ``stats.log_p`` and ``stats.log_q`` per draw
(the unnormalised log-posterior and the approximation's log-density at the draw, in one
parameterisation); :func:`importance_log_weights` turns them into the importance weights
ArviZ's :func:`arviz.loo_approximate_posterior` takes.
"""

from __future__ import annotations

import logging
import math
import time
from typing import NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from .. import forward as fm
from ..errors import DataError

__all__ = ["MAX_DRAWS", "MAX_BYTES", "PointwiseLogLik", "pointwise_log_likelihood",
           "thinned_draws", "importance_log_weights", "APPROXIMATE_METHODS", "relative_ess"]

logger = logging.getLogger(__name__)

MAX_DRAWS = 1000
"""Draws (all chains together) kept for the pointwise log-likelihood."""
MAX_BYTES = 2e8
"""Size above which the view's bins are summed in groups."""
APPROXIMATE_METHODS = ("svi", "laplace")
"""Methods whose draws come from an approximation q with a known density (importance
weights ``log p − log q`` per draw)."""


class PointwiseLogLik(NamedTuple):
    """The pointwise log-likelihood of the thinned draws.

    ``values[name]`` is ``[chain, draw, point]`` for dataset ``name`` (``obs_<i>``),
    ``kind[name]`` is ``[point]`` (``"bin"``, ``"group"`` or ``"rest"``), ``time[name]`` the
    time bin of each point (``-1`` for a group that spans several), ``draw_index`` the
    draws kept (per chain), ``thin`` and ``group`` the reductions.
    """

    values: dict
    kind: dict
    time: dict
    draw_index: np.ndarray
    thin: int
    group: int
    n_bins: int


def thinned_draws(n_draws: int, chains: int, max_draws: int = MAX_DRAWS) -> np.ndarray:
    """Indices of the draws kept per chain: every ``ceil(chains × n_draws / max_draws)``-th."""
    thin = max(1, math.ceil(chains * n_draws / max(int(max_draws), 1)))
    return np.arange(0, n_draws, thin)


def _view_times(ds: fm.Dataset) -> np.ndarray:
    n_i = ds.counts.shape[1]
    if ds.observes_all:
        return np.repeat(np.arange(ds.n_time), n_i)
    return np.asarray(ds.obs_index) // n_i


def _points(ds: fm.Dataset, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(segment id of each view bin, kind [point], time [point])``."""
    t = _view_times(ds)
    n_view = t.size
    seg = np.arange(n_view) // group
    n_groups = int(seg[-1]) + 1 if n_view else 0
    if group == 1:
        kind, time = np.full(n_groups, "bin"), t
    else:
        first = t[np.minimum(np.arange(n_groups) * group, n_view - 1)]
        last = t[np.minimum(np.arange(n_groups) * group + group - 1, n_view - 1)]
        kind, time = np.full(n_groups, "group"), np.where(first == last, first, -1)
    if not ds.observes_all:
        kind = np.concatenate([kind, np.full(ds.n_time, "rest")])
        time = np.concatenate([time, np.arange(ds.n_time)])
    return seg, kind.astype(str), time.astype(np.int64)


def _pointwise(image, bkg, ds, seg, n_groups):
    """``[points]`` of one draw: view bins (or groups of them), then the rest per time bin."""
    e = fm.expected_counts(ds, image, bkg)  # [t, i], the one forward model
    e_view = fm.observed(ds, e)  # [n_view]
    d = fm.observed_counts(ds)
    ll = jnp.where(d > 0, d * jnp.log(e_view), 0.0) - e_view - gammaln(d + 1.0)
    ll = jax.ops.segment_sum(ll, seg, num_segments=n_groups)
    if ds.observes_all:
        return ll
    t_view = ds.obs_index // ds.counts.shape[1]
    rest = jnp.sum(e, axis=1) - jax.ops.segment_sum(e_view, t_view, num_segments=ds.n_time)
    return jnp.concatenate([ll, -rest])


DRAWS_AT_ONCE = 8
"""Draws evaluated together inside a compiled batch (each holds a data-space expectation
and the model-space intermediates of the forward model)."""


def _many(images, bkgs, ds, seg, n_groups):
    return jax.lax.map(lambda ib: _pointwise(ib[0], ib[1], ds, seg, n_groups),
                       (images, bkgs), batch_size=DRAWS_AT_ONCE)


_batched = jax.jit(_many, static_argnums=(4,))


def pointwise_log_likelihood(post, *, max_draws: int = MAX_DRAWS,
                             max_bytes: float = MAX_BYTES) -> PointwiseLogLik:
    """The pointwise log-likelihood of a posterior's draws (see the module docstring).

    Parameters
    ----------
    post
        A :class:`~.posterior.Posterior` with its problem.
    max_draws
        Draws kept in all chains together (thinned evenly).
    max_bytes
        Above this size the view's bins are summed in groups of consecutive bins.

    Raises
    ------
    DataError
        The posterior has no problem (one read back from disk).

    Examples
    --------
    >>> import numpy as np
    >>> from probdeconv.forward import make_dataset
    >>> from probdeconv.forward.problem import Problem
    >>> from probdeconv.results.sampling import sample
    >>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
    >>> ll = pointwise_log_likelihood(sample(Problem.from_datasets([ds]), "laplace",
    ...                                      num_draws=50))
    >>> ll.values["obs_0"].shape, ll.thin, ll.group
    ((1, 50, 4), 1, 1)
    """
    t0 = time.perf_counter()
    problem = post.problem
    if problem is None:
        raise DataError("pointwise log-likelihood: the posterior has no problem (it was read "
                        "back from disk); compute it where the posterior is sampled, or read "
                        "the log_likelihood group of its posterior.nc.")
    keep = thinned_draws(post.n_draws, post.chains, max_draws)
    thin = int(keep[1] - keep[0]) if keep.size > 1 else 1
    n_kept = post.chains * keep.size
    n_points = sum(ds.n_observed + (0 if ds.observes_all else ds.n_time)
                   for ds in problem.datasets)
    group = max(1, math.ceil(n_kept * n_points * 8 / float(max_bytes)))
    if group > 1:
        logger.warning("pointwise log-likelihood: %d draws x %d points exceed %.3g bytes; the "
                       "observed bins are summed in groups of %d (leave-one-group-out).",
                       n_kept, n_points, max_bytes, group)
    images = post.store.read("image")[:, keep]
    if post.has_bkg:
        bkgs = post.bkg_draws()[:, keep]
    else:
        bkgs = np.broadcast_to(np.asarray(problem.config.bkg_fixed),
                               (post.chains, keep.size, problem.n_bkg))
    values, kinds, times = {}, {}, {}
    for i, ds in enumerate(problem.datasets):
        seg, kind, tbin = _points(ds, group)
        n_groups = int(seg[-1]) + 1 if seg.size else 0
        out = np.empty((post.chains, keep.size, kind.size))
        batch = int(max(1, min(keep.size, 2.5e8 // (8 * max(ds.n_bins, 1)))))
        for c in range(post.chains):
            for s in range(0, keep.size, batch):
                sl = slice(s, s + batch)
                out[c, sl] = np.asarray(_batched(jnp.asarray(images[c, sl]),
                                                 jnp.asarray(bkgs[c, sl]), ds,
                                                 jnp.asarray(seg), n_groups))
        values[f"obs_{i}"], kinds[f"obs_{i}"], times[f"obs_{i}"] = out, kind, tbin
    n_bins = sum(ds.n_bins for ds in problem.datasets)
    logger.info("pointwise log-likelihood: %d draws x %d points (%d bins each, every %d-th "
                "draw) in %.1f s", n_kept, n_points, group, thin, time.perf_counter() - t0)
    return PointwiseLogLik(values, kinds, times, keep, thin, group, n_bins)


def relative_ess(post, draw_index: np.ndarray) -> float:
    """PSIS's relative efficiency ``r_eff``: ArviZ's rule (the mean over the free pixels and
    backgrounds of the ESS of the mean, over the number of draws) on the kept draws; 1 for
    independent draws (SVI, Laplace, bootstrap) and single chains."""
    if post.independent or post.chains == 1 or draw_index.size < 4:
        return 1.0
    n = post.chains * draw_index.size
    ess = []
    block = post.pixel_block()
    for start in range(0, int(post.axes.nbins[0]), block):
        free = post.mask[start:start + block]
        if free.any():
            x = post.store.read("image", slice(start, start + block))[:, draw_index]
            e = np.asarray(az.ess(x, method="mean", chain_axis=0, draw_axis=1))
            ess.append(e[free])
    if post.has_bkg:
        ess.append(np.atleast_1d(az.ess(post.bkg_draws()[:, draw_index], method="mean",
                                        chain_axis=0, draw_axis=1)))
    values = np.concatenate(ess) if ess else np.array([n])
    return float(np.nanmean(values) / n)


def importance_log_weights(post, draw_index: np.ndarray | None = None):
    """``(log_p, log_q)`` ``[chain, draw]`` of an approximate posterior's draws, or ``None``.

    ``None`` for MCMC draws (no weights needed).  ``draw_index`` selects draws per chain.

    Raises
    ------
    DataError
        An SVI / Laplace posterior without ``stats.log_p`` / ``stats.log_q`` (written by an
        older probdeconv): sample it again.
    """
    if post.method not in APPROXIMATE_METHODS:
        return None
    names = set(post.stat_names)
    if not {"log_p", "log_q"} <= names:
        raise DataError(f"{post.method} posterior without the per-draw densities log_p and "
                        "log_q (stats.log_p / stats.log_q; written by an older probdeconv): "
                        "sample it again to compare it by PSIS-LOO.")
    sel = slice(None) if draw_index is None else np.asarray(draw_index)
    return (np.asarray(post.store.read("stats.log_p"))[:, sel],
            np.asarray(post.store.read("stats.log_q"))[:, sel])
