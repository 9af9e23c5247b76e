"""``ImageDeconvolution``: the cosipy-compatible front door of a MAP imaging run.

Examples
--------
With ``data`` a :class:`~probdeconv.DataIF_COSI_DC2` and ``mask`` a boolean image (or
``None``)::

    from probdeconv import ImageDeconvolution
    deconv = ImageDeconvolution()
    deconv.set_dataset([data]); deconv.set_mask(mask)
    deconv.read_parameterfile("models/rl.yml")
    deconv.override_parameter("deconvolution:parameter:iteration_max = 30")
    deconv.initialize()
    results = deconv.run_deconvolution()
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import Parameters, validate_run_parameters
from ..errors import DataError, ParameterError
from ..histogram import as_histogram
from .allsky_image import AllSkyImageModel
from .map_gradient import MAPGradient
from .map_richardson_lucy import MAP_RichardsonLucy
from .richardson_lucy import RichardsonLucy, RichardsonLucySimple

__all__ = ["ImageDeconvolution"]

logger = logging.getLogger(__name__)


class ImageDeconvolution:
    """Reconstruct all-sky images from COSI data (cosipy's ``ImageDeconvolution`` API)."""

    model_classes = {"AllSkyImage": AllSkyImageModel}
    deconvolution_algorithm_classes = {"RL": RichardsonLucy, "RLsimple": RichardsonLucySimple,
                                       "MAP_RL": MAP_RichardsonLucy, "MAP_gradient": MAPGradient}

    def __init__(self):
        self._dataset = None
        self._mask = None
        self._parameter: Parameters | None = None
        self._initial_model = None
        self._deconvolution = None
        self._validated = None
        self.progress = True

    # ------------------------------------------------------------------ inputs
    def set_dataset(self, dataset) -> None:
        """Set the datasets (a list of data interfaces, fitted jointly)."""
        if not isinstance(dataset, list | tuple):
            dataset = [dataset]
        if not dataset:
            raise DataError("set_dataset: empty list; give one or more DataIF_COSI_DC2.")
        self._dataset = list(dataset)

    def set_mask(self, mask) -> None:
        """Set a boolean mask histogram on the model axes (True = free pixel)."""
        self._mask = None if mask is None else as_histogram(mask)

    def read_parameterfile(self, parameter_filepath) -> None:
        """Read a YAML parameter file (cosipy's layout; validated at :meth:`initialize`)."""
        self._parameter = Parameters.open(Path(parameter_filepath))
        logger.info("parameter file %s read", parameter_filepath)

    def override_parameter(self, *args) -> None:
        """Override parameters: ``"deconvolution:parameter:iteration_max = 30"``."""
        if self._parameter is None:
            raise ParameterError("override_parameter: no parameters yet; call "
                                 "read_parameterfile(path) first.")
        self._parameter.override(*args)

    @property
    def dataset(self):
        return self._dataset

    @property
    def parameter(self) -> Parameters | None:
        return self._parameter

    @property
    def initial_model(self):
        return self._initial_model

    @property
    def mask(self):
        return self._mask

    @property
    def results(self):
        return None if self._deconvolution is None else self._deconvolution.results

    @property
    def deconvolution(self):
        """The algorithm instance registered by :meth:`initialize`."""
        return self._deconvolution

    # ------------------------------------------------------------------ set-up
    def initialize(self) -> None:
        """Validate the parameters, build the initial model and register the algorithm."""
        if self._dataset is None:
            raise DataError("initialize: no dataset; call set_dataset([data]) first.")
        if self._parameter is None:
            raise ParameterError("initialize: no parameters; call read_parameterfile(path) "
                                 "first.")
        self._validated = validate_run_parameters(
            self._parameter, model_classes=list(self.model_classes),
            algorithms={k: v.algorithm_name for k, v in
                        self.deconvolution_algorithm_classes.items()})
        self.model_initialization()
        self.register_deconvolution_algorithm()

    def model_initialization(self) -> bool:
        """Create the model from ``model_definition`` and zero the masked pixels."""
        p = self._validated or self._parameter
        cls = self.model_classes[p["model_definition:class"]]
        model = cls.instantiate_from_parameters(p["model_definition:property"])
        model.set_values_from_parameters(p["model_definition:initialization"])
        axes = self._dataset[0].model_axes
        if tuple(axes.nbins) != tuple(model.axes.nbins):
            data_nside = getattr(axes[0], "nside", None)
            raise DataError(
                f"model_definition:property gives a model of shape {tuple(model.axes.nbins)} "
                f"(NSIDE {model.axes[0].nside}) but the data need {tuple(axes.nbins)} (axes "
                f"{list(axes.labels)}, NSIDE {data_nside} from the "
                f"{'coordinate-conversion matrix' if data_nside else 'response'}); set nside "
                "and energy_edges to those of the data.")
        edges_model = np.asarray(model.axes[1].edges.value)
        edges_data = np.asarray(getattr(axes[1].edges, "value", axes[1].edges))
        if not np.allclose(edges_model, edges_data, rtol=1e-9):
            raise DataError(
                "model_definition:property:energy_edges differ from the response's Ei axis:\n"
                f"  parameter file: {edges_model.tolist()}\n  response: {edges_data.tolist()}")
        if self._mask is not None:
            model = model.mask_pixels(self._mask)
        self._initial_model = model
        return True

    def register_deconvolution_algorithm(self) -> bool:
        """Instantiate the algorithm named in ``deconvolution:algorithm``."""
        p = self._validated or self._parameter
        name = p["deconvolution:algorithm"]
        if name not in self.deconvolution_algorithm_classes:
            raise ParameterError(f"deconvolution:algorithm: {name!r} is not known; valid "
                                 f"choices: {sorted(self.deconvolution_algorithm_classes)}.")
        cls = self.deconvolution_algorithm_classes[name]
        self._deconvolution = cls(self._initial_model, self._dataset, self._mask,
                                  p["deconvolution:parameter"])
        return True

    # ------------------------------------------------------------------ run
    def run_deconvolution(self) -> list[dict]:
        """Run the iterations; returns the per-iteration results (a list of dicts)."""
        if self._deconvolution is None:
            raise ParameterError("run_deconvolution: call initialize() first.")
        algo = self._deconvolution
        logger.info("running %s, at most %d iterations", type(algo).__name__,
                    algo.iteration_max)
        algo.initialization()
        bar = tqdm(total=algo.iteration_max, desc=type(algo).__name__, unit="it",
                   disable=not self.progress, leave=False)
        try:
            while True:
                stop = algo.iteration()
                bar.update(1)
                r = algo.results[-1]
                if "log-likelihood" in r:
                    bar.set_postfix(logL=f"{float(np.sum(r['log-likelihood'])):.6g}",
                                    alpha=f"{float(r.get('alpha', 1.0)):.3g}")
                if stop:
                    break
        finally:
            bar.close()
        algo.finalization()
        return algo.results
