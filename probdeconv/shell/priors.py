"""cosipy's prior classes (``PriorBase``, ``PriorTSV``, ``PriorEntropy``) over probdeconv's priors.

The log-densities are those of :mod:`probdeconv.priors` (the ones MAP-RL and the NumPyro
model use); gradients come from ``jax.grad``.  cosipy's module paths work after the
import change: ``probdeconv.prior_base``, ``probdeconv.prior_tsv`` and
``probdeconv.prior_entropy`` are this module (registered by ``probdeconv/__init__.py``),
so ``from cosipy.image_deconvolution.prior_tsv import PriorTSV`` becomes
``from probdeconv.prior_tsv import PriorTSV``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import astropy.units as u
import jax.numpy as jnp
import numpy as np

from .. import priors
from ..errors import ModelTypeError, ParameterError
from .allsky_image import AllSkyImageModel

__all__ = ["PriorBase", "PriorTSV", "PriorEntropy"]

logger = logging.getLogger(__name__)


def _setting(parameter: Any, key: str, prior: str) -> Any:
    try:
        return parameter[key]
    except (KeyError, TypeError, IndexError) as err:
        raise ParameterError(f"prior:{prior}:{key}: missing; the {prior} prior needs it "
                             f"(e.g. {{coefficient: 1.0e+6}}).") from err


def _number(value: Any, path: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise ParameterError(f"{path}: got {value!r}; expected a finite number.") from err
    if not np.isfinite(out):
        raise ParameterError(f"{path}: got {value!r}; expected a finite number.")
    return out


def _values(model) -> jnp.ndarray:
    """The model's contents in its own unit, as a float64 array ``[lb, Ei]``."""
    c = model.contents
    return jnp.asarray(np.asarray(c.value if isinstance(c, u.Quantity) else c, np.float64))


def _coefficient(value: Any, path: str) -> float:
    """A prior's coefficient: a finite number >= 0 (a negative one rewards what it should
    penalise)."""
    out = _number(value, path)
    if out < 0:
        raise ParameterError(f"{path}: got {value!r}; expected a number >= 0 (a negative "
                             "coefficient turns the prior's penalty into a reward).")
    return out


def _per_model_unit(grad: jnp.ndarray, model) -> np.ndarray | u.Quantity:
    """A gradient with the unit inverse to the model's (a plain array without a unit)."""
    g = np.asarray(grad)
    return g / model.unit if getattr(model, "unit", None) is not None else g


class PriorBase(ABC):
    """Base of cosipy's prior classes: a log-prior and its gradient for one model class.

    Parameters
    ----------
    parameter : dict or yayc.Configurator
        The prior's settings (``coefficient``, ...).
    model : ModelBase
        A model of a class in :attr:`usable_model_classes`.

    Attributes
    ----------
    usable_model_classes : list of type
        Model classes the prior can be computed for.
    coefficient : float
        Strength of the prior.
    model_class : type

    Raises
    ------
    ModelTypeError
        (a ``TypeError``, as cosipy's) ``model`` is of a class the prior cannot use.
    """

    usable_model_classes: ClassVar[list] = []

    def __init__(self, parameter, model):
        if not self.is_calculable(model):
            raise ModelTypeError(
                f"{type(self).__name__}: a model of class {type(model).__name__} cannot be "
                f"used; expected one of {[c.__name__ for c in self.usable_model_classes]}.")
        self.parameter = parameter
        self.coefficient = _setting(parameter, "coefficient", type(self).__name__)
        self.model_class = type(model)

    def is_calculable(self, model) -> bool:
        """True when ``model``'s class is one of :attr:`usable_model_classes`."""
        return type(model) in self.usable_model_classes

    @abstractmethod
    def log_prior(self, model) -> float:
        """Log-prior of ``model`` (a number)."""
        raise NotImplementedError(f"{type(self).__name__} must define log_prior")

    @abstractmethod
    def grad_log_prior(self, model):
        """Gradient of the log-prior: the model's shape, unit inverse to the model's."""
        raise NotImplementedError(f"{type(self).__name__} must define grad_log_prior")


