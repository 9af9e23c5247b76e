"""``DeconvolutionAlgorithmBase``: cosipy's hook interface over pure ``init``/``step`` cores.

A subclass implements the hooks (``initialization``, ``pre_processing``, ``Estep``,
``Mstep``, ``post_processing``, ``register_result``, ``check_stopping_criteria``,
``finalization``); :meth:`DeconvolutionAlgorithmBase.iteration` calls them in that order.
probdeconv's own algorithms run one whole jitted ``step`` in ``Mstep`` and only convert
its outputs to histograms in ``post_processing``.

Checkpoints work the same way for every algorithm: the iteration state ``self._state`` is
a pytree of arrays (the NamedTuple / dataclass of the pure ``init``/``step`` core), saved
leaf by leaf with the iteration count and the scalar history
(:mod:`probdeconv.io.checkpoint`); a subclass only says, in :meth:`_state_restored`, how
its attributes (image, background norms) follow from a restored state.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from histpy import Histogram

from ..config import Parameters, validate_algorithm_parameters
from ..errors import DataError, FileFormatError
from ..io.checkpoint import read_checkpoint, write_checkpoint
from .bkg_nodes import BackgroundNodes
from .checks import check_initial_model, validate_mask
from .data_collection import DataInterfaceCollection
from .source_components import (
    component_range,
    component_start,
    components_free,
    source_component_keys,
)

__all__ = ["DeconvolutionAlgorithmBase", "state_entry_name"]

logger = logging.getLogger(__name__)


class DeconvolutionAlgorithmBase(ABC):
    """Base of the deconvolution algorithms (cosipy-compatible hook interface).

    Parameters
    ----------
    initial_model : ModelBase
        Starting image (taken as given: masked pixels are not zeroed here).
    dataset : list of data interfaces, or a DataInterfaceCollection
        Fitted jointly; exposure maps and back-projections are summed.
    mask : Histogram of bool or None
        True marks a free pixel.
    parameter : dict, Parameters or yayc.Configurator
        The ``deconvolution:parameter`` tree of a parameter file (colon paths work).
    """

    algorithm_name: str = ""
    parameter_schema: str | None = None  # the schema of the parameters; default algorithm_name

    def __init__(self, initial_model, dataset, mask, parameter):
        self.initial_model = initial_model
        if isinstance(dataset, DataInterfaceCollection):  # cosipy 0.4
            dataset = dataset.dataset
        if not isinstance(dataset, list | tuple):
            dataset = [dataset]
        if not dataset:
            raise DataError("dataset: empty list; give at least one data interface "
                            "(e.g. DataIF_COSI_DC2.load(...)).")
        self.dataset = list(dataset)
        self.mask = validate_mask(mask, initial_model.axes, "mask")
        check_initial_model(initial_model, self.dataset, self.mask,
                            "initial model (model_definition:initialization)")
        raw = parameter.to_dict() if isinstance(parameter, Parameters) else Parameters(
            parameter).to_dict()
        if self.parameter_schema or self.algorithm_name:
            raw = validate_algorithm_parameters(self.parameter_schema or self.algorithm_name, raw)
        else:  # the base class or a user's subclass: no schema, kept as given (as cosipy)
            logger.debug("%s: no algorithm_name, parameters not validated", type(self).__name__)
        self.parameter = Parameters(raw)
        self.results: list[dict[str, Any]] = []
        keys: list[str] = []
        for data in self.dataset:
            for key in data.keys_bkg_models():
                if key not in keys:
                    keys.append(key)
        self.dict_bkg_norm = {key: component_start(self.dataset, key) for key in keys}
        self.dict_dataset_indexlist_for_bkg_models = {
            key: [i for i, d in enumerate(self.dataset) if key in d.keys_bkg_models()]
            for key in keys
        }
        self.iteration_count = 0
        self.iteration_max = int(self.parameter.get("iteration_max", 1))
        self.stopped_at_checkpoint = False  # set by restore_checkpoint
        self.checkpoint_extra: dict[str, Any] = {}  # more header entries (data fingerprint)

    def _read_common_parameters(self) -> None:
        """Model unit, minimum flux, background fitting and saving: shared by all algorithms."""
        import astropy.units as u

        flux = u.Unit("cm-2 s-1 sr-1")
        p = self.parameter
        model_unit = self.initial_model.unit
        self._model_unit = model_unit if model_unit is not None else flux
        self._to_flux = float(u.Unit(self._model_unit).to(flux))
        mf = p.get("minimum_flux", {}) or {}
        self.minimum_flux = float((mf.get("value", 0.0) * u.Unit(mf.get("unit", flux)))
                                  .to_value(flux))
        self.do_bkg_norm_optimization = bool(
            p.get("background_normalization_optimization:activate", False))
        # time nodes: one normalisation per group of time bins ("<bkg>:node<j>")
        self.bkg_nodes = BackgroundNodes.build(
            self.dataset, list(self.dict_bkg_norm),
            p.get("background_normalization_optimization:nodes"),
            p.get("background_normalization_optimization:smoothness"),
            path="deconvolution:parameter:background_normalization_optimization")
        if self.bkg_nodes.has_nodes:
            start = self.dict_bkg_norm
            self.dict_bkg_norm = {n: start[self.bkg_nodes.template_of(n)]
                                  for n in self.bkg_nodes.names}
        ranges = p.get("background_normalization_optimization:range") or {}
        if hasattr(ranges, "to_dict"):
            ranges = ranges.to_dict()
        unknown = [k for k in ranges if k not in self.dict_bkg_norm
                   and k not in self.bkg_nodes.groups]
        if unknown:
            logger.warning("background_normalization_optimization:range names %s, which no "
                           "dataset has (background models: %s); ignored.", unknown,
                           list(self.dict_bkg_norm))
        self.dict_bkg_norm_range = {k: list(v) for k, v in
                                    self.bkg_nodes.per_node(ranges, [0.0, 100.0]).items()}
        for k in source_component_keys(self.dataset):  # point sources: their own range
            if k not in ranges:
                self.dict_bkg_norm_range[k] = component_range(self.dataset, k)
        self.do_bkg_norm_optimization = components_free(
            self.dataset, self.do_bkg_norm_optimization,
            "deconvolution:parameter:background_normalization_optimization:activate")
        self.save_results = bool(p.get("save_results:activate", False))
        self.save_results_directory = str(p.get("save_results:directory", "./results"))
        self.save_only_final_result = bool(p.get("save_results:only_final_result", False))

    def _forward_datasets(self) -> tuple:
        out = []
        for i, d in enumerate(self.dataset):
            if not hasattr(d, "to_forward"):
                raise DataError(
                    f"dataset {getattr(d, 'name', d)!r} ({type(d).__name__}) does not provide "
                    "forward-model arrays (to_forward); load it with DataIF_COSI_DC2.load().")
            nodes = getattr(self, "bkg_nodes", None)  # set by _read_common_parameters
            out.append(d.to_forward(list(self.dict_bkg_norm)) if nodes is None
                       else nodes.forward(d, i))
        return tuple(out)

    def _as_model(self, values):
        """An image like the initial model holding ``values`` (given in cm-2 s-1 sr-1)."""
        new = self.initial_model.copy()
        new[:] = (np.asarray(values, dtype=np.float64) / self._to_flux) * self._model_unit
        return new

    # ------------------------------------------------------------------ hooks
    # Each hook raises NotImplementedError, as cosipy's do: a subclass defines them all.
    @abstractmethod
    def initialization(self):
        """Set-up before the first iteration."""
        raise NotImplementedError(f"{type(self).__name__} must define initialization")

    @abstractmethod
    def pre_processing(self):
        """Work at the start of each iteration."""
        raise NotImplementedError(f"{type(self).__name__} must define pre_processing")

    @abstractmethod
    def Estep(self):  # noqa: N802 (cosipy name)
        """Expectation step."""
        raise NotImplementedError(f"{type(self).__name__} must define Estep")

    @abstractmethod
    def Mstep(self):  # noqa: N802 (cosipy name)
        """Maximisation step (the update)."""
        raise NotImplementedError(f"{type(self).__name__} must define Mstep")

    def processing_core(self):
        """The core of one iteration (cosipy 0.4's hook): :meth:`Estep` then :meth:`Mstep`.

        A cosipy 0.4 style subclass may override it instead of splitting the step.
        """
        self.Estep()
        self.Mstep()

    @abstractmethod
    def post_processing(self):
        """Work after the update (filters, the new model)."""
        raise NotImplementedError(f"{type(self).__name__} must define post_processing")

    @abstractmethod
    def register_result(self):
        """Record this iteration's results in ``self.results``."""
        raise NotImplementedError(f"{type(self).__name__} must define register_result")

    @abstractmethod
    def check_stopping_criteria(self) -> bool:
        """True when the iterations should stop."""
        raise NotImplementedError(f"{type(self).__name__} must define check_stopping_criteria")

    @abstractmethod
    def finalization(self):
        """Work after the last iteration (saving results)."""
        raise NotImplementedError(f"{type(self).__name__} must define finalization")

    def iteration(self) -> bool:
        """Run one iteration through the hooks; True when the run should stop."""
        self.iteration_count += 1
        logger.debug("iteration %d/%d", self.iteration_count, self.iteration_max)
        self.pre_processing()
        self.processing_core()
        self.post_processing()
        self.register_result()
        return bool(self.check_stopping_criteria())

    # ------------------------------------------------------------------ checkpoints
    SCALAR_KEYS = ("iteration", "log-likelihood", "alpha", "background_normalization",
                   "log-prior", "log-posterior")

    def scalar_history(self) -> list[dict]:
        """Per-iteration scalars of the results so far (no maps)."""
        return [{k: r[k] for k in self.SCALAR_KEYS if k in r} for r in self.results]

    def _state_arrays(self) -> tuple[list[str], list, Any]:
        """Names, leaves and structure of the iteration state ``self._state``."""
        if getattr(self, "_state", None) is None:
            raise DataError(f"{type(self).__name__}: no iteration state yet; call "
                            "initialization() before saving or restoring a checkpoint.")
        flat, treedef = jax.tree_util.tree_flatten_with_path(self._state)
        names = [state_entry_name(path) for path, _ in flat]
        if len(set(names)) != len(names):
            raise DataError(f"{type(self).__name__}: state entries {names} are not uniquely "
                            "named; a checkpoint cannot tell them apart.")
        return names, [leaf for _, leaf in flat], treedef

    def _describe_state_entry(self, name: str) -> str:
        """Words for a state entry in messages (a subclass may say more)."""
        return f"state array {name!r}"

    def _state_restored(self) -> None:
        """Bring attributes derived from ``self._state`` up to date (after a restore)."""
        logger.debug("%s: state restored at iteration %d", self.algorithm_name,
                     self.iteration_count)

    def save_checkpoint(self, path, *, stopped: bool = False) -> Path:
        """Write the exact iteration state, iteration count and scalar history atomically.

        ``stopped`` records that the run ended here (by ``iteration_max`` or its stopping
        criterion).  :meth:`restore_checkpoint` continues from it bit for bit.
        """
        names, leaves, _ = self._state_arrays()
        header = {**self.checkpoint_extra,
                  "algorithm": self.algorithm_name, "iteration_count": self.iteration_count,
                  "iteration_max": self.iteration_max, "stopped": bool(stopped),
                  "history": self.scalar_history()}
        return write_checkpoint(path, {n: np.asarray(x) for n, x in zip(names, leaves)},
                                header)

    def restore_checkpoint(self, path) -> int:
        """Continue from a checkpoint (call after :meth:`initialization`); returns its iteration.

        Sets :attr:`stopped_at_checkpoint` when the checkpointed run had stopped by its own
        criterion before its ``iteration_max`` (such a run has nothing left to do).

        Raises
        ------
        FileFormatError
            Not a checkpoint, one of another algorithm, or one whose arrays do not fit this
            run (other data, options, dtype or probdeconv version).
        """
        path = Path(path)
        arrays, header = read_checkpoint(path)
        if header.get("algorithm") != self.algorithm_name:
            raise FileFormatError(f"{path}: checkpoint of {header.get('algorithm')!r}, but "
                                  f"this run uses {self.algorithm_name!r}; resume with the "
                                  "same parameter file or start afresh.")
        count, history = header.get("iteration_count"), header.get("history")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0 or \
                not isinstance(history, list):
            raise FileFormatError(f"{path}: incomplete checkpoint header (iteration_count "
                                  f"{count!r}, history of {type(history).__name__}); expected "
                                  "the iteration count and the list of per-iteration results. "
                                  "Start the run afresh without resuming.")
        names, leaves, treedef = self._state_arrays()
        restored = []
        for name, leaf in zip(names, leaves):
            got = arrays.get(name)
            want = (tuple(np.shape(leaf)), np.dtype(leaf.dtype))
            if got is None or (got.shape, got.dtype) != want:
                found = "missing" if got is None else f"{got.shape} {got.dtype}"
                raise FileFormatError(
                    f"{path}: {self._describe_state_entry(name)} is {found}; this run needs "
                    f"{want[0]} {want[1]} (the checkpoint was written for other data or "
                    "options, or by another probdeconv version). Start the run afresh "
                    "without --resume.")
            if np.issubdtype(got.dtype, np.inexact) and not np.all(np.isfinite(got)):
                raise FileFormatError(
                    f"{path}: {self._describe_state_entry(name)} holds "
                    f"{int(np.sum(~np.isfinite(got)))} NaN or infinite value(s); the "
                    "checkpoint is damaged. Start the run afresh without --resume.")
            restored.append(jnp.asarray(got))
        self._state = jax.tree_util.tree_unflatten(treedef, restored)
        self.iteration_count = int(header["iteration_count"])
        self.results[:] = header["history"]
        self.stopped_at_checkpoint = bool(header.get("stopped")) and \
            self.iteration_count < int(header.get("iteration_max", self.iteration_count))
        self._state_restored()
        return self.iteration_count

    # ------------------------------------------------------------------ dataset helpers
    def calc_expectation_list(self, model, dict_bkg_norm=None, almost_zero=1e-12) -> list:
        return [d.calc_expectation(model, dict_bkg_norm=dict_bkg_norm, almost_zero=almost_zero)
                for d in self.dataset]

    def calc_loglikelihood_list(self, expectation_list) -> list[float]:
        return [d.calc_log_likelihood(e) for d, e in zip(self.dataset, expectation_list)]

    calc_log_likelihood_list = calc_loglikelihood_list

    def calc_summed_exposure_map(self) -> Histogram:
        total = self.dataset[0].exposure_map.copy()
        for d in self.dataset[1:]:
            total += d.exposure_map
        return total

    def calc_summed_bkg_model(self, key: str) -> float:
        return float(sum(self.dataset[i].summed_bkg_model(key)
                         for i in self.dict_dataset_indexlist_for_bkg_models[key]))

    def calc_summed_T_product(self, dataspace_histogram_list) -> Histogram:  # noqa: N802
        parts = [d.calc_T_product(h) for d, h in zip(self.dataset, dataspace_histogram_list)]
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total

    def calc_summed_bkg_model_product(self, key, dataspace_histogram_list) -> float:
        return float(sum(self.dataset[i].calc_bkg_model_product(key, dataspace_histogram_list[i])
                         for i in self.dict_dataset_indexlist_for_bkg_models[key]))


def state_entry_name(path) -> str:
    """Name of a state leaf from its pytree key path: ``model``, ``sky0``, ``params/image``.

    Attribute and dict keys are joined by ``/``; a sequence index is appended to the name
    before it (``sky[0]`` → ``sky0``).

    Examples
    --------
    >>> import jax
    >>> flat, _ = jax.tree_util.tree_flatten_with_path({"sky": (1.0, 2.0), "model": 0.0})
    >>> [state_entry_name(path) for path, _ in flat]
    ['model', 'sky0', 'sky1']
    """
    name = ""
    for key in path:
        if isinstance(key, jax.tree_util.SequenceKey):
            name += str(key.idx)
            continue
        part = str(getattr(key, "name", getattr(key, "key", key)))
        name = f"{name}/{part}" if name else part
    return name
