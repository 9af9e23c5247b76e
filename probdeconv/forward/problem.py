"""The problem every engine takes: forward datasets, the posterior configuration and names.

A :class:`Problem` holds arrays and plain metadata only — no histograms: the
:class:`~probdeconv.forward.Dataset` tuple (fitted jointly), the
:class:`~probdeconv.forward.posterior.SkyModelConfig` (priors, mask, backgrounds), the
background and dataset names, the flux unit and an :class:`ImageGrid` that describes the
image axes in plain numbers (HEALPix NSIDE and scheme, energy edges) so that
:mod:`probdeconv.results` can turn arrays back into maps with units.

Build it from forward datasets with :meth:`Problem.from_datasets`; from cosipy-style data
interfaces with :func:`probdeconv.shell.problem.problem_from_dataif`.

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
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError, ParameterError
from ..units import FLUX_UNIT_NAME
from .dataset import Dataset, precision_of
from .posterior import SkyModelConfig, make_config
from .precision import with_precision

__all__ = ["FLUX_UNIT", "ImageGrid", "Problem"]

FLUX_UNIT = FLUX_UNIT_NAME


class ImageGrid(NamedTuple):
    """The image axes ``[lb, Ei]`` in plain numbers (what a map needs besides its values).

    ``nside`` is the HEALPix NSIDE of ``lb`` (``None``: ``lb`` is a plain pixel index);
    ``energy_edges`` the ``Ei`` bin edges in ``energy_unit``.
    """

    nside: int | None
    energy_edges: tuple[float, ...]
    energy_unit: str = "keV"
    nest: bool = False
    coordsys: str | None = "galactic"
    labels: tuple[str, str] = ("lb", "Ei")
    energy_scale: str = "linear"

    @property
    def shape(self) -> tuple[int, int]:
        n_pix = 12 * self.nside**2 if self.nside else -1
        return n_pix, len(self.energy_edges) - 1


@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything a sampler or MAP engine needs: datasets, configuration and names.

    Attributes
    ----------
    datasets : tuple of Dataset
        Forward-model datasets, fitted jointly.
    config : SkyModelConfig
        Priors, mask and background set-up (:func:`~.posterior.make_config`).
    grid : ImageGrid or None
        The image axes in plain numbers, for maps with units; ``None`` gives generic axes.
    unit : str
        Flux unit of the image values (``cm-2 s-1 sr-1``).
    bkg_names : tuple of str
        Name of each global background normalisation.
    dataset_names : tuple of str
    """

    datasets: tuple[Dataset, ...]
    config: SkyModelConfig
    grid: ImageGrid | None = None
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
        if self.grid is not None and self.grid.nside and self.grid.shape != shape:
            raise DataError(f"Problem: the image grid has {self.grid.shape} bins (NSIDE "
                            f"{self.grid.nside}); expected {shape}.")
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

    @property
    def precision(self) -> str:
        """``"float64"``, ``"float32"`` or ``"mixed"`` (float32 response products)."""
        return precision_of(self.datasets[0])

    # ------------------------------------------------------------------ builder
    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset], config: SkyModelConfig | None = None,
                      *, grid: ImageGrid | None = None, bkg_names: Sequence[str] = (),
                      dataset_names: Sequence[str] = (), precision: str | None = None,
                      **config_options: Any) -> Problem:
        """A problem from forward datasets; ``config`` or :func:`~.posterior.make_config`
        options.  ``precision`` (``"full"`` or ``"mixed"``) re-stores every dataset's
        response for that precision (:func:`~.precision.with_precision`); ``None`` keeps it.

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
        if precision is not None:
            datasets = tuple(with_precision(ds, precision) for ds in datasets)
        if config is None:
            n_bkg = 1 + max((max(ds.bkg_index, default=-1) for ds in datasets), default=-1)
            config_options.setdefault("n_bkg", n_bkg)
            config_options.setdefault("dtype", datasets[0].counts.dtype)
            config = make_config(datasets[0].model_shape, **config_options)
        elif config_options:
            raise ParameterError(f"Problem.from_datasets: give either config or make_config "
                                 f"options, not both (got {sorted(config_options)}).")
        return cls(datasets, config, grid, bkg_names=tuple(bkg_names),
                   dataset_names=tuple(dataset_names))
