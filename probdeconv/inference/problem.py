"""The inference problem: forward datasets, the model configuration and how to show maps.

A :class:`Problem` is what every sampler of :mod:`probdeconv.inference` takes: the
:class:`probdeconv.forward.Dataset` tuple (fitted jointly), the
:class:`~probdeconv.inference.model.SkyModelConfig` (priors, mask, backgrounds) and the
metadata needed to turn arrays back into maps with units (model axes, flux unit,
background and dataset names).

Build it from cosipy-style data interfaces with :meth:`Problem.from_dataif`, from forward
datasets with :meth:`Problem.from_datasets`, or from a YAML ``prior:`` section with
:func:`problem_from_parameters`.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> ds = make_dataset(np.ones((1, 1, 4)), np.ones((1, 1, 1, 1, 4)), pixel_area=1.0)
>>> p = Problem.from_datasets([ds], image_prior="gamma", gamma=(2.0, 10.0))
>>> p.model_shape, p.n_free, p.config.image_prior
((1, 1), 1, 'gamma')
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import astropy.units as u
import numpy as np

from .. import forward as fm
from ..errors import DataError, ParameterError
from ..histogram import Axes, Axis, HealpixAxis, Histogram
from .model import SkyModelConfig, make_config

__all__ = ["Problem", "image_map", "problem_from_parameters", "parse_prior_section"]

logger = logging.getLogger(__name__)

FLUX_UNIT = "cm-2 s-1 sr-1"


@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything a sampler needs: datasets, model configuration, axes and names.

    Attributes
    ----------
    datasets : tuple of Dataset
        Forward-model datasets, fitted jointly.
    config : SkyModelConfig
        Priors, mask and background set-up (:func:`~.model.make_config`).
    model_axes : Axes or None
        ``[lb, Ei]`` axes of the image (HEALPix × energy) for maps with units; ``None``
        gives generic axes.
    unit : str
        Flux unit of the image values (``cm-2 s-1 sr-1``).
    bkg_names : tuple of str
        Name of each global background normalisation.
    dataset_names : tuple of str
    """

    datasets: tuple[fm.Dataset, ...]
    config: SkyModelConfig
    model_axes: Axes | None = None
    unit: str = FLUX_UNIT
    bkg_names: tuple[str, ...] = ()
    dataset_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.datasets:
            raise DataError("Problem: no dataset given; pass at least one forward dataset.")
        shape = tuple(self.config.model_shape)
        for i, ds in enumerate(self.datasets):
            if ds.model_shape != shape:
                raise DataError(f"Problem: dataset #{i} has model shape {ds.model_shape} but "
                                f"the config has {shape}; build the config with "
                                "make_config(dataset.model_shape, ...).")
        if self.model_axes is not None and tuple(self.model_axes.nbins) != shape:
            raise DataError(f"Problem: model_axes have {tuple(self.model_axes.nbins)} bins; "
                            f"expected {shape}.")
        if not self.bkg_names:
            object.__setattr__(self, "bkg_names",
                               tuple(f"bkg{k}" for k in range(self.config.n_bkg)))
        if len(self.bkg_names) != self.config.n_bkg:
            raise DataError(f"Problem: {len(self.bkg_names)} background names for "
                            f"{self.config.n_bkg} normalisations.")
        if not self.dataset_names:
            object.__setattr__(self, "dataset_names",
                               tuple(f"dataset{i}" for i in range(len(self.datasets))))

    # ------------------------------------------------------------------ sizes
    @property
    def model_shape(self) -> tuple[int, int]:
        """``(lb, Ei)``."""
        return tuple(self.config.model_shape)

    @property
    def mask(self) -> np.ndarray:
        """``[lb, Ei]`` bool, True = free pixel."""
        return np.asarray(self.config.mask, dtype=bool)

    @property
    def free_index(self) -> np.ndarray:
        """Flat indices (into ``lb × Ei``) of the free pixels."""
        return np.flatnonzero(self.mask.ravel())

    @property
    def n_free(self) -> int:
        return int(self.mask.sum())

    @property
    def n_bkg(self) -> int:
        return self.config.n_bkg

    @property
    def n_params(self) -> int:
        """Free pixels plus free background normalisations."""
        return self.n_free + (self.n_bkg if self.config.bkg_free else 0)

    @property
    def pixel_area(self) -> float:
        """Model pixel solid angle (sr)."""
        return float(self.datasets[0].pixel_area)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.datasets[0].counts.dtype)

    # ------------------------------------------------------------------ maps
    def axes(self) -> Axes:
        """The model axes, or generic ones (HEALPix when the pixel count allows)."""
        if self.model_axes is not None:
            return self.model_axes
        n_pix, n_e = self.model_shape
        nside = math.isqrt(n_pix // 12) if n_pix % 12 == 0 else 0
        edges = np.arange(1, n_e + 2, dtype=float)
        energy = Axis(edges * u.keV, label="Ei")
        if nside and 12 * nside * nside == n_pix and nside & (nside - 1) == 0:
            return Axes([HealpixAxis(nside=nside, label="lb", coordsys="galactic"), energy])
        return Axes([Axis(np.arange(n_pix + 1, dtype=float), label="lb"), energy])

    def image_model(self, values: Any, unit: str | None = None) -> Histogram:
        """An ``[lb, Ei]`` map of ``values``: :class:`AllSkyImageModel` on HEALPix axes.

        ``unit`` defaults to the flux unit; give ``""`` for dimensionless maps (e.g. a
        significance).
        """
        return image_map(self.axes(), values, self.unit if unit is None else unit)

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_datasets(cls, datasets: Sequence[fm.Dataset], config: SkyModelConfig | None = None,
                      *, model_axes: Axes | None = None, bkg_names: Sequence[str] = (),
                      dataset_names: Sequence[str] = (), **config_options: Any) -> Problem:
        """A problem from forward datasets; ``config`` or :func:`make_config` options.

        Examples
        --------
        >>> import numpy as np
        >>> from probdeconv.forward import make_dataset
        >>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)),
        ...                   [np.ones((2, 3, 12))])
        >>> Problem.from_datasets([ds], bkg_free=True).n_params
        13
        """
        datasets = tuple(datasets)
        if not datasets:
            raise DataError("Problem.from_datasets: no dataset given.")
        if config is None:
            n_bkg = 1 + max((max(ds.bkg_index, default=-1) for ds in datasets), default=-1)
            config_options.setdefault("n_bkg", n_bkg)
            config_options.setdefault("dtype", datasets[0].counts.dtype)
            config = make_config(datasets[0].model_shape, **config_options)
        elif config_options:
            raise ParameterError(f"Problem.from_datasets: give either config or make_config "
                                 f"options, not both (got {sorted(config_options)}).")
        return cls(datasets, config, model_axes, bkg_names=tuple(bkg_names),
                   dataset_names=tuple(dataset_names))

    @classmethod
    def from_dataif(cls, data: Sequence[Any], *, mask: Any = None, **config_options: Any
                    ) -> Problem:
        """A problem from cosipy-style data interfaces (:class:`DataIF_COSI_DC2`).

        Parameters
        ----------
        data
            List of data interfaces (one dataset each); their background keys are merged
            in order of appearance into the global background list.
        mask
            ``[lb, Ei]`` bool histogram or array, True = free pixel.
        **config_options
            :func:`~.model.make_config` options (``image_prior``, ``gamma``, ``priors``,
            ``bkg_free``, ``bkg_range``, ...). ``bkg_norm`` and ``bkg_range`` may also be
            dicts keyed by background name.

        Examples
        --------
        >>> from probdeconv.simulate import simulate
        >>> data = simulate(sky="points", nside=2, seed=1, phi_bins=6).dataif()
        >>> p = Problem.from_dataif([data], bkg_free=True, bkg_range={"bkg": [0.1, 10]})
        >>> p.bkg_names, p.model_shape
        (('bkg',), (48, 1))
        """
        data = list(data) if isinstance(data, Sequence) else [data]
        if not data:
            raise DataError("Problem.from_dataif: no data interface given.")
        keys: list[str] = []
        for d in data:
            for k in d.keys_bkg_models():
                if k not in keys:
                    keys.append(k)
        datasets = tuple(d.to_forward(keys) for d in data)
        axes = data[0].model_axes
        for i, d in enumerate(data[1:], 1):
            if tuple(d.model_axes.nbins) != tuple(axes.nbins):
                raise DataError(f"Problem.from_dataif: dataset #{i} ({d.name!r}) has model axes "
                                f"{tuple(d.model_axes.nbins)}, dataset #0 {tuple(axes.nbins)}.")
        for key in ("bkg_norm", "bkg_range"):
            value = config_options.get(key)
            if isinstance(value, Mapping):
                unknown = sorted(set(value) - set(keys))
                if unknown:
                    raise ParameterError(f"{key}: unknown background(s) {unknown}; the data "
                                         f"have {keys}.")
                default = 1.0 if key == "bkg_norm" else [0.0, 100.0]
                config_options[key] = [value.get(k, default) for k in keys]
        if mask is not None:
            m = mask
            if isinstance(m, Histogram) or hasattr(m, "axes"):
                m = np.asarray(m.contents if not hasattr(m, "to_dense") else
                               m.to_dense().contents)
            config_options["mask"] = np.asarray(m, dtype=bool)
        config_options.setdefault("n_bkg", len(keys))
        config_options.setdefault("dtype", datasets[0].counts.dtype)
        config = make_config(tuple(axes.nbins), **config_options)
        return cls(datasets, config, axes.copy(), bkg_names=tuple(keys),
                   dataset_names=tuple(str(d.name) for d in data))


def image_map(axes: Axes, values: Any, unit: str | None = FLUX_UNIT) -> Histogram:
    """An ``[lb, Ei]`` map on ``axes``: :class:`AllSkyImageModel` when ``lb`` is HEALPix.

    Examples
    --------
    >>> import astropy.units as u
    >>> from probdeconv.shell.allsky_image import AllSkyImageModel
    >>> axes = AllSkyImageModel(1, [100, 200] * u.keV).axes
    >>> type(image_map(axes, np.ones((12, 1)))).__name__
    'AllSkyImageModel'
    """
    from ..shell.allsky_image import AllSkyImageModel

    values = np.asarray(values, dtype=np.float64).reshape(tuple(axes.nbins))
    h = Histogram(axes.copy(), contents=values, unit=unit or None)
    if isinstance(h.axes[0], HealpixAxis):
        return AllSkyImageModel._from_histogram(h)
    return h


def _number(value: Any, path: str, unit: str | None = None) -> float:
    """A float from ``x`` or ``{value, unit}`` (converted to ``unit``)."""
    if isinstance(value, Mapping):
        if "value" not in value:
            raise ParameterError(f"{path}: expected a number or {{value, unit}}; got {value!r}.")
        v = float(value["value"])
        if unit is not None and value.get("unit"):
            v = float((v * u.Unit(value["unit"])).to_value(unit))
        return v
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{path}: got {value!r}; expected a number.") from exc


def parse_prior_section(prior: Mapping | None, *, bkg_names: Sequence[str], nside: int | None,
                        nest: bool = False) -> dict:
    """:func:`~.model.make_config` options from a YAML ``prior:`` section.

    Layout::

        prior:
          image: {kind: flat | gamma | lognormal, k: 1.0, theta: .inf, loc: 0, scale: 1}
          TSV: {coefficient: 1.0e+6}          # optional, also entropy: {coefficient, reference}
          background: {free: true, kind: uniform | gamma, k: 1, theta: .inf,
                       range: {bkg: [0.01, 10.0]}, norm: {bkg: 1.0}}

    ``theta`` and ``loc`` may be ``{value, unit}`` (converted to ``cm-2 s-1 sr-1``).

    Raises
    ------
    ParameterError
        Unknown keys or kinds, missing coefficients, unknown background names.

    Examples
    --------
    >>> opts = parse_prior_section({"image": {"kind": "gamma", "k": 2, "theta": 1e-3}},
    ...                            bkg_names=["bkg"], nside=2)
    >>> opts["image_prior"], opts["gamma"], opts["bkg_free"]
    ('gamma', (2.0, 0.001), True)
    """
    from ..priors import build_priors

    prior = dict(prior or {})
    opts: dict[str, Any] = {}
    image = dict(prior.pop("image", None) or {})
    kind = str(image.pop("kind", "flat"))
    if kind not in ("flat", "gamma", "lognormal"):
        raise ParameterError(f"prior:image:kind: got {kind!r}; valid choices: flat, gamma, "
                             "lognormal.")
    opts["image_prior"] = kind
    if kind == "gamma":
        opts["gamma"] = (_number(image.pop("k", 1.0), "prior:image:k"),
                         _number(image.pop("theta", math.inf), "prior:image:theta", FLUX_UNIT))
    elif kind == "lognormal":
        opts["lognormal"] = (_number(image.pop("loc", 0.0), "prior:image:loc"),
                             _number(image.pop("scale", 1.0), "prior:image:scale"))
    if image:
        raise ParameterError(f"prior:image: unknown key(s) {sorted(image)} for kind {kind!r}; "
                             "valid: kind, k, theta (gamma), loc, scale (lognormal).")
    bkg = dict(prior.pop("background", None) or {})
    names = list(bkg_names)
    opts["bkg_free"] = bool(bkg.pop("free", True))
    opts["bkg_prior"] = str(bkg.pop("kind", "uniform"))
    if opts["bkg_prior"] == "gamma":
        opts["bkg_gamma"] = (_number(bkg.pop("k", 1.0), "prior:background:k"),
                             _number(bkg.pop("theta", math.inf), "prior:background:theta"))
    for key, default, opt in (("range", [0.0, 100.0], "bkg_range"), ("norm", 1.0, "bkg_norm")):
        value = bkg.pop(key, None)
        if value is None:
            continue
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise ParameterError(f"prior:background:{key}: unknown background(s) "
                                     f"{unknown}; the data have {names}.")
            value = [value.get(k, default) for k in names]
        elif key == "range" and np.ndim(value) == 1:
            value = [value] * len(names)
        elif key == "norm" and np.ndim(value) == 0:
            value = [value] * len(names)
        opts[opt] = value
    if bkg:
        raise ParameterError(f"prior:background: unknown key(s) {sorted(bkg)}; valid: free, "
                             "kind, k, theta, range, norm.")
    if prior:
        if nside is None:
            raise ParameterError(f"prior: {sorted(prior)} need a HEALPix image (nside).")
        opts["priors"] = build_priors(prior, nside=int(nside), nest=nest)
    return opts


def problem_from_parameters(data: Sequence[Any], prior: Mapping | None, *, mask: Any = None
                            ) -> Problem:
    """A :class:`Problem` from data interfaces and a YAML ``prior:`` section.

    See :func:`parse_prior_section` for the layout.
    """
    data = list(data)
    keys: list[str] = []
    for d in data:
        keys += [k for k in d.keys_bkg_models() if k not in keys]
    lb = data[0].model_axes[0]
    opts = parse_prior_section(prior, bkg_names=keys, nside=getattr(lb, "nside", None),
                               nest=bool(getattr(lb, "nest", False)))
    return Problem.from_dataif(data, mask=mask, **opts)
