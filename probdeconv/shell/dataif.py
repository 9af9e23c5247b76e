"""Data interfaces: event histogram, backgrounds, response and CCM of one dataset.

:class:`DataIF_COSI_DC2` checks the axes of its inputs once, converts them to the arrays
of a :class:`probdeconv.forward.Dataset`, and answers the cosipy data-interface methods
(``calc_expectation``, ``calc_T_product``, ...) by calling the forward model.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from abc import ABC, abstractmethod

import astropy.units as u
import jax.numpy as jnp
import numpy as np
from histpy import Axes, Histogram

from .. import forward as fm
from ..errors import AxisMismatchError, DataError
from ..forward.sharding import pad_data, padded_log_likelihood, shard_dataset, trim_data
from .checks import check_dataset_contents, check_frames
from .point_sources import PointSourceSpec
from .response import CoordsysConversionMatrix, FullDetectorResponse
from .source_components import point_source_components

__all__ = ["ImageDeconvolutionDataInterfaceBase", "DataIF_COSI_DC2"]

logger = logging.getLogger(__name__)

DATA_AXES_GALACTIC = ("Em", "Phi", "PsiChi")


def _histogram(obj, what: str) -> Histogram:
    """``obj`` if it is a histpy Histogram, else a DataError naming ``what``."""
    if not isinstance(obj, Histogram):
        raise DataError(f"{what}: expected a histpy Histogram (probdeconv.Histogram is the "
                        f"same class), got a {type(obj).__module__}.{type(obj).__name__}; "
                        "open files with Histogram.open(path)")
    return obj


def _values(h: Histogram, unit=None) -> np.ndarray:
    """Dense float64 contents of a histogram, converted to ``unit`` when both have units.

    The shell's one conversion from histograms to arrays (under/overflow bins dropped).
    """
    h = h.to_dense() if h.is_sparse else h
    c = h.contents
    if isinstance(c, u.Quantity):
        c = c.to_value(unit) if unit is not None else c.value
    return np.asarray(c, dtype=np.float64)


def _edges_value(axis) -> np.ndarray:
    e = axis.edges
    return np.asarray(e.value if isinstance(e, u.Quantity) else e, dtype=np.float64)


def _check_axis(a, b, what_a: str, what_b: str) -> None:
    """Equal edges (converted to a common unit where both have one) or AxisMismatchError."""
    ea, eb = _edges_value(a), _edges_value(b)
    if a.unit is not None and b.unit is not None and a.unit != b.unit:
        try:
            eb = (eb * b.unit).to_value(a.unit)
        except u.UnitConversionError as exc:
            raise AxisMismatchError(
                f"axis {a.label!r}: unit {a.unit} in the {what_a} but {b.unit} in the "
                f"{what_b}; they cannot be converted. Use histograms binned alike."
            ) from exc
    same = ea.shape == eb.shape and np.allclose(ea, eb, rtol=1e-9, atol=0)
    if not same:
        raise AxisMismatchError(
            f"axis {a.label!r} differs between the {what_a} and the {what_b}:\n"
            f"  {what_a}: {ea.tolist()} {a.unit or ''}\n"
            f"  {what_b}: {eb.tolist()} {b.unit or ''}\n"
            "Rebin one of them so that both use the same bin edges."
        )
    for attr in ("nside", "scheme"):
        va, vb = getattr(a, attr, None), getattr(b, attr, None)
        if va is not None and vb is not None and va != vb:
            raise AxisMismatchError(
                f"axis {a.label!r}: {attr} {va} in the {what_a} but {vb} in the {what_b}."
            )


class ImageDeconvolutionDataInterfaceBase(ABC):
    """Base of the data interfaces: what a deconvolution algorithm may ask of a dataset."""

    def __init__(self, name: str | None = None):
        self._name = name
        self._event: Histogram | None = None
        self._bkg_models: dict[str, Histogram] = {}
        self._summed_bkg_models: dict[str, float] = {}
        # point sources (with_point_sources); {component key: (start, default range)}
        self._point_sources: tuple[PointSourceSpec, ...] = ()
        self._component_defaults: dict[str, tuple[float, list[float]]] = {}
        self._exposure_map: Histogram | None = None
        self._model_axes: Axes | None = None
        self._data_axes: Axes | None = None

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def event(self) -> Histogram:
        return self._event

    @property
    def exposure_map(self) -> Histogram:
        return self._exposure_map

    @property
    def model_axes(self) -> Axes:
        return self._model_axes

    @property
    def data_axes(self) -> Axes:
        return self._data_axes

    def keys_bkg_models(self) -> list[str]:
        return list(self._bkg_models.keys())

    def bkg_model(self, key: str) -> Histogram:
        if key not in self._bkg_models:
            raise DataError(f"dataset {self.name!r}: no background model {key!r}; "
                            f"available: {self.keys_bkg_models()}.")
        return self._bkg_models[key]

    def summed_bkg_model(self, key: str) -> float:
        self.bkg_model(key)
        return self._summed_bkg_models[key]

    @property
    def point_sources(self) -> tuple[PointSourceSpec, ...]:
        """Point sources fitted beside the image (``with_point_sources``)."""
        return self._point_sources

    def default_norm(self, key: str) -> float:
        """Start of component ``key``: 1 (background) or a point source's flux."""
        return self._component_defaults.get(key, (1.0, [0.0, 100.0]))[0]

    def default_norm_range(self, key: str) -> list[float]:
        """Default range of component ``key``: [0, 100] (background) or a source's."""
        return list(self._component_defaults.get(key, (1.0, [0.0, 100.0]))[1])

    # The abstract methods raise NotImplementedError, as cosipy's do, so that a subclass
    # calling super() (or a test clearing __abstractmethods__) fails loudly.
    @abstractmethod
    def calc_expectation(self, model, dict_bkg_norm=None, almost_zero=1e-12) -> Histogram:
        """Expected counts ``[data axes]`` of ``model`` plus the scaled backgrounds."""
        raise NotImplementedError(f"{type(self).__name__} must define calc_expectation")

    @abstractmethod
    def calc_T_product(self, dataspace_histogram) -> Histogram:
        """Response-transpose product ``Aᵀ h`` (a model-space histogram)."""
        raise NotImplementedError(f"{type(self).__name__} must define calc_T_product")

    @abstractmethod
    def calc_bkg_model_product(self, key, dataspace_histogram) -> float:
        """``Σ bkg_key · h`` over the data space."""
        raise NotImplementedError(f"{type(self).__name__} must define calc_bkg_model_product")

    @abstractmethod
    def calc_log_likelihood(self, expectation) -> float:
        """Poisson log-likelihood of the event histogram given ``expectation``."""
        raise NotImplementedError(f"{type(self).__name__} must define calc_log_likelihood")

    def calc_loglikelihood(self, expectation) -> float:
        """Alias of :meth:`calc_log_likelihood` (older cosipy spelling)."""
        return self.calc_log_likelihood(expectation)

    def calc_source_expectation(self, model) -> Histogram:
        """Expected counts of ``model`` alone (cosipy 0.4); a subclass defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define calc_source_expectation")

    def calc_bkg_expectation(self, dict_bkg_norm) -> Histogram:
        """Expected counts of the scaled backgrounds alone (cosipy 0.4); a subclass defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define calc_bkg_expectation")


