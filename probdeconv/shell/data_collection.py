"""cosipy 0.4's ``DataInterfaceCollection``: several data interfaces fitted jointly.

A thin sequence over a list of data interfaces (``DataIF_COSI_DC2``) with the collective
operations cosipy 0.4 moved there from the algorithm base class: expectations per dataset,
the total log-likelihood, back-projections and exposure maps summed over datasets, and
background sums over the datasets that hold a background.  ``ImageDeconvolution.set_dataset``
and the algorithms accept a collection wherever they accept a list.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from histpy import Histogram

from ..errors import DataError

__all__ = ["DataInterfaceCollection"]

logger = logging.getLogger(__name__)


class DataInterfaceCollection(Sequence):
    """Data interfaces fitted jointly, with cosipy 0.4's collective operations.

    Parameters
    ----------
    dataset : list of data interfaces
        E.g. ``DataIF_COSI_DC2.load(...)`` results.

    Raises
    ------
    DataError
        An element is not a data interface (has no ``keys_bkg_models``).

    Examples
    --------
    >>> coll = DataInterfaceCollection([data])                         # doctest: +SKIP
    >>> coll.calc_total_log_likelihood(coll.calc_expectation_list(model, {"bkg": 1.0}))
    ... # doctest: +SKIP
    """

    def __init__(self, dataset: list):
        if isinstance(dataset, DataInterfaceCollection):
            dataset = dataset.dataset
        self._dataset = list(dataset)
        self._index_of_bkg: dict[str, list[int]] = {}
        for i, data in enumerate(self._dataset):
            if not hasattr(data, "keys_bkg_models"):
                raise DataError(f"DataInterfaceCollection: element {i} is a "
                                f"{type(data).__name__}, not a data interface; give "
                                "DataIF_COSI_DC2.load(...) results")
            for key in data.keys_bkg_models():
                self._index_of_bkg.setdefault(key, []).append(i)

    # ------------------------------------------------------------------ access
    @property
    def dataset(self) -> list:
        """The data interfaces (the list itself)."""
        return self._dataset

    def keys_bkg_models(self) -> list[str]:
        """Background names over all datasets, in order of first appearance."""
        return list(self._index_of_bkg)

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx):
        return self._dataset[idx]

    def _check_length(self, items: list, what: str) -> None:
        if len(items) != len(self._dataset):
            raise DataError(f"{what}: {len(items)} histograms for {len(self._dataset)} "
                            "datasets; give one per dataset, in the collection's order")

    # ------------------------------------------------------------- expectations
    def calc_expectation_list(self, model, dict_bkg_norm=None) -> list[Histogram]:
        """Expected counts of each dataset (source plus scaled backgrounds)."""
        return [data.calc_expectation(model, dict_bkg_norm) for data in self._dataset]

    def calc_source_expectation_list(self, model) -> list[Histogram]:
        """Expected counts of the source model alone, per dataset."""
        return [data.calc_source_expectation(model) for data in self._dataset]

    def calc_bkg_expectation_list(self, dict_bkg_norm) -> list[Histogram]:
        """Expected counts of the scaled backgrounds alone, per dataset."""
        return [data.calc_bkg_expectation(dict_bkg_norm) for data in self._dataset]

    def combine_expectation_list(self, expectation_list_src: list,
                                 expectation_list_bkg: list) -> list[Histogram]:
        """Source plus background, dataset by dataset."""
        self._check_length(expectation_list_src, "combine_expectation_list (source)")
        self._check_length(expectation_list_bkg, "combine_expectation_list (background)")
        return [src + bkg for src, bkg in zip(expectation_list_src, expectation_list_bkg)]

    # ---------------------------------------------------------- log-likelihood
    def calc_log_likelihood_list(self, expectation_list: list) -> list[float]:
        """Poisson log-likelihood of each dataset."""
        self._check_length(expectation_list, "calc_log_likelihood_list")
        return [float(data.calc_log_likelihood(e))
                for data, e in zip(self._dataset, expectation_list)]

    def calc_total_log_likelihood(self, expectation_list: list) -> float:
        """Sum of the datasets' log-likelihoods."""
        return float(sum(self.calc_log_likelihood_list(expectation_list)))

    # ----------------------------------------------------------------- summed
    def calc_summed_T_product(self, dataspace_histogram_list: list) -> Histogram:  # noqa: N802
        """``Σ_d A_dᵀ h_d``: back-projections summed over datasets (model axes)."""
        self._check_length(dataspace_histogram_list, "calc_summed_T_product")
        return _summed([data.calc_T_product(h)
                        for data, h in zip(self._dataset, dataspace_histogram_list)])

    def calc_summed_exposure_map(self) -> Histogram:
        """Exposure maps summed over datasets (``cm2 s sr``)."""
        return _summed([data.exposure_map for data in self._dataset])

    def calc_summed_bkg_model(self, key: str) -> float:
        """Total counts of background ``key`` over the datasets that hold it."""
        return float(sum(self._dataset[i].summed_bkg_model(key) for i in self._indices(key)))

    def calc_summed_bkg_model_product(self, key: str, dataspace_histogram_list: list) -> float:
        """``Σ_d Σ_i B_key,d,i h_d,i`` over the datasets that hold background ``key``."""
        self._check_length(dataspace_histogram_list, "calc_summed_bkg_model_product")
        return float(sum(self._dataset[i].calc_bkg_model_product(key,
                                                                 dataspace_histogram_list[i])
                         for i in self._indices(key)))

    def _indices(self, key: str) -> list[int]:
        if key not in self._index_of_bkg:
            raise DataError(f"no dataset has a background model {key!r}; backgrounds: "
                            f"{self.keys_bkg_models()}")
        return self._index_of_bkg[key]

    def __repr__(self) -> str:
        names = [getattr(d, "name", None) for d in self._dataset]
        return f"DataInterfaceCollection({names}, backgrounds {self.keys_bkg_models()})"


def _summed(histograms: list[Histogram]) -> Histogram:
    """Sum of histograms on the same axes (a copy; the first one when there is one)."""
    total = histograms[0].copy()
    for h in histograms[1:]:
        total += h
    return total
