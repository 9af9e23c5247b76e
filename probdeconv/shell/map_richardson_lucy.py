"""``MAP_RichardsonLucy`` (registry name ``MAP_RL``): MAP-EM with priors, a thin shell."""

from __future__ import annotations

import logging
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from histpy import Histogram

from ..algorithms import map_em
from ..algorithms.accelerate import resolve_accelerator
from ..algorithms.stopping import gain_below
from ..config.priors import MAP_KEYS, prior_options
from ..errors import ParameterError
from ..forward.posterior import make_config
from ..io.results import save_histogram_series, save_scalar_tables
from .richardson_lucy import EMShell

__all__ = ["MAP_RichardsonLucy"]

logger = logging.getLogger(__name__)


PRIOR_PATH = "deconvolution:parameter:prior"


def _nest(axis) -> bool:
    return bool(getattr(axis, "is_nested", getattr(axis, "nest", False)))


def posterior_config(shell, prior_opts: dict, mask: np.ndarray, dtype):
    """The posterior configuration of a MAP shell: its priors (``prior_opts`` from
    :func:`~probdeconv.config.priors.prior_options`), mask and background fitting."""
    keys = list(shell.dict_bkg_norm)
    try:
        return make_config(
            mask.shape, n_bkg=len(keys), mask=mask, bkg_free=shell.do_bkg_norm_optimization,
            bkg_norm=[shell.dict_bkg_norm[k] for k in keys],
            bkg_range=np.array([shell.dict_bkg_norm_range[k] for k in keys]).reshape(-1, 2),
            bkg_walk=shell.bkg_nodes.walk(dtype), dtype=dtype, **prior_opts)
    except ParameterError as exc:
        raise ParameterError(f"deconvolution:parameter: {exc}") from exc


def read_priors(shell, prior) -> dict:
    """``make_config`` options of a MAP shell's ``prior`` parameters (the one parser)."""
    prior = prior.to_dict() if hasattr(prior, "to_dict") else dict(prior or {})
    shell.prior_parameter = prior
    axis = shell.initial_model.axes[0]
    return prior_options(prior, bkg_names=list(shell.dict_bkg_norm), nside=int(axis.nside),
                         nest=_nest(axis), model_unit_to_flux=shell._to_flux,
                         path=PRIOR_PATH, keys=MAP_KEYS)