class DataIF_COSI_DC2(ImageDeconvolutionDataInterfaceBase):  # noqa: N801 (cosipy name)
    """Data interface for COSI binned data (galactic or spacecraft-frame Compton data space).

    Examples
    --------
    >>> data = DataIF_COSI_DC2.load("511keV", event, {"bkg": bkg}, rsp)      # doctest: +SKIP
    >>> data.calc_log_likelihood(data.calc_expectation(model, {"bkg": 1.0}))  # doctest: +SKIP
    """

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._image_response: Histogram | None = None
        self._coordsys_conv_matrix: CoordsysConversionMatrix | None = None
        self._forward: fm.Dataset | None = None
        self.is_miniDC2_format = False
        self._owns_response = False  # True when the response was reduced here from a file

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name, event_binned_data, dict_bkg_binned_data, rsp, coordsys_conv_matrix=None,
             is_miniDC2_format=False, dtype="float64",
             precision="full") -> DataIF_COSI_DC2:
        """Check and load one dataset.

        Parameters
        ----------
        name : str
            Name of the dataset (used in results and error messages).
        event_binned_data : Histogram
            Counts: ``[Em, Phi, PsiChi]`` (galactic) or ``[Time|ScAtt, Em, Phi, PsiChi]``.
        dict_bkg_binned_data : dict of str to Histogram
            Background templates, binned like the events.
        rsp : Histogram or FullDetectorResponse
            ``[NuLambda, Ei, Em, Phi, PsiChi]`` response (a precomputed galactic response in
            cm2 s, or a full detector response in cm2 used with a CCM).
        coordsys_conv_matrix : CoordsysConversionMatrix, optional
            ``[Time|ScAtt, lb, NuLambda]``; given for the spacecraft-frame data space.
        dtype : {"float64", "float32"}
            Precision of the forward model arrays.
        precision : {"full", "mixed"}
            ``"mixed"`` (dtype float64): the response in float32, products returned and
            summed in float64 (see :func:`probdeconv.forward.make_dataset`).

        Raises
        ------
        AxisMismatchError
            When event, backgrounds, response and CCM disagree on an axis.
        DataError
            On NaN or negative counts, wrong units, or missing axes.
        """
        try:
            known = np.dtype(dtype) in (np.float32, np.float64)
        except TypeError:
            known = False
        if not known:
            raise DataError(f"dataset {name!r}: dtype={dtype!r}; expected 'float64' (the "
                            "default) or 'float32'.")
        new = cls(name)
        new.is_miniDC2_format = bool(is_miniDC2_format)
        event = _histogram(event_binned_data, f"dataset {name!r}: event_binned_data")
        new._event = event.to_dense() if event.is_sparse else event
        if dict_bkg_binned_data is None:
            dict_bkg_binned_data = {}
        if not isinstance(dict_bkg_binned_data, dict):
            raise DataError(f"dataset {name!r}: backgrounds must be a dict "
                            f"{{name: Histogram}}; got {type(dict_bkg_binned_data).__name__}.")
        for key, bkg in dict_bkg_binned_data.items():
            h = _histogram(bkg, f"dataset {name!r}: background {key!r}")
            new._bkg_models[key] = h.to_dense() if h.is_sparse else h

        if isinstance(rsp, FullDetectorResponse):
            logger.info("Reducing the full detector response %s to [NuLambda, Ei, Em, Phi, "
                        "PsiChi]...", rsp.path)
            new._image_response = rsp.to_image_response()
            new._owns_response = True  # made here: the forward model may keep its memory
        else:
            new._image_response = _histogram(rsp, f"dataset {name!r}: rsp")
        if coordsys_conv_matrix is not None:
            ccm = coordsys_conv_matrix
            if not isinstance(ccm, CoordsysConversionMatrix):
                ccm = CoordsysConversionMatrix.from_histogram(
                    _histogram(ccm, f"dataset {name!r}: coordsys_conv_matrix"))
            new._coordsys_conv_matrix = ccm
        new._check_axes()
        new._build(dtype, precision)
        return new

    def _check_axes(self) -> None:
        ev, rsp, ccm = self._event, self._image_response, self._coordsys_conv_matrix
        name = self.name
        rsp_labels = tuple(rsp.axes.labels.tolist())
        if rsp_labels[:5] != ("NuLambda", "Ei", "Em", "Phi", "PsiChi") or len(rsp_labels) != 5:
            raise DataError(
                f"dataset {name!r}: the response has axes {list(rsp_labels)}; expected "
                "[NuLambda, Ei, Em, Phi, PsiChi]. Reduce a full detector response with "
                "FullDetectorResponse.to_image_response()."
            )
        if ccm is None:
            data_labels = DATA_AXES_GALACTIC
        else:
            data_labels = (ccm.binning_method, *DATA_AXES_GALACTIC)
        if tuple(ev.axes.labels.tolist()) != data_labels:
            hint = ""
            if ccm is None and set(data_labels) <= set(ev.axes.labels):
                hint = f" Project it first: event.project({list(data_labels)})."
            raise DataError(
                f"dataset {name!r}: the event histogram has axes {ev.axes.labels.tolist()}; "
                f"expected {list(data_labels)}" + (" (spacecraft frame, from the CCM)"
                                                   if ccm is not None else
                                                   " (galactic data space, no CCM)") + "." + hint
            )
        for key, bkg in self._bkg_models.items():
            if tuple(bkg.axes.labels.tolist()) != data_labels:
                raise DataError(f"dataset {name!r}: background {key!r} has axes "
                                f"{bkg.axes.labels.tolist()}; expected {list(data_labels)}.")
            for label in data_labels:
                _check_axis(ev.axes[label], bkg.axes[label], "event histogram",
                            f"background {key!r}")
        for label in DATA_AXES_GALACTIC:
            _check_axis(ev.axes[label], rsp.axes[label], "event histogram", "response")
        check_frames(name, ev.axes["PsiChi"], rsp.axes, None if ccm is None else ccm.axes)
        if ccm is not None:
            _check_axis(ev.axes[0], ccm.axes[0], "event histogram", "coordinate-conversion matrix")
            _check_axis(ccm.axes["NuLambda"], rsp.axes["NuLambda"],
                        "coordinate-conversion matrix", "response")
        if ev.unit is not None and ev.unit != u.dimensionless_unscaled:
            raise DataError(f"dataset {name!r}: the event histogram has unit {ev.unit}; counts "
                            "must be dimensionless (no unit).")

    def _build(self, dtype, precision="full") -> None:
        rsp, ccm = self._image_response, self._coordsys_conv_matrix
        self._data_axes = self._event.axes
        lb_axis = (rsp.axes["NuLambda"] if ccm is None else ccm.axes["lb"]).copy()
        lb_axis.label = "lb"
        if ccm is None and getattr(lb_axis, "coordsys", None) is None:
            lb_axis.coordsys = "galactic"
        self._model_axes = Axes([lb_axis, rsp.axes["Ei"].copy()], copy_axes=False)
        counts = _values(self._event)
        keys = self.keys_bkg_models()
        bkgs = [_values(self._bkg_models[k]) for k in keys]
        for k, b in zip(keys, bkgs):
            self._summed_bkg_models[k] = float(np.sum(b))
        rsp_unit = rsp.unit if rsp.unit is not None else (u.cm**2 if ccm is not None
                                                         else u.cm**2 * u.s)
        expected = u.cm**2 if ccm is not None else u.cm**2 * u.s
        if not rsp_unit.is_equivalent(expected):
            raise DataError(f"dataset {self.name!r}: the response has unit {rsp_unit}; expected "
                            f"a unit of {expected} ({'with' if ccm is not None else 'without'} "
                            "a CCM).")
        response = _values(rsp, expected if rsp.unit is not None else None)
        kw = {}
        if ccm is not None:
            kw = dict(ccm=ccm.coo(), n_model_pixels=ccm.axes["lb"].nbins)
        self._forward = fm.make_dataset(
            counts, response, bkgs, pixel_area=float(self._model_axes["lb"].pixarea().to_value(
                u.sr)), dtype=dtype, precision=precision, name=str(self.name),
            share_response=self._owns_response, **kw)
        self._response_unit = expected
        # The forward dataset holds the response now; keep only the axes of the histogram
        # so that the (possibly multi-GB) contents are not held twice.
        self._response_axes = rsp.axes
        self._image_response = None
        s = np.array(fm.exposure(self._forward))
        check_dataset_contents(self.name, counts, dict(zip(keys, bkgs)), s)
        exp_unit = expected * u.sr * (u.s if ccm is not None else 1)  # CCM dwell times are in s
        self._exposure_map = Histogram(self._model_axes, contents=s, unit=exp_unit,
                                       copy_contents=False)

    # ------------------------------------------------------------------ forward model access
    @property
    def forward_dataset(self) -> fm.Dataset:
        """The arrays of this dataset as a :class:`probdeconv.forward.Dataset`."""
        return self._forward

    def shard(self, mesh) -> None:
        """Split the forward arrays over ``mesh`` (forward.sharding.shard_dataset)."""
        self._forward = shard_dataset(self._forward, mesh)

    def to_forward(self, global_keys: list[str]) -> fm.Dataset:
        """The forward dataset with its backgrounds indexed into ``global_keys``."""
        idx = tuple(global_keys.index(k) for k in self.keys_bkg_models())
        return dataclasses.replace(self._forward, bkg_index=idx)

    def with_point_sources(self, point_sources, *, attitudes=None) -> DataIF_COSI_DC2:
        """A copy with point sources at fixed positions beside the image: each source's
        flux per Ei bin (key ``name@E<bin>``) is a linear component fitted like a background
        normalisation (see :mod:`probdeconv.shell.point_sources` for the accepted forms and
        the interpolated response; ``attitudes = (matrices, row_bin, row_weight)``)."""
        ccm = self._coordsys_conv_matrix
        part = point_source_components(
            point_sources, self._forward, keys=self.keys_bkg_models(), name=str(self.name),
            local_axis=self._response_axes["NuLambda"], model_axis=self._model_axes["lb"],
            ccm=None if ccm is None else ccm.coo(), attitudes=attitudes)
        new = copy.copy(self)
        new._forward = part.forward
        new._bkg_models = {**self._bkg_models, **{k: Histogram(
            self._data_axes, contents=t.reshape(self._data_axes.shape), copy_contents=False)
            for k, t in zip(part.keys, part.templates)}}
        new._summed_bkg_models = {**self._summed_bkg_models, **{
            k: float(t.sum()) for k, t in zip(part.keys, part.templates)}}
        new._point_sources = (*self._point_sources, *part.sources)
        new._component_defaults = {**self._component_defaults, **part.defaults}
        return new

    def _model_values(self, model) -> jnp.ndarray:
        h = _histogram(model, f"dataset {self.name!r}: model")
        if h.axes.shape != self._model_axes.shape:
            raise DataError(f"dataset {self.name!r}: model has shape {h.axes.shape}; "
                            f"expected {self._model_axes.shape} (axes "
                            f"{self._model_axes.labels.tolist()}).")
        unit = u.Unit("cm-2 s-1 sr-1") if h.unit is not None else None
        return jnp.asarray(_values(h, unit), dtype=self._forward.counts.dtype)

    def _data_values(self, h) -> jnp.ndarray:
        h = _histogram(h, f"dataset {self.name!r}: data-space histogram")
        if h.axes.shape != self._data_axes.shape:
            raise DataError(f"dataset {self.name!r}: data-space histogram has shape "
                            f"{h.axes.shape}; expected {self._data_axes.shape}.")
        return pad_data(self._forward, _values(h))  # the data's shape (with padding)

    def _norm_vector(self, dict_bkg_norm) -> jnp.ndarray:
        keys = self.keys_bkg_models()
        if dict_bkg_norm is None:
            return jnp.zeros(len(keys))
        return jnp.asarray([float(dict_bkg_norm[k]) for k in keys])

    def calc_expectation(self, model, dict_bkg_norm=None, almost_zero=1e-12) -> Histogram:
        """Expected counts of ``model`` (backgrounds only when ``dict_bkg_norm`` is given)."""
        ds = self._forward
        e = fm.expected_counts(ds, self._model_values(model), self._norm_vector(dict_bkg_norm),
                               almost_zero)
        # a writable array of its own (a JAX result may be a read-only view)
        return Histogram(self._data_axes, copy_contents=False,
                         contents=trim_data(e, self._data_axes.shape))

    def calc_source_expectation(self, model, almost_zero=1e-12) -> Histogram:
        """Expected counts of ``model`` alone, plus ``almost_zero`` (cosipy 0.4)."""
        return self.calc_expectation(model, None, almost_zero)

    def calc_bkg_expectation(self, dict_bkg_norm) -> Histogram:
        """``Σ_k norm_k B_k``: the scaled backgrounds alone (cosipy 0.4), on the data axes."""
        total = np.zeros(self._data_axes.shape)
        for key in self.keys_bkg_models():
            if key not in dict_bkg_norm:
                raise DataError(f"dataset {self.name!r}: dict_bkg_norm has no entry for the "
                                f"background {key!r}; give all of {self.keys_bkg_models()}.")
            total += float(dict_bkg_norm[key]) * _values(self.bkg_model(key))
        return Histogram(self._data_axes, contents=total, copy_contents=False)

    def calc_T_product(self, dataspace_histogram) -> Histogram:  # noqa: N802 (cosipy name)
        """``Aᵀ H``: the back-projection of a data-space histogram onto the model axes."""
        h = _histogram(dataspace_histogram, f"dataset {self.name!r}: dataspace_histogram")
        t = fm.backproject(self._forward, self._data_values(h))
        unit = self._exposure_map.unit * (h.unit if h.unit is not None else 1)
        return Histogram(self._model_axes, contents=np.array(t), unit=unit, copy_contents=False)

    def calc_bkg_model_product(self, key, dataspace_histogram) -> float:
        """``Σ_i B_key,i H_i``."""
        self.bkg_model(key)  # a clear error for an unknown key
        k = self.keys_bkg_models().index(key)
        prod = fm.background_product(self._forward, self._data_values(dataspace_histogram))
        return float(prod[k])

    def calc_log_likelihood(self, expectation) -> float:
        """Poisson log-likelihood ``Σ d log E − Σ E`` of an expected-count histogram."""
        self._data_values(expectation)  # checks the axes; the padding of split data counts 0
        return float(padded_log_likelihood(self._forward, _values(expectation)))
