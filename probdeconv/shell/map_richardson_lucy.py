"""``MAP_RichardsonLucy`` (registry name ``MAP_RL``): MAP-EM with priors, a thin shell."""

from __future__ import annotations

import logging
from pathlib import Path

import astropy.units as u
import jax.numpy as jnp
import numpy as np

from .. import priors as pr
from ..algorithms import map_em
from ..errors import ParameterError
from ..histogram import Histogram
from ..io.results import save_histogram_series, save_scalar_tables
from .richardson_lucy import FLUX_UNIT, _EMShell

__all__ = ["MAP_RichardsonLucy"]

logger = logging.getLogger(__name__)


def _value(node, key, default):
    if node is None:
        return default
    v = node.get(key, default) if isinstance(node, dict) else default
    if isinstance(v, dict):
        v = v.get("value", default)
    if isinstance(v, str) and v.strip().lower() in ("inf", ".inf", "+inf"):
        return float("inf")
    return float(v)


class MAP_RichardsonLucy(_EMShell):  # noqa: N801 (cosipy name)
    """MAP Richardson-Lucy with gamma, TSV and entropy priors (cosipy's ``MAP_RL``).

    Parameters (``deconvolution:parameter``): those of ``RLsimple`` plus
    ``response_weighting``, ``acceleration {activate, algorithm: MaxStep|LineSearch|SQUAREM,
    alpha_max}``, ``stopping_criteria {statistics: log-posterior (default) |
    log-likelihood, threshold}`` and ``prior``::

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
    simple = False
    STATISTICS = ("log-posterior", "log-likelihood")

    def __init__(self, initial_model, dataset, mask, parameter):
        super().__init__(initial_model, dataset, mask, parameter)
        p = self.parameter
        self.do_acceleration = bool(p.get("acceleration:activate", False))
        algo = str(p.get("acceleration:algorithm", "classic"))
        if self.do_acceleration and algo == "classic":
            algo = "MaxStep"  # MAP-RL has no cosipy-0.3 acceleration; MaxStep is its analogue
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
        prior = p.get("prior") or {}
        prior = prior.to_dict() if hasattr(prior, "to_dict") else dict(prior)
        self.prior_parameter = prior
        gamma = prior.get("gamma") or {}
        gm, gb = gamma.get("model") or {}, gamma.get("background") or {}
        theta = _value(gm, "theta", float("inf"))
        unit = (gm.get("theta") or {}).get("unit") if isinstance(gm.get("theta"), dict) else None
        if np.isfinite(theta) and unit is not None:
            theta = float((theta * u.Unit(unit)).to_value(FLUX_UNIT))
        self.prior_gamma_model_theta = theta
        self.prior_gamma_model_k = _value(gm, "k", 1.0)
        self.prior_gamma_bkg_theta = _value(gb, "theta", float("inf"))
        self.prior_gamma_bkg_k = _value(gb, "k", 1.0)
        axis = initial_model.axes[0]
        self.priors = pr.build_priors(prior, nside=axis.nside,
                                      nest=bool(getattr(axis, "nest", False)),
                                      model_unit_to_flux=self._to_flux)

    def _options(self):
        return map_em.MAPOptions(weighting=self.do_response_weighting,
                                 acceleration=self.acceleration_algorithm,
                                 optimize_bkg=self.do_bkg_norm_optimization,
                                 prior_names=tuple(self.priors))

    def _build_step(self, options):
        return map_em.build_step(options)

    def initialization(self):
        super().initialization()  # exposure, mask, EM parameters, first expectation
        dt = self._state.model.dtype
        self._map_params = map_em.MAPParams(
            em=self._params, k=jnp.asarray(self.prior_gamma_model_k, dt),
            theta=jnp.asarray(self.prior_gamma_model_theta, dt),
            k_bkg=jnp.asarray(self.prior_gamma_bkg_k, dt),
            theta_bkg=jnp.asarray(self.prior_gamma_bkg_theta, dt),
            priors=tuple(self.priors.values()))
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
        self.log_priors = {k: float(v) for k, v in info.log_prior.items()}
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
        logger.info("iteration %d: log-posterior %.10g, log-likelihood %s, background %s",
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
        return now - before < self.stopping_criteria_threshold

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
