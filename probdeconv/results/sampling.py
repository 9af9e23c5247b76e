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

from ..forward.problem import Problem
from ..inference.sampling import sample_draws
from ..io.draws import DrawsFile
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
    if store_path is not None:
        options["backend"] = DrawsFile(store_path)
    draws = sample_draws(problem, method, also_valid=("store_path",), **options)
    return Posterior.from_draws(problem, draws)
