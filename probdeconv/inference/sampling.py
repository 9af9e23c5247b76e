"""One entry point for every posterior approximation: :func:`sample_draws` returns plain draws.

=============  ==========================================  ==============================
method         what                                         module
=============  ==========================================  ==============================
``nuts``       No-U-Turn sampler (NumPyro), chains          :func:`.mcmc.run_mcmc`
``hmc``        fixed-trajectory HMC (NumPyro)               :func:`.mcmc.run_mcmc`
``svi``        AutoNormal / low-rank Gaussian guide (SVI)    :func:`.svi.run_svi`
``laplace``    Gaussian at the mode, Fisher precision       :func:`.laplace.run_laplace`
``bootstrap``  RL on resampled counts                        :func:`.bootstrap.run_bootstrap`
``mgvi``       metric Gaussian VI (Fisher metric, CG)       :func:`.mgvi.run_mgvi`
=============  ==========================================  ==============================

With ``image_prior: field`` (:mod:`probdeconv.forward.field`) ``nuts``, ``svi``,
``laplace`` and ``mgvi`` run in the field's standardised coordinates
(:mod:`.field_runs`, :func:`.mgvi.run_mgvi`); ``hmc`` and ``bootstrap`` are refused.

``probdeconv.sample`` (:func:`probdeconv.results.sampling.sample`) calls it and returns a
:class:`~probdeconv.results.posterior.Posterior`.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> draws = sample_draws(Problem.from_datasets([ds]), method="laplace", num_draws=100)
>>> draws.method, draws.store.n_draws
('laplace', 100)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

from ..errors import ParameterError
from ..forward.problem import Problem
from .bootstrap import run_bootstrap
from .draws import Draws
from .field_runs import run_field_laplace, run_field_nuts, run_field_svi
from .laplace import run_laplace
from .mcmc import run_mcmc
from .mgvi import run_mgvi
from .start import mask_unexposed, prepare
from .svi import run_svi

__all__ = ["SAMPLING_METHODS", "sampler_options", "sample_draws"]

logger = logging.getLogger(__name__)

SAMPLING_METHODS = ("nuts", "hmc", "svi", "laplace", "bootstrap", "mgvi")
_RUNNERS = {"nuts": run_mcmc, "hmc": run_mcmc, "svi": run_svi, "laplace": run_laplace,
            "bootstrap": run_bootstrap, "mgvi": run_mgvi}
_FIELD_RUNNERS = {"nuts": run_field_nuts, "svi": run_field_svi, "laplace": run_field_laplace,
                  "mgvi": run_mgvi}


def sampler_options(method: str, field: bool = False) -> set[str]:
    """The options ``method`` accepts (its runner's and, but for the bootstrap and the
    field prior's runners, the start's).

    Raises
    ------
    ParameterError
        Unknown method (or one the field prior does not offer, ``field=True``).
    """
    runners = _FIELD_RUNNERS if field else _RUNNERS
    if method not in runners:
        raise ParameterError(f"method: got {method!r}; valid choices"
                             f"{' with image kind field' if field else ''}: "
                             f"{', '.join(runners)}.")
    skip = {"problem", "prepare_options", "method"} | ({"start"} if field else set())
    valid = set(inspect.signature(runners[method]).parameters) - skip
    if field:
        return valid
    if method != "bootstrap":
        valid |= set(inspect.signature(prepare).parameters) - {"problem", "full"}
        if method == "laplace":
            valid -= {"precondition"}
    return valid


def sample_draws(problem: Problem, method: str = "nuts", *, also_valid: Sequence[str] = (),
                 **options: Any) -> Draws:
    """Approximate the posterior of ``problem`` with ``method``; returns its :class:`Draws`.

    Parameters
    ----------
    problem
        A :class:`~probdeconv.forward.problem.Problem`.
    method
        One of ``nuts``, ``hmc``, ``svi``, ``laplace``, ``bootstrap``, ``mgvi``.
    also_valid
        Option names the caller handled itself (listed in the message about unknown ones).
    **options
        Options of the method's runner, e.g. for NUTS ``num_warmup``, ``num_samples``,
        ``chains``, ``seed``, ``target_accept``, ``dense_mass``; ``num_samples`` is also
        accepted for the other methods (their number of draws).

    Free pixels without exposure are masked first under an improper image prior
    (:func:`~.start.mask_unexposed`).

    Raises
    ------
    ParameterError
        Unknown method or option (the message lists the valid options).
    """
    if not isinstance(problem, Problem):
        raise ParameterError(f"sample: problem is a {type(problem).__name__}; build one with "
                             "probdeconv.problem_from_dataif([data], ...) or "
                             "Problem.from_datasets(...).")
    field = problem.config.image_prior == "field"
    valid = sampler_options(method, field)
    if method in ("nuts", "hmc") and not field:
        options["method"] = method
        valid.add("method")
    elif "num_samples" in options and "num_samples" not in valid:
        options["num_draws"] = options.pop("num_samples")
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ParameterError(f"sample(method={method!r}): unknown option(s) {unknown}; valid: "
                             f"{', '.join(sorted((valid - {'method'}) | set(also_valid)))}.")
    logger.info("sampling with %s: %s", method,
                {k: v for k, v in options.items() if k != "start"})
    return (_FIELD_RUNNERS if field else _RUNNERS)[method](mask_unexposed(problem), **options)