class MAP_RichardsonLucy(EMShell):  # noqa: N801 (cosipy name)
    """MAP Richardson-Lucy with gamma, TSV and entropy priors (cosipy's ``MAP_RL``).

    Parameters (``deconvolution:parameter``): those of ``RLsimple`` plus
    ``response_weighting``, ``acceleration {activate, algorithm: MaxStep|LineSearch|SQUAREM,
    alpha_max}``, ``stopping_criteria {statistics: log-posterior (default) |
    log-likelihood, threshold, relative}`` and ``prior``::

        prior:
          TSV: {coefficient: 1.0e+6}
          entropy: {coefficient: 1.0, reference: {value: 1.0e-4}}
          gamma:
            model: {theta: {value: .inf, unit: "cm-2 s-1 sr-1"}, k: {value: 0.999}}
            background: {theta: {value: .inf}, k: {value: 1.0}}

    Each iteration registers ``iteration, model, prior_filter, background_normalization,
    log-likelihood, log-prior, log-posterior``.
    """

    algorithm_name = "MAP_RL"
    uses_bkg_walk = True
    simple = False
    STATISTICS = ("log-posterior", "log-likelihood")

    def __init__(self, initial_model, dataset, mask, parameter):
        super().__init__(initial_model, dataset, mask, parameter)
        p = self.parameter
        self.do_acceleration = bool(p.get("acceleration:activate", False))
        # "classic" (cosipy's default) runs MaxStep, its MAP analogue (accelerate.REGISTRY)
        algo = resolve_accelerator(str(p.get("acceleration:algorithm", "classic")),
                                   self.algorithm_name,
                                   key="deconvolution:parameter:acceleration:algorithm")
        self.acceleration_algorithm = algo if self.do_acceleration else "none"
        self.alpha_max = float(p.get("acceleration:alpha_max", 1.0)) if self.do_acceleration \
            else 1.0
        self.stopping_criteria_statistics = p.get("stopping_criteria:statistics",
                                                  "log-posterior")
        if self.stopping_criteria_statistics not in self.STATISTICS:
            raise ParameterError(
                "deconvolution:parameter:stopping_criteria:statistics: "
                f"{self.stopping_criteria_statistics!r} is not known; valid choices: "
                f"{list(self.STATISTICS)}.")
        self.stopping_criteria_threshold = float(p.get("stopping_criteria:threshold", 1e-2))
        self.stopping_criteria_relative = bool(p.get("stopping_criteria:relative", False))
        self._prior_options = read_priors(self, p.get("prior"))
        self.prior_gamma_model_k, self.prior_gamma_model_theta = self._prior_options["gamma"]
        self.prior_gamma_bkg_k, self.prior_gamma_bkg_theta = self._prior_options["bkg_gamma"]
        self.priors = self._prior_options["priors"]

    def _options(self):
        return map_em.MAPOptions(weighting=self.do_response_weighting,
                                 acceleration=self.acceleration_algorithm)

    def _build_step(self, options):
        return map_em.build_step(options)

    def initialization(self):
        super().initialization()  # exposure, mask, EM parameters, first expectation
        self.posterior = posterior_config(self, self._prior_options,
                                          np.asarray(self._params.mask, dtype=bool),
                                          self._state.model.dtype)
        self._map_params = map_em.MAPParams(em=self._params, posterior=self.posterior)
        if self.acceleration_algorithm != "none":
            model = jnp.where(self._params.mask, self._state.model, 0.0)
            self._state = map_em.init(model, self._state.bkg_norm, self._datasets,
                                      self._map_params)

    def Mstep(self):  # noqa: N802
        """One jitted MAP-EM step."""
        self._state, self._info = self._step(self._state, self._datasets, self._map_params)

    def post_processing(self):
        st, info = self._state, self._info
        self.model = self._as_model(st.model)
        self.prior_filter = Histogram(self.initial_model.axes,
                                      contents=np.asarray(info.prior_filter))
        self.alpha = float(info.alpha)
        for k, v in zip(self.dict_bkg_norm, np.asarray(st.bkg_norm)):
            self.dict_bkg_norm[k] = float(v)
        self.log_likelihood_list = [float(x) for x in np.asarray(info.loglik)]
        # cosipy's keys: gamma_model, gamma_bkg (0 when the backgrounds are fixed), priors
        self.log_priors = {"gamma_model": 0.0, "gamma_bkg": 0.0}
        self.log_priors.update({k: float(v) for k, v in info.log_prior.items()})
        self.log_posterior = float(info.log_posterior)

    def _result(self) -> dict:
        return {"iteration": self.iteration_count, "model": self.model,
                "prior_filter": self.prior_filter,
                "background_normalization": dict(self.dict_bkg_norm),
                "log-likelihood": list(self.log_likelihood_list),
                "log-prior": dict(self.log_priors), "log-posterior": self.log_posterior,
                "alpha": self.alpha}

    def register_result(self):
        r = self._result()
        self.results.append(r)
        logger.debug("iteration %d: log-posterior %.10g, log-likelihood %s, background %s",
                     r["iteration"], r["log-posterior"], r["log-likelihood"],
                     r["background_normalization"])

    def check_stopping_criteria(self) -> bool:
        if self.iteration_count == 1:
            return self.iteration_max <= 1
        if self.iteration_count >= self.iteration_max:
            return True
        if self.stopping_criteria_statistics == "log-likelihood":
            now = float(np.sum(self.results[-1]["log-likelihood"]))
            before = float(np.sum(self.results[-2]["log-likelihood"]))
        else:
            now, before = self.results[-1]["log-posterior"], self.results[-2]["log-posterior"]
        if now - before < 0:
            logger.warning("iteration %d: the %s decreased by %.4g; the reconstruction may be "
                           "unstable.", self.iteration_count, self.stopping_criteria_statistics,
                           before - now)
            return False
        return gain_below(now, before, self.stopping_criteria_threshold,
                          self.stopping_criteria_relative)

    def finalization(self):
        if not self.save_results or not self.results:
            return
        directory = Path(self.save_results_directory)
        for key in ("model", "prior_filter"):
            save_histogram_series(directory / f"{key}.hdf5", self.results, key,
                                  only_final_result=self.save_only_final_result)
        save_scalar_tables(directory / "results.fits", self.results,
                           values=[("log-posterior", "LOG-POSTERIOR")],
                           dicts=[("background_normalization", "BKG_NORM"),
                                  ("log-prior", "LOG-PRIOR")],
                           lists=[("log-likelihood", "LOG-LIKELIHOOD",
                                   [str(d.name) for d in self.dataset])])
