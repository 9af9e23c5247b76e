"""``MAPGradient`` (registry name ``MAP_gradient``): MAP imaging by gradient methods.

A cosipy-style shell over :mod:`probdeconv.inference.map`: it maximises the same
log-posterior as MAP-RL (spec §2: Poisson log-likelihood + gamma prior on the image and,
when they are fitted, on the background normalisations + TSV / entropy priors) with
L-BFGS (default), Adam or NumPyro's AutoDelta SVI, and registers one result per outer
iteration (``optimizer:steps_per_iteration`` optimiser steps each).

Parameters (``deconvolution:parameter``): ``iteration_max``, ``minimum_flux``,
``background_normalization_optimization {activate, range}``, ``prior`` (the MAP_RL subtree:
``TSV {coefficient}``, ``entropy {coefficient, reference}``, ``gamma {model {theta {value,
unit}, k {value}}, background {theta {value}, k {value}}}``), ``optimizer {name: lbfgs |
adam | autodelta, learning_rate, tolerance, steps_per_iteration, memory_size}`` and
``save_results``.  Each result holds ``iteration``, ``model``, ``background_normalization``,
``log-likelihood`` (one per dataset), ``log-prior`` (``{"gamma_model", "gamma_bkg", ["TSV"],
["entropy"]}`` as MAP_RL names them; ``gamma_bkg`` is 0 when the backgrounds are fixed) and
``log-posterior``.

Examples
--------
>>> par = {"iteration_max": 50, "prior": {"TSV": {"coefficient": 1e6}}}  # doctest: +SKIP
>>> algo = MAPGradient(model, [data], None, par)                     # doctest: +SKIP
>>> algo.initialization()                                            # doctest: +SKIP
>>> while not algo.iteration():                                      # doctest: +SKIP
...     pass
>>> algo.results[-1]["log-posterior"]                                # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from histpy import Histogram

from ..errors import DataError
from ..forward.posterior import log_posterior_terms
from ..inference import map as gmap
from ..io.results import save_histogram_series, save_scalar_tables
from .algorithm_base import DeconvolutionAlgorithmBase
from .map_richardson_lucy import posterior_config, read_priors

__all__ = ["MAPGradient"]

logger = logging.getLogger(__name__)

_terms = jax.jit(log_posterior_terms)


class MAPGradient(DeconvolutionAlgorithmBase):
    """Gradient-based MAP (L-BFGS / Adam / AutoDelta) with MAP-RL's priors.

    Parameters
    ----------
    initial_model : AllSkyImageModel
        Starting image.
    dataset : list of DataIF_COSI_DC2
        Fitted jointly.
    mask : Histogram of bool or None
        True marks a free pixel; without one, zero-exposure pixels are masked.
    parameter : dict, Parameters or yayc.Configurator
        ``deconvolution:parameter`` (see the module docstring).
    """

    algorithm_name = "MAP_gradient"

    def __init__(self, initial_model, dataset, mask, parameter):
        super().__init__(initial_model, dataset, mask, parameter)
        self._read_common_parameters()
        p = self.parameter
        self._prior_options = read_priors(self, p["prior"])  # MAP_RL's priors, one parser
        opt = p["optimizer"].to_dict()
        self.optimizer_options = gmap.MAPOptions(optimizer=opt["name"],
                                                 learning_rate=float(opt["learning_rate"]),
                                                 memory_size=int(opt["memory_size"]))
        self.tolerance = float(opt["tolerance"])
        self.steps_per_iteration = int(opt["steps_per_iteration"])
        self.converged = False

    # -------------------------------------------------------------- set-up
    def initialization(self):
        """Forward arrays, automatic mask, priors and the optimiser state."""
        self.iteration_count = 0
        self.results.clear()
        self.converged = False
        self._datasets = self._forward_datasets()
        dtype = self._datasets[0].counts.dtype
        s = np.asarray(sum(np.asarray(d.exposure_map) for d in self.dataset))
        self.summed_exposure_map = Histogram(self.initial_model.axes, contents=s,
                                             unit=self.dataset[0].exposure_map.unit)
        if self.mask is None and np.any(s == 0):
            self.mask = Histogram(self.initial_model.axes, contents=s > 0)
            logger.info("%d zero-exposure pixel(s) masked.", int(np.sum(s == 0)))
        mask = None if self.mask is None else np.asarray(self.mask, dtype=bool)
        self._config = posterior_config(self, self._prior_options,
                                        np.ones(s.shape, bool) if mask is None else mask, dtype)
        model0 = np.asarray(self.initial_model, dtype=np.float64) * self._to_flux
        if mask is not None:
            model0 = np.where(mask, model0, 0.0)
        self._state = gmap.map_init(jnp.asarray(model0, dtype=dtype), None, self._datasets,
                                    self._config, self.optimizer_options,
                                    minimum_flux=self.minimum_flux)
        self._run = gmap.build_run(self.optimizer_options, self.steps_per_iteration)
        self.model = self._as_model(model0)
        logger.info("MAP_gradient: optimiser %s, start log-posterior %.10g",
                    self.optimizer_options.optimizer, float(self._state.log_posterior))

    def pre_processing(self):
        pass

    def Estep(self):  # noqa: N802 (cosipy name)
        """Nothing to do: the expectation is part of each gradient evaluation."""

    def Mstep(self):  # noqa: N802 (cosipy name)
        """Run ``steps_per_iteration`` optimiser steps in one jitted loop (fewer once converged)."""
        self._state, _, _, done, ok = self._run(self._state, self._datasets, self._config,
                                                self.steps_per_iteration, self.tolerance)
        if not bool(ok) and self.optimizer_options.optimizer != "lbfgs":
            raise DataError(f"MAP_gradient: the log-posterior became "
                            f"{float(self._state.log_posterior)} at iteration "
                            f"{self.iteration_count}; lower deconvolution:parameter:optimizer:"
                            f"learning_rate (now {self.optimizer_options.learning_rate}).")
        self.converged = bool(done)

    def post_processing(self):
        """Image, background normalisations and the log-posterior terms as results."""
        image, bkg = gmap.map_values(self._state, self._config)
        terms = _terms(self._datasets, image, bkg, self._config)
        self.model = self._as_model(image)
        for k, v in zip(self.dict_bkg_norm, np.asarray(bkg)):
            self.dict_bkg_norm[k] = float(v)
        self.log_likelihood_list = [float(x) for x in np.asarray(terms.log_likelihood)]
        # Keys as MAP_RL registers them: gamma_model, gamma_bkg (0 when not fitted), priors.
        log_prior = {"gamma_model": 0.0, "gamma_bkg": 0.0}
        log_prior.update({k: float(v) for k, v in terms.log_prior.items()})
        self.log_prior = log_prior
        self.log_posterior = float(terms.total)

    def register_result(self):
        r = {"iteration": self.iteration_count, "model": self.model,
             "background_normalization": dict(self.dict_bkg_norm),
             "log-likelihood": list(self.log_likelihood_list),
             "log-prior": dict(self.log_prior), "log-posterior": self.log_posterior}
        self.results.append(r)
        logger.debug("iteration %d: log-posterior %.10g, log-likelihood %s, background %s",
                     r["iteration"], r["log-posterior"],
                     [f"{x:.10g}" for x in r["log-likelihood"]], r["background_normalization"])

    def check_stopping_criteria(self) -> bool:
        """Stop at ``iteration_max`` or when the optimiser has converged (``tolerance``)."""
        if self.converged:
            logger.info("MAP_gradient converged at iteration %d.", self.iteration_count)
        return self.converged or self.iteration_count >= self.iteration_max

    # -------------------------------------------------------------- checkpoints
    def _state_restored(self) -> None:
        """Image and background norms from the restored optimiser state."""
        image, bkg = gmap.map_values(self._state, self._config)
        self.model = self._as_model(image)
        for k, v in zip(self.dict_bkg_norm, np.asarray(bkg)):
            self.dict_bkg_norm[k] = float(v)
        self.converged = False

    def finalization(self):
        """Save ``model.hdf5`` and ``results.fits`` when ``save_results:activate``."""
        if not self.save_results or not self.results:
            return
        directory = Path(self.save_results_directory)
        logger.info("saving results in %s", directory)
        save_histogram_series(directory / "model.hdf5", self.results, "model",
                              only_final_result=self.save_only_final_result)
        names = [str(d.name) for d in self.dataset]
        save_scalar_tables(directory / "results.fits", self.results,
                           values=[("log-posterior", "LOG-POSTERIOR")],
                           dicts=[("background_normalization", "BKG_NORM"),
                                  ("log-prior", "LOG-PRIOR")],
                           lists=[("log-likelihood", "LOG-LIKELIHOOD", names)])
