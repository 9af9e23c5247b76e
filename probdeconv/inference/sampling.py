"""``probdeconv.sample``: one entry point for every posterior approximation.

=============  ==========================================  ==============================
method         what                                         module
=============  ==========================================  ==============================
``nuts``       No-U-Turn sampler (NumPyro), chains          :func:`.mcmc.run_mcmc`
``hmc``        fixed-trajectory HMC (NumPyro)               :func:`.mcmc.run_mcmc`
``svi``        AutoNormal / low-rank Gaussian guide (SVI)    :func:`.svi.run_svi`
``laplace``    Gaussian at the mode, Fisher precision       :func:`.laplace.run_laplace`
``bootstrap``  RL on resampled counts                        :func:`.bootstrap.run_bootstrap`
=============  ==========================================  ==============================

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.inference import Problem
>>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> post = sample(Problem.from_datasets([ds]), method="laplace", num_draws=100)
>>> post.method, post.n_draws
('laplace', 100)
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from ..errors import ParameterError
from ..results.posterior import Posterior
from .problem import Problem

__all__ = ["SAMPLING_METHODS", "sample"]

logger = logging.getLogger(__name__)

SAMPLING_METHODS = ("nuts", "hmc", "svi", "laplace", "bootstrap")


def _runner(method: str):
    if method in ("nuts", "hmc"):
        from .mcmc import run_mcmc

        return run_mcmc
    if method == "svi":
        from .svi import run_svi

        return run_svi
    if method == "laplace":
        from .laplace import run_laplace

        return run_laplace
    if method == "bootstrap":
        from .bootstrap import run_bootstrap

        return run_bootstrap
    raise ParameterError(f"method: got {method!r}; valid choices: "
                         f"{', '.join(SAMPLING_METHODS)}.")


def sample(problem: Problem, method: str = "nuts", **options: Any) -> Posterior:
    """Approximate the posterior of ``problem`` with ``method``; returns a :class:`Posterior`.

    Parameters
    ----------
    problem
        A :class:`~.problem.Problem` (e.g. ``Problem.from_dataif([data], bkg_free=True)``).
    method
        One of ``nuts``, ``hmc``, ``svi``, ``laplace``, ``bootstrap``.
    **options
        Options of the method's runner, e.g. for NUTS ``num_warmup``, ``num_samples``,
        ``chains``, ``seed``, ``target_accept``, ``dense_mass``; ``num_samples`` is also
        accepted for the other methods (their number of draws).

    Raises
    ------
    ParameterError
        Unknown method or option (the message lists the valid options).
    """
    if not isinstance(problem, Problem):
        raise ParameterError(f"sample: problem is a {type(problem).__name__}; build one with "
                             "probdeconv.inference.Problem.from_dataif([data], ...).")
    run = _runner(method)
    if method in ("nuts", "hmc"):
        options["method"] = method
    elif "num_samples" in options:
        options["num_draws"] = options.pop("num_samples")
    valid = set(inspect.signature(run).parameters) - {"problem", "prepare_options"}
    if method != "bootstrap":
        from .latent import prepare

        valid |= set(inspect.signature(prepare).parameters) - {"problem", "full"}
        if method == "laplace":
            valid -= {"precondition"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ParameterError(f"sample(method={method!r}): unknown option(s) {unknown}; valid: "
                             f"{', '.join(sorted(valid))}.")
    logger.info("sampling with %s: %s", method,
                {k: v for k, v in options.items() if k != "start"})
    return run(problem, **options)