class _JaxPrior(PriorBase):
    """A cosipy prior class over a :mod:`probdeconv.priors` log-density (``self.prior``)."""

    usable_model_classes: ClassVar[list] = [AllSkyImageModel]
    prior: Any

    def log_prior(self, model) -> float:
        """Log-prior of ``model`` (its values taken in the model's unit)."""
        return float(self.prior.log_prob(_values(model)))

    def grad_log_prior(self, model):
        """``∇ log P`` by ``jax.grad``, per unit of the model (``model.shape``)."""
        return _per_model_unit(priors.grad_log_prior([self.prior], _values(model)), model)


class PriorTSV(_JaxPrior):
    """Total squared variation between HEALPix neighbours: ``−c Σ_i Σ_j∈N(i) (λ_i − λ_j)²``.

    As cosipy's, with the 8 neighbours of ``healpy.get_all_neighbours`` (a missing one
    counts as the pixel itself).

    Parameters
    ----------
    parameter : dict or yayc.Configurator
        ``{coefficient: c}``.
    model : AllSkyImageModel

    Attributes
    ----------
    neighbour_pixel_index : ndarray, shape (8, npix)
    num_neighbour_pixels : ndarray, shape (npix,)
    prior : probdeconv.priors.TSVPrior

    Examples
    --------
    >>> import numpy as np, astropy.units as u
    >>> m = AllSkyImageModel(1, [500.0, 510.0] * u.keV)
    >>> m[:, 0] = np.arange(12.0) * m.unit
    >>> tsv = PriorTSV({"coefficient": 1.0}, m)
    >>> tsv.log_prior(m), tsv.grad_log_prior(m)[0, 0]
    (-1176.0, <Quantity 92. cm2 s sr>)
    """

    def __init__(self, parameter, model):
        super().__init__(parameter, model)
        axis = model.axes[0]
        nest = bool(axis.is_nested)
        self.prior = priors.TSVPrior.build(
            int(axis.nside), _coefficient(self.coefficient, "prior:TSV:coefficient"), nest)
        table = priors.neighbour_table(int(axis.nside), nest)  # [pix, 8]
        self.neighbour_pixel_index = table.T.copy()
        self.num_neighbour_pixels = np.sum(table != np.arange(table.shape[0])[:, None], axis=1)


class PriorEntropy(_JaxPrior):
    """Maximum entropy relative to a reference map ``m``: ``c Σ λ (1 − log(λ / m))``.

    Parameters
    ----------
    parameter : dict or yayc.Configurator
        ``{coefficient: c, reference_map: {value: m, unit: "cm-2 s-1 sr-1"}}``.
    model : AllSkyImageModel

    Attributes
    ----------
    reference_map : Quantity
    prior : probdeconv.priors.EntropyPrior

    Examples
    --------
    >>> import numpy as np, astropy.units as u
    >>> m = AllSkyImageModel(1, [500.0, 510.0] * u.keV)
    >>> m[:, 0] = (np.arange(12.0) + 1) * m.unit
    >>> ent = PriorEntropy({"coefficient": 1.0,
    ...                     "reference_map": {"value": 1.0, "unit": "cm-2 s-1 sr-1"}}, m)
    >>> round(ent.log_prior(m), 6), round(float(ent.grad_log_prior(m)[1, 0].value), 6)
    (-80.278558, -0.693147)
    """

    def __init__(self, parameter, model):
        super().__init__(parameter, model)
        ref = _setting(parameter, "reference_map", "PriorEntropy")
        if not isinstance(ref, Mapping) and not hasattr(ref, "keys"):
            raise ParameterError(f"prior:entropy:reference_map: got {ref!r}; expected "
                                 "{value: number, unit: astropy unit string}.")
        value = _number(ref["value"], "prior:entropy:reference_map:value")
        try:
            self.reference_map = value * u.Unit(ref.get("unit", model.unit))
            reference = self.reference_map.to_value(model.unit) if model.unit is not None \
                else value
        except (ValueError, TypeError, u.UnitsError) as err:
            raise ParameterError(f"prior:entropy:reference_map:unit: {ref.get('unit')!r} is "
                                 f"not a unit convertible to the model's ({model.unit}).") from err
        self.prior = priors.EntropyPrior(_coefficient(self.coefficient,
                                                      "prior:entropy:coefficient"),
                                         jnp.asarray(reference))
