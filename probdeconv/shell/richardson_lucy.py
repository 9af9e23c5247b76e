"""cosipy-compatible Richardson-Lucy classes, thin shells over :mod:`.em`.

``RichardsonLucySimple`` (registry name ``RLsimple``) and ``RichardsonLucy`` (``RL``)
read their parameters once, build the forward-model arrays of every dataset, and then
run one jitted :func:`probdeconv.algorithms.em.step` per iteration (in ``Mstep``);
``post_processing`` only turns the step's outputs into histograms for the results.
"""

from __future__ import annotations

import logging
from pathlib import Path

import astropy.units as u
import jax.numpy as jnp
import numpy as np
from histpy import Histogram

from ..algorithms import em
from ..algorithms.accelerate import REGISTRY, resolve_accelerator
from ..algorithms.stopping import gain_below
from ..errors import DataError
from ..io.results import save_histogram_series, save_scalar_tables
from .algorithm_base import DeconvolutionAlgorithmBase
from .smoothing import fwhm_per_energy

__all__ = ["RichardsonLucySimple", "RichardsonLucy", "RichardsonLucyBasic",
           "RichardsonLucyAdvanced"]

logger = logging.getLogger(__name__)



class EMShell(DeconvolutionAlgorithmBase):
    """Shared shell of the EM family: parameters → :class:`em.EMOptions` / ``EMParams``."""

    simple = True
    uses_bkg_walk = False  # MAP_RL: the smoothness prior between background time nodes

    def __init__(self, initial_model, dataset, mask, parameter):
        super().__init__(initial_model, dataset, mask, parameter)
        self._read_common_parameters()
        if self.bkg_nodes.smoothness and not self.uses_bkg_walk:
            logger.warning("%s: background_normalization_optimization:smoothness is a prior; "
                           "%s maximises the likelihood and ignores it (MAP_RL, MAP_gradient "
                           "and the samplers use it).", self.algorithm_name, self.algorithm_name)
        p = self.parameter
        self.do_response_weighting = bool(p.get("response_weighting:activate", False))
        self.response_weighting_index = float(p.get("response_weighting:index", 0.5))
        self.do_smoothing = False
        self.smoothing_fwhm = 0.0 * u.deg
        self.do_acceleration = False
        self.acceleration_algorithm = "none"
        self.alpha_max = 1.0

    # -------------------------------------------------------------- set-up
    def _options(self) -> em.EMOptions:
        return em.EMOptions(simple=self.simple, weighting=self.do_response_weighting,
                            smoothing=self.do_smoothing,
                            acceleration=self.acceleration_algorithm if self.do_acceleration
                            else "none",
                            optimize_bkg=self.do_bkg_norm_optimization,
                            nest=bool(getattr(self.initial_model.axes[0], "is_nested", False)))

    def _build_step(self, options):
        return em.build_step(options)

    def _model_values(self, model) -> jnp.ndarray:
        return jnp.asarray(np.asarray(model, dtype=np.float64) * self._to_flux,
                           dtype=self._datasets[0].counts.dtype)

    def initialization(self):
        """Exposure map, automatic mask, weighting filter and the first expectation."""
        self.iteration_count = 0
        self.results.clear()
        self._datasets = self._forward_datasets()
        self._options_ = self._options()
        self._step = self._build_step(self._options_)
        model0 = self._model_values(self.initial_model)
        s = np.asarray(sum(np.asarray(d.exposure_map) for d in self.dataset))
        self.summed_exposure_map = Histogram(self.initial_model.axes, contents=s,
                                             unit=self.dataset[0].exposure_map.unit)
        model = model0
        if self.mask is None and np.any(s == 0):
            self.mask = Histogram(self.initial_model.axes, contents=s > 0)
            model = jnp.where(jnp.asarray(s > 0), model0, 0.0)
            logger.info("%d zero-exposure pixel(s) masked.", int(np.sum(s == 0)))
        mask = None if self.mask is None else np.asarray(self.mask, dtype=bool)
        keys = list(self.dict_bkg_norm)
        self._params = em.make_params(
            self._datasets, self._options_, mask=mask,
            weighting_index=self.response_weighting_index,
            bkg_range=np.array([self.dict_bkg_norm_range[k] for k in keys]).reshape(-1, 2),
            alpha_max=self.alpha_max, minimum_flux=self.minimum_flux,
            smoothing_fwhm_rad=np.asarray(self.smoothing_fwhm.to_value(u.rad)), n_bkg=len(keys),
            exposure=jnp.asarray(s, dtype=self._datasets[0].counts.dtype))
        if self.do_response_weighting:
            self.response_weighting_filter = np.asarray(self._params.weight)
        bkg = jnp.asarray([self.dict_bkg_norm[k] for k in keys], dtype=model.dtype)
        acc = REGISTRY.get(self._options_.acceleration)
        if acc is not None and acc.masked_start:
            # these move along masked directions with E linear in the step: start masked
            model = jnp.where(self._params.mask, model, 0.0)
            model0 = model
        # The first expectation is that of the model as given (cosipy does the same).
        first = em.init(model0, bkg, self._datasets, self._params)
        self._state = first._replace(model=model)
        self.model = self._as_model(model)
        if self.do_bkg_norm_optimization:
            self.dict_summed_bkg_model = {k: float(v) for k, v in
                                          zip(keys, np.asarray(self._params.summed_bkg))}

    def pre_processing(self):
        pass

    def Estep(self):  # noqa: N802
        """Part of the jitted step (RLsimple recomputes E there; RL reuses the last one)."""

    def Mstep(self):  # noqa: N802
        """Run one whole jitted EM step (E-step, M-step and filters) on the arrays."""
        self._state, self._info = self._step(self._state, self._datasets, self._params)

    def post_processing(self):
        """Convert the step's arrays to the histograms and numbers that are registered."""
        st, info = self._state, self._info
        self.model = self._as_model(st.model)
        self.delta_model = self._as_model(info.delta)
        self.processed_delta_model = self._as_model(info.processed_delta)
        self.alpha = float(info.alpha)
        for k, v in zip(self.dict_bkg_norm, np.asarray(st.bkg_norm)):
            self.dict_bkg_norm[k] = float(v)
        self.log_likelihood_list = [float(x) for x in np.asarray(info.loglik)]

    def _result(self) -> dict:
        return {"iteration": self.iteration_count, "model": self.model,
                "delta_model": self.delta_model,
                "background_normalization": dict(self.dict_bkg_norm),
                "log-likelihood": list(self.log_likelihood_list)}

    def register_result(self):
        r = self._result()
        self.results.append(r)
        logger.debug("iteration %d: log-likelihood %s, background %s", r["iteration"],
                     [f"{x:.10g}" for x in r["log-likelihood"]], r["background_normalization"])

    def check_stopping_criteria(self) -> bool:
        return self.iteration_count >= self.iteration_max

    # -------------------------------------------------------------- checkpoints
    def _describe_state_entry(self, name: str) -> str:
        if name.startswith("sky") and name[3:].isdigit():
            return f"expectation of dataset {name[3:]}"
        return {"model": "image", "bkg_norm": "background normalisations"}.get(
            name, super()._describe_state_entry(name))

    def _state_restored(self) -> None:
        """Image and background norms from the restored :class:`em.EMState`."""
        for k, v in zip(self.dict_bkg_norm, np.asarray(self._state.bkg_norm)):
            self.dict_bkg_norm[k] = float(v)
        self.model = self._as_model(self._state.model)

    # -------------------------------------------------------------- saving
    _histogram_keys: tuple[str, ...] = ("model", "delta_model")
    _value_keys: tuple[tuple[str, str], ...] = ()

    def finalization(self):
        if not self.save_results or not self.results:
            return
        directory = Path(self.save_results_directory)
        logger.info("saving results in %s", directory)
        for key in self._histogram_keys:
            save_histogram_series(directory / f"{key}.hdf5", self.results, key,
                                  only_final_result=self.save_only_final_result)
        names = [str(d.name) for d in self.dataset]
        save_scalar_tables(directory / "results.fits", self.results, values=self._value_keys,
                           dicts=[("background_normalization", "BKG_NORM")],
                           lists=[("log-likelihood", "LOG-LIKELIHOOD", names)])


