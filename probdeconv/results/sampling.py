"""``probdeconv.sample``: posterior approximation of a problem, returned as a :class:`Posterior`.

It runs :func:`probdeconv.inference.sampling.sample_draws` (NUTS, HMC, SVI, Laplace or the
bootstrap; see there for the methods) and builds the :class:`~.posterior.Posterior` from the
problem and the returned draws.  ``store_path`` streams the draws into an HDF5 file
(:class:`probdeconv.io.draws.DrawsFile`) instead of memory.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> post = sample(Problem.from_datasets([ds]), method="laplace", num_draws=100)
>>> post.method, post.n_draws
('laplace', 100)
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ..forward.problem import Problem
from ..inference.sampling import sample_draws
from ..inference.start import mask_unexposed
from ..io.draws import DrawsFile
from ..io.memory import USABLE_FRACTION, available_memory, require_memory
from .posterior import Posterior

__all__ = ["sample"]

logger = logging.getLogger(__name__)


def sample(problem: Problem, method: str = "nuts", *,
           store_path: str | os.PathLike | None = None, **options: Any) -> Posterior:
    """Approximate the posterior of ``problem`` with ``method``; returns a :class:`Posterior`.

    Parameters
    ----------
    problem
        A :class:`~probdeconv.forward.problem.Problem`, e.g.
        ``probdeconv.problem_from_dataif([data], bkg_free=True)``.
    method
        One of ``nuts``, ``hmc``, ``svi``, ``laplace``, ``bootstrap``.
    store_path
        HDF5 file to stream the draws into (default: memory).
    **options
        Options of the method (:func:`probdeconv.inference.sampling.sample_draws`), e.g. for
        NUTS ``num_warmup``, ``num_samples``, ``chains``, ``seed``, ``target_accept``,
        ``dense_mass``; ``num_samples`` is also the number of draws of the other methods.

    Raises
    ------
    ParameterError
        Unknown method or option (the message lists the valid options).
    """
    if method == "bootstrap":
        check_bootstrap_memory(problem, options.get("batch", 8))
    if store_path is not None:
        options["backend"] = DrawsFile(store_path)
    problem = mask_unexposed(problem)  # the posterior's maps show them masked too
    draws = sample_draws(problem, method, also_valid=("store_path",), **options)
    return Posterior.from_draws(problem, draws)


def check_bootstrap_memory(problem: Problem, batch: Any) -> None:
    """Refuse a bootstrap ``batch`` whose replicates cannot fit in memory at once.

    Each replicate of a batch holds about five data-space arrays (resampled counts,
    expectation, ratio, ...) and four model-space ones (measured: 4.1-4.5 data-space
    arrays per replicate at NSIDE 4).

    Raises
    ------
    ParameterError
        The estimate exceeds the memory available; the message gives the figure and the
        largest batch that fits.
    """
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        return  # the bootstrap itself names a bad batch
    itemsize = np.dtype(problem.dtype).itemsize
    data_bins = sum(int(np.size(ds.counts)) for ds in problem.datasets)
    model = int(np.prod(problem.model_shape))
    per_replicate = itemsize * (5 * data_bins + 4 * model)
    have = available_memory()
    most = None if have is None else int(USABLE_FRACTION * have // per_replicate)
    fix = ("lower sampling:batch" if not most else
           f"lower sampling:batch to {most} or less")
    require_memory(int(batch) * per_replicate,
                   f"the bootstrap with batch={int(batch)} ({int(batch)} replicates at once x "
                   f"{data_bins} data bins x ~5 arrays, {np.dtype(problem.dtype).name})", fix)
