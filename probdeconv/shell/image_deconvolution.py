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

:meth:`ImageDeconvolution.run_deconvolution` is the one iteration loop of probdeconv (the
command line's ``probdeconv run`` calls it too): a progress bar and a log line per
iteration, optional atomic checkpoints and a bit-for-bit resume::

    deconv.run_deconvolution(checkpoint="out/checkpoint.npz", checkpoint_every=5)
    # ... interrupted (Ctrl-C, SIGKILL): the last checkpoint is intact
    deconv.initialize()
    deconv.run_deconvolution(checkpoint="out/checkpoint.npz", resume=True)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import Parameters, validate_run_parameters
from ..errors import DataError, FileFormatError, ModelTypeError, ParameterError
from ..io.checkpoint import array_fingerprint, read_checkpoint
from .allsky_image import AllSkyImageModel
from .checks import check_finite_iteration, check_model_grid, validate_mask
from .data_collection import DataInterfaceCollection
from .map_gradient import MAPGradient
from .map_richardson_lucy import MAP_RichardsonLucy
from .richardson_lucy import (
    RichardsonLucy,
    RichardsonLucyAdvanced,
    RichardsonLucyBasic,
    RichardsonLucySimple,
)
from .run_checks import log_run_checks

__all__ = ["ImageDeconvolution"]

logger = logging.getLogger(__name__)

# what every data interface has (cosipy's ImageDeconvolutionDataInterfaceBase)
DATAIF_MEMBERS = ("calc_expectation", "calc_T_product", "calc_log_likelihood",
                  "keys_bkg_models", "exposure_map", "model_axes")
# parameters a resume may change: everything else must match the checkpoint's
RESUMABLE_CHANGES = ("deconvolution:parameter:iteration_max",
                     "deconvolution:parameter:stopping_criteria",
                     "deconvolution:parameter:save_results")


class ImageDeconvolution:
    """Reconstruct all-sky images from COSI data (cosipy's ``ImageDeconvolution`` API)."""

    model_classes = {"AllSkyImage": AllSkyImageModel}
    deconvolution_algorithm_classes = {"RL": RichardsonLucy, "RLsimple": RichardsonLucySimple,
                                       "MAP_RL": MAP_RichardsonLucy, "MAP_gradient": MAPGradient,
                                       # cosipy 0.4's names
                                       "RLbasic": RichardsonLucyBasic,
                                       "RLadvanced": RichardsonLucyAdvanced}

    def __init__(self):
        self._dataset = None
        self._mask = None
        self._parameter: Parameters | None = None
        self._initial_model = None
        self._deconvolution = None
        self._validated = None
        # options of run_deconvolution (keyword arguments of the call override them)
        self.progress = True
        self.checkpoint: str | os.PathLike | None = None
        self.checkpoint_every = 5
        self.resume = False
        self.callback: Callable | None = None

    # ------------------------------------------------------------------ inputs
    def set_dataset(self, dataset) -> None:
        """Set the datasets (a list of data interfaces or a DataInterfaceCollection)."""
        if isinstance(dataset, DataInterfaceCollection):  # cosipy 0.4
            dataset = dataset.dataset
        if not isinstance(dataset, list | tuple):
            dataset = [dataset]
        if not dataset:
            raise DataError("set_dataset: empty list; give one or more DataIF_COSI_DC2.")
        for i, d in enumerate(dataset):
            missing = [m for m in DATAIF_MEMBERS if not hasattr(d, m)]
            if missing:
                raise ModelTypeError(
                    f"set_dataset: item {i} is a {type(d).__name__} ({d!r:.60}); expected a "
                    f"data interface (e.g. DataIF_COSI_DC2.load(...)), which has {missing[0]}. "
                    "Pass a list of data interfaces.")
        self._dataset = list(dataset)

    def set_mask(self, mask) -> None:
        """Set a boolean mask histogram on the model axes (True = free pixel)."""
        self._mask = validate_mask(mask, None, "set_mask")

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

    @parameter.setter
    def parameter(self, value) -> None:
        """Set the whole parameter tree (a :class:`Parameters`, dict or yayc Configurator)."""
        self._parameter = value if isinstance(value, Parameters) else Parameters(value)

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
        if axes.shape != model.axes.shape:
            data_nside = getattr(axes[0], "nside", None)
            raise DataError(
                f"model_definition:property gives a model of shape {model.axes.shape} "
                f"(NSIDE {model.axes[0].nside}) but the data need {axes.shape} (axes "
                f"{axes.labels.tolist()}, NSIDE {data_nside} from the "
                f"{'coordinate-conversion matrix' if data_nside else 'response'}); set nside "
                "and energy_edges to those of the data.")
        edges_model = np.asarray(model.axes[1].edges.value)
        edges_data = np.asarray(getattr(axes[1].edges, "value", axes[1].edges))
        if not np.allclose(edges_model, edges_data, rtol=1e-9):
            raise DataError(
                "model_definition:property:energy_edges differ from the response's Ei axis:\n"
                f"  parameter file: {edges_model.tolist()}\n  response: {edges_data.tolist()}")
        check_model_grid(model.axes[0], axes[0])
        if self._mask is not None:
            self._mask = validate_mask(self._mask, model.axes, "set_mask")
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
        data = self._dataset
        sources = p.get("model_definition:point_sources")
        base = getattr(p, "path", None)  # a catalogue path is relative to the parameter file
        if isinstance(sources, str) and base and not Path(sources).is_absolute():
            sources = str(Path(base).parent / sources)
        if sources is not None:  # point sources beside the image: fluxes fitted per Ei bin
            data = [d.with_point_sources(sources) for d in data]
        self._deconvolution = cls(self._initial_model, data, self._mask,
                                  p["deconvolution:parameter"])
        return True

    # ------------------------------------------------------------------ run
    def run_deconvolution(self, *, checkpoint: str | os.PathLike | None = None,
                          checkpoint_every: int | None = None, resume: bool | None = None,
                          progress: bool | None = None,
                          callback: Callable | None = None) -> list[dict]:
        """Run the iterations; returns the per-iteration results (a list of dicts).

        Without arguments this is cosipy's ``run_deconvolution``: ``initialization()``,
        ``iteration()`` until it returns True, ``finalization()``.  Each option defaults to
        the attribute of the same name, so it can also be set before the call.

        Parameters
        ----------
        checkpoint
            File to write the exact iteration state to (atomically): every
            ``checkpoint_every`` iterations and at the last one.  ``None``: no checkpoints.
        checkpoint_every
            Iterations between checkpoints (default 5).
        resume
            Continue from ``checkpoint`` instead of the initial model; the final image is
            bit for bit that of an uninterrupted run.  Results of the iterations before
            the checkpoint hold their scalars only (no maps).
        progress
            Show a progress bar (a log line per iteration is written either way).
        callback
            ``callback(algorithm)`` after each iteration (and its checkpoint);
            ``algorithm.results[-1]`` is the iteration's result.  An exception it raises
            ends the run; a ``KeyboardInterrupt`` leaves the last checkpoint intact.

        Raises
        ------
        ParameterError
            ``initialize()`` was not called, ``resume`` without ``checkpoint``, or
            ``checkpoint_every < 1``.
        FileFormatError
            ``resume`` and no usable checkpoint (missing, of another algorithm, data or
            options).
        """
        if self._deconvolution is None:
            raise ParameterError("run_deconvolution: call initialize() first.")
        checkpoint = self.checkpoint if checkpoint is None else checkpoint
        every = int(self.checkpoint_every if checkpoint_every is None else checkpoint_every)
        resume = self.resume if resume is None else resume
        progress = self.progress if progress is None else progress
        callback = self.callback if callback is None else callback
        if every < 1:
            raise ParameterError(f"run_deconvolution: checkpoint_every={every}; expected an "
                                 "integer >= 1 (iterations between checkpoints).")
        if resume and checkpoint is None:
            raise ParameterError("run_deconvolution: resume=True needs checkpoint=<path of "
                                 "the checkpoint file>.")
        algo = self._deconvolution
        logger.info("running %s, at most %d iterations", type(algo).__name__,
                    algo.iteration_max)
        if checkpoint is not None:
            algo.checkpoint_extra = self.resume_identity()
        algo.initialization()
        stop = False
        if resume:
            if not Path(checkpoint).is_file():
                raise FileFormatError(f"resume: no checkpoint at {checkpoint}; run without "
                                      "resume (or give the checkpoint's path).")
            self.check_resumable(checkpoint, algo.checkpoint_extra, algo.algorithm_name)
            algo.restore_checkpoint(checkpoint)
            stop = algo.stopped_at_checkpoint
            logger.info("resumed from %s at iteration %d", checkpoint, algo.iteration_count)
        stop = stop or algo.iteration_count >= algo.iteration_max
        self._iterate(algo, stop, checkpoint, every, progress, callback)
        algo.finalization()
        log_run_checks(algo)  # the statistic fell? limit before the rule? background on a bound?
        return algo.results

    def resume_identity(self) -> dict:
        """What a checkpoint records so that a resume continues the same run.

        ``data``: per dataset, fingerprints (:func:`probdeconv.io.checkpoint.array_fingerprint`)
        of the counts, the background templates and the exposure map (which follows the
        response and the CCM), and of the mask; ``options``: every parameter (colon path →
        value) but those a resume may change (``iteration_max``, ``stopping_criteria``,
        ``save_results``).
        """
        data = []
        for d in self._dataset:
            keys = list(d.keys_bkg_models())
            data.append({"name": str(getattr(d, "name", "")),
                         "event counts": array_fingerprint(_array(getattr(d, "event", None))),
                         "background templates": array_fingerprint(
                             *[_array(d.bkg_model(k)) for k in keys]) + f" {keys}",
                         "exposure map (response, CCM)": array_fingerprint(
                             _array(d.exposure_map))})
        mask = None if self._mask is None else array_fingerprint(_array(self._mask))
        params = (self._validated or self._parameter).to_dict()
        options = {k: v for k, v in _flatten(params).items()
                   if not any(k == p or k.startswith(p + ":") for p in RESUMABLE_CHANGES)}
        options = json.loads(json.dumps(options, default=str))  # as the header stores it
        return {"data": data, "mask": mask, "options": options}

    @staticmethod
    def check_resumable(checkpoint, identity: dict, algorithm: str | None = None) -> None:
        """Refuse to resume from a checkpoint of other data, mask or parameters.

        A checkpoint of another ``algorithm`` is left to the algorithm's
        ``restore_checkpoint``, which names both.

        Raises
        ------
        FileFormatError
            The checkpoint is unreadable, or its recorded data fingerprints or structural
            parameters differ from ``identity`` (:meth:`resume_identity`); the message
            names what differs.
        """
        _, header = read_checkpoint(checkpoint)
        if algorithm is not None and header.get("algorithm") != algorithm:
            return
        fix = ("resume with the data and parameters it was written with, or start the run "
               "afresh without resuming")
        if "data" not in header:
            logger.warning("%s records no data fingerprint (an older probdeconv): cannot check "
                           "that it was written for these data", checkpoint)
            return
        old, new = header.get("data") or [], identity["data"]
        if len(old) != len(new):
            raise FileFormatError(f"{checkpoint}: checkpoint of {len(old)} dataset(s), this "
                                  f"run has {len(new)}; {fix}.")
        for i, (a, b) in enumerate(zip(old, new)):
            for what in b:
                if what != "name" and a.get(what) != b[what]:
                    raise FileFormatError(
                        f"{checkpoint}: written for other data: the {what} of dataset {i} "
                        f"({b['name']!r}) differ (fingerprint {a.get(what)} in the "
                        f"checkpoint, {b[what]} now); {fix}.")
        if header.get("mask") != identity["mask"]:
            raise FileFormatError(f"{checkpoint}: written with another mask; {fix}.")
        was, now = header.get("options") or {}, identity["options"]
        changed = sorted(k for k in set(was) | set(now)
                         if json.dumps(was.get(k)) != json.dumps(now.get(k)))
        if changed:
            shown = "; ".join(f"{k}: {was.get(k, '(absent)')!r} in the checkpoint, "
                              f"{now.get(k, '(absent)')!r} now" for k in changed[:3])
            raise FileFormatError(f"{checkpoint}: written with other parameters ({shown}"
                                  f"{'; ...' if len(changed) > 3 else ''}); only iteration_max "
                                  f"and stopping_criteria may change on a resume; {fix}.")

    @staticmethod
    def _iterate(algo, stop: bool, checkpoint, every: int, progress: bool, callback) -> None:
        """The loop: iteration, log line, progress, checkpoint, callback."""
        bar = tqdm(total=algo.iteration_max, initial=algo.iteration_count,
                   desc=algo.algorithm_name or type(algo).__name__, unit="it",
                   disable=not progress, leave=False)
        saved = None
        try:
            while not stop:
                stop = algo.iteration()
                check_finite_iteration(algo)  # before a NaN state reaches a checkpoint
                r = algo.results[-1]
                stat, value = _statistic(r)
                shown = {stat: f"{value:.10g}"}
                if "alpha" in r:
                    shown["alpha"] = f"{float(r['alpha']):.4g}"
                bkg = r.get("background_normalization", {})
                logger.info("iteration %d/%d: %s%s", algo.iteration_count, algo.iteration_max,
                            ", ".join(f"{k} {v}" for k, v in shown.items()),
                            "".join(f", background {k} {float(v):.6g}" for k, v in bkg.items()))
                bar.update(1)
                bar.set_postfix(shown)
                if checkpoint is not None and (stop or algo.iteration_count % every == 0):
                    algo.save_checkpoint(checkpoint, stopped=stop)
                    saved = algo.iteration_count
                if callback is not None:
                    callback(algo)
        except KeyboardInterrupt:
            kept = "" if checkpoint is None or not Path(checkpoint).is_file() else (
                f"; the checkpoint {checkpoint}"
                f"{'' if saved is None else f' of iteration {saved}'} is kept: resume from it")
            logger.warning("interrupted in iteration %d%s", algo.iteration_count, kept)
            raise
        finally:
            bar.close()


def _statistic(result: dict) -> tuple[str, float]:
    """The statistic an iteration reports: the log-posterior if any, else the log-likelihood."""
    if "log-posterior" in result:
        return "log-posterior", float(result["log-posterior"])
    return "log-likelihood", float(np.sum(result.get("log-likelihood", np.nan)))


def _array(h) -> np.ndarray | None:
    """Dense values of a histogram (or array-like) for a fingerprint; None stays None."""
    if h is None:
        return None
    c = getattr(h, "contents", h)
    if hasattr(c, "todense"):  # sparse COO
        c = c.todense()
    return np.asarray(getattr(c, "value", c))


def _flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` → ``{"a:b": 1}``; lists and scalars are leaves."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}:{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out
