"""Posterior predictive checks on the counts: rootogram and randomised PIT.

Both come from posterior draws through the one forward model
(:func:`probdeconv.forward.expected_counts`) over every data bin of every dataset:

- *rootogram*: for each kept draw ``s`` a Poisson replicate ``y_rep ~ Poisson(E_s)`` of the
  whole data space; the number of bins in each count class (``0, 1, 2, …``; wider classes
  above 10 counts, the last class open) is compared with that of the observed counts.  The
  class frequencies of the data and of each replicate sum to the number of bins.
- *randomised PIT* (discrete data): ``u_i = F_i(d_i − 1) + v_i (F_i(d_i) − F_i(d_i − 1))``,
  ``v_i ~ U(0, 1)``, with ``F_i`` the posterior predictive CDF of bin ``i``, the mean over
  the draws of the Poisson CDF at ``E_s,i`` (exact per draw, no replicate noise).
  Expectations are computed in JAX; replicates (NumPy) and CDFs (SciPy) on the host.  For the
  true model the ``u_i`` are uniform on ``[0, 1]``; a Kolmogorov-Smirnov test gives the
  p-value quoted in the report (under uniformity ``p < α`` with probability ``α``).

Caveat: this is the in-sample (posterior predictive) PIT, which uses the data twice; it
is shrunk towards 0.5 by ``O(parameters / bins)``.  Where the image has as many free
pixels as there are informative bins, read it with that in mind (PSIS-LOO,
:mod:`.compare`, does not use the data twice).  With millions of bins the KS test detects
small misfits: read the figures for their size.

Draws are thinned to at most ``max_draws`` (default 200).
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import pdtr
from scipy.stats import kstest

from .. import forward as fm
from ..errors import DataError
from .loglik import thinned_draws

__all__ = ["PPC_DRAWS", "PredictiveChecks", "predictive_checks", "count_classes",
           "PIT_ALPHA"]

logger = logging.getLogger(__name__)

PPC_DRAWS = 200
"""Draws (all chains) used by the predictive checks."""
PIT_ALPHA = 0.01
"""KS p-value below which the report flags the PIT as not uniform (false-alarm rate 1 %)."""
_EXTRAS = ("starts", "observed", "predicted", "pit", "info")


class PredictiveChecks(NamedTuple):
    """Rootogram frequencies and PIT values (plain arrays; see the module docstring)."""

    starts: np.ndarray  # [K] lower bound of each count class (the last one open)
    observed: np.ndarray  # [K] bins of the data per class
    predicted: np.ndarray  # [S, K] bins of each replicate per class
    pit: np.ndarray  # [n_bins] randomised PIT of every bin (datasets one after the other)
    ks_stat: float
    ks_pvalue: float
    n_draws: int
    n_bins: int

    @property
    def uniform(self) -> bool:
        """Whether the KS test accepts uniform PIT values at :data:`PIT_ALPHA`."""
        return bool(self.ks_pvalue >= PIT_ALPHA)

    def check_line(self) -> str:
        """One line for the top of a report."""
        verdict = "ok" if self.uniform else f"NOT uniform (p < {PIT_ALPHA:g})"
        lo, hi = np.quantile(self.predicted[:, 0], (0.05, 0.95))
        return (f"Predictive check: PIT uniform: KS p = {self.ks_pvalue:.3g} ({verdict}; "
                f"{self.n_bins} bins, {self.n_draws} draws); empty bins: observed "
                f"{int(self.observed[0])}, predicted 90 % [{lo:.0f}, {hi:.0f}].")

    def to_extras(self) -> dict[str, np.ndarray]:
        """Arrays to store with a posterior (``ppc.<name>``)."""
        info = np.array([self.ks_stat, self.ks_pvalue, self.n_draws, self.n_bins], float)
        return {f"ppc.{k}": np.asarray(v) for k, v in zip(
            _EXTRAS, (self.starts, self.observed, self.predicted,
                      self.pit.astype(np.float32), info))}

    @classmethod
    def from_extras(cls, extras: dict) -> PredictiveChecks | None:
        """The checks stored by :meth:`to_extras` (``None`` when absent)."""
        if not all(f"ppc.{k}" in extras for k in _EXTRAS):
            return None
        s, o, p, u, info = (np.asarray(extras[f"ppc.{k}"]) for k in _EXTRAS)
        return cls(s, o, p, u, float(info[0]), float(info[1]), int(info[2]), int(info[3]))


def count_classes(max_count: int) -> np.ndarray:
    """Lower bounds of the count classes: ``0 … 10`` one by one, then about 20 classes
    spaced evenly in log up to ``max_count`` (the last class is open).

    >>> count_classes(3).tolist()
    [0, 1, 2, 3]
    >>> int(count_classes(5000)[-1]) <= 5000
    True
    """
    m = int(max(max_count, 0))
    small = np.arange(0, min(m, 10) + 1)
    if m <= 10:
        return small
    return np.unique(np.concatenate([small, np.round(np.geomspace(11, m, 20)).astype(int)]))


DRAWS_AT_ONCE = 8
"""Draws whose expectation is evaluated together inside the compiled batch."""


@jax.jit
def _expectations(images, bkgs, ds):
    """``[n_draws, bins]`` expected counts of a batch of draws (the one forward model)."""
    return jax.lax.map(lambda ib: fm.expected_counts(ds, ib[0], ib[1]).reshape(-1),
                       (images, bkgs), batch_size=DRAWS_AT_ONCE)


def predictive_checks(post, *, max_draws: int = PPC_DRAWS, seed: int = 0) -> PredictiveChecks:
    """Rootogram and randomised PIT of a posterior's draws (see the module docstring).

    Raises
    ------
    DataError
        The posterior has no problem (one read back from disk without stored checks).

    Examples
    --------
    >>> import numpy as np
    >>> from probdeconv.forward import make_dataset
    >>> from probdeconv.forward.problem import Problem
    >>> from probdeconv.results.sampling import sample
    >>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
    >>> ppc = predictive_checks(sample(Problem.from_datasets([ds]), "laplace", num_draws=50))
    >>> ppc.pit.shape, bool(np.all(ppc.predicted.sum(axis=1) == 4))
    ((4,), True)
    """
    t0 = time.perf_counter()
    problem = post.problem
    if problem is None:
        raise DataError("predictive checks: the posterior has no problem (it was read back "
                        "from disk without stored checks); compute them where it is sampled.")
    keep = thinned_draws(post.n_draws, post.chains, max_draws)
    images = post.store.read("image")[:, keep].reshape(-1, *problem.model_shape)
    if post.has_bkg:
        bkgs = post.bkg_draws()[:, keep].reshape(-1, problem.n_bkg)
    else:
        bkgs = np.broadcast_to(np.asarray(problem.config.bkg_fixed),
                               (images.shape[0], problem.n_bkg))
    n_draws = images.shape[0]
    counts = [np.asarray(ds.counts, np.float64).reshape(-1) for ds in problem.datasets]
    starts = count_classes(int(max(c.max() for c in counts)))
    observed = np.zeros(starts.size)
    predicted = np.zeros((n_draws, starts.size))
    pits = []
    rng = np.random.default_rng(int(seed))
    for ds, d in zip(problem.datasets, counts):
        observed += np.bincount(np.searchsorted(starts, d, side="right") - 1,
                                minlength=starts.size)
        f_lo, f_hi = np.zeros(d.size), np.zeros(d.size)
        batch = int(max(1, min(n_draws, 1e7 // max(d.size, 1))))  # ~80 MB per array
        for s in range(0, n_draws, batch):
            sl = slice(s, s + batch)
            e = np.asarray(_expectations(jnp.asarray(images[sl]), jnp.asarray(bkgs[sl]), ds))
            y = rng.poisson(e)  # [draws, bins] replicates
            cls = np.searchsorted(starts, y, side="right") - 1
            predicted[sl] += np.stack([np.bincount(c, minlength=starts.size) for c in cls])
            f_hi += pdtr(d, e).sum(axis=0)  # P(Y ≤ d)
            f_lo += np.where(d > 0, pdtr(np.maximum(d - 1, 0), e), 0.0).sum(axis=0)
        f_lo, f_hi = f_lo / n_draws, f_hi / n_draws
        pits.append(np.clip(f_lo + rng.random(d.size) * (f_hi - f_lo), 0.0, 1.0))
    pit = np.concatenate(pits)
    ks = kstest(pit, "uniform")
    logger.info("predictive checks: %d draws, %d bins, PIT KS p = %.3g (%.1f s)", n_draws,
                pit.size, ks.pvalue, time.perf_counter() - t0)
    return PredictiveChecks(starts, observed, predicted, pit, float(ks.statistic),
                            float(ks.pvalue), n_draws, int(pit.size))