class RichardsonLucySimple(EMShell):
    """Plain Richardson-Lucy (EM): the expectation is recomputed every iteration.

    Parameters (``deconvolution:parameter``): ``iteration_max``, ``minimum_flux``,
    ``background_normalization_optimization {activate, range}``, ``save_results``.
    The log-likelihood never decreases (a property the tests check).
    """

    algorithm_name = "RLsimple"
    simple = True


class RichardsonLucy(EMShell):
    """Accelerated Richardson-Lucy (Knödlseder+1999/2005, Siegert+2020), as cosipy's ``RL``.

    Adds to ``RLsimple``: ``acceleration {activate, alpha_max}``, ``response_weighting
    {activate, index}``, ``smoothing {activate, FWHM}`` and ``stopping_criteria
    {statistics: log-likelihood, threshold, relative}``.  One iteration costs one forward
    and one back projection.
    """

    algorithm_name = "RL"
    simple = False
    _histogram_keys = ("model", "delta_model", "processed_delta_model")
    _value_keys = (("alpha", "ALPHA"),)

    def __init__(self, initial_model, dataset, mask, parameter):
        super().__init__(initial_model, dataset, mask, parameter)
        p = self.parameter
        self.do_acceleration = bool(p.get("acceleration:activate", False))
        self.acceleration_algorithm = resolve_accelerator(
            str(p.get("acceleration:algorithm", "classic")), self.algorithm_name,
            key="deconvolution:parameter:acceleration:algorithm")
        self.alpha_max = float(p.get("acceleration:alpha_max", 1.0)) if self.do_acceleration \
            else 1.0
        self.do_smoothing = bool(p.get("smoothing:activate", False))
        if self.do_smoothing:
            # one width, one per energy bin, or a table of width against energy
            self.smoothing_fwhm = fwhm_per_energy(
                p["smoothing:FWHM"], self.initial_model.axes[1],
                "deconvolution:parameter:smoothing:FWHM")
        self.stopping_criteria_statistics = p.get("stopping_criteria:statistics",
                                                  "log-likelihood")
        self.stopping_criteria_threshold = float(p.get("stopping_criteria:threshold", 1e-2))
        self.stopping_criteria_relative = bool(p.get("stopping_criteria:relative", False))

    def _result(self) -> dict:
        r = super()._result()
        r["processed_delta_model"] = self.processed_delta_model
        r["alpha"] = self.alpha
        return r

    def calc_alpha(self, delta_model, model) -> float:
        """Acceleration parameter for a step ``delta_model`` from ``model`` (cosipy's method).

        The largest ``α`` keeping every unmasked pixel of ``model + α delta_model``
        non-negative, within ``[1, alpha_max]``; the iterations compute the same inside
        their compiled step.
        """
        delta = np.asarray(delta_model, dtype=np.float64)
        values = np.asarray(model, dtype=np.float64)
        if delta.shape != values.shape:
            raise DataError(f"calc_alpha: delta_model has shape {delta.shape} but model "
                            f"{values.shape}; pass two maps on the same axes.")
        mask = np.ones(values.shape, bool) if self.mask is None else \
            np.asarray(self.mask, dtype=bool)
        return float(em.calc_alpha(jnp.asarray(values), jnp.asarray(delta),
                                   jnp.asarray(mask), jnp.asarray(self.alpha_max)))

    def check_stopping_criteria(self) -> bool:
        """Never at iteration 1; at ``iteration_max``; or when the gain is below threshold.

        The gain is that of the log-likelihood in one iteration, divided by its absolute
        value when ``stopping_criteria:relative`` (:mod:`probdeconv.algorithms.stopping`).
        """
        if self.iteration_count == 1:
            return self.iteration_max <= 1
        if self.iteration_count >= self.iteration_max:
            return True
        now = float(np.sum(self.results[-1]["log-likelihood"]))
        before = float(np.sum(self.results[-2]["log-likelihood"]))
        if now - before < 0:
            logger.warning("iteration %d: the log-likelihood decreased by %.4g; the "
                           "reconstruction may be unstable.", self.iteration_count, before - now)
            return False
        return gain_below(now, before, self.stopping_criteria_threshold,
                          self.stopping_criteria_relative)


class RichardsonLucyBasic(RichardsonLucySimple):
    """cosipy 0.4's ``RLbasic``: :class:`RichardsonLucySimple` without background fitting.

    Its parameters are ``iteration_max``, ``minimum_flux`` and ``save_results``; other keys
    are ignored with a warning, as cosipy ignores them.
    """

    parameter_schema = "RLbasic"


class RichardsonLucyAdvanced(RichardsonLucy):
    """cosipy 0.4's ``RLadvanced``: :class:`RichardsonLucy` with cosipy 0.4's parameters.

    ``acceleration: {activate, algorithm, accel_factor_max}``: ``algorithm: MaxStep``
    (cosipy's default) is probdeconv's ``classic`` step, ``accel_factor_max`` (default 10)
    is ``alpha_max``.
    """

    parameter_schema = "RLadvanced"
