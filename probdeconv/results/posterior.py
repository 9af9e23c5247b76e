"""Posterior products: maps of mean, spread, quantiles and significance; region fluxes.

:class:`Posterior` = a :class:`~probdeconv.forward.problem.Problem` + the
:class:`~probdeconv.inference.draws.Draws` of any sampler (NUTS/HMC, SVI, Laplace,
bootstrap; :meth:`Posterior.from_draws`), turned into maps with units
(:class:`~probdeconv.shell.allsky_image.AllSkyImageModel` on HEALPix axes):

- ``mean_map``, ``std_map``, ``significance_map`` (mean / std) — from the store's running
  moments, no pass over the draws;
- ``quantile_map(q)``, ``credible_interval(prob)`` (equal-tailed), ``median_map`` — from
  the draws, read in blocks of pixels;
- ``faint`` (pixels whose mean is below ``FAINT_SIGNIFICANCE = 2`` standard deviations:
  their posterior is skewed, piled up near zero, so mean ± std misdescribes it) and
  ``upper_limit_map(prob)`` — quote the upper limit (a quantile) for those;
- ``region_flux(region)`` — total flux ``Σ_j λ_j ΔΩ`` of a set of pixels (per draw, so
  its interval includes the pixels' correlations), in ``cm-2 s-1``;
- ``bkg_summary()`` — background normalisation posteriors;
- ``predictive_checks()`` (rootogram and randomised PIT of the counts, :mod:`.predictive`)
  and ``loo()`` (PSIS-LOO, :mod:`.compare`);
- ``diagnostics()``, ``to_arviz()`` (:mod:`.arviz`), ``save(directory)``
  (:mod:`probdeconv.io.posterior`) and ``report(directory)``
  (:mod:`probdeconv.report.posterior`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from histpy import Axes, Histogram

from ..errors import DataError, ParameterError
from ..forward.problem import FLUX_UNIT, Problem
from ..inference.draws import Draws, DrawStore
from ..io.draws import open_draws
from ..io.posterior import read_posterior, save_posterior
from ..report.posterior import write_report
from .arviz import compute_diagnostics, to_datatree
from .compare import ModelLoo, loo
from .maps import image_map, model_axes
from .predictive import PredictiveChecks, predictive_checks

__all__ = ["FAINT_SIGNIFICANCE", "Posterior", "RegionFlux"]

logger = logging.getLogger(__name__)

FAINT_SIGNIFICANCE = 2.0
"""A free pixel whose posterior mean is below this many standard deviations is *faint*."""


class RegionFlux(NamedTuple):
    """Posterior of the total flux of a region (``cm-2 s-1``), per energy bin or summed."""

    mean: np.ndarray
    std: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    prob: float
    n_pixels: int
    unit: str = "cm-2 s-1"


class Posterior:
    """Posterior draws of the image and background normalisations, with summaries.

    Parameters
    ----------
    problem
        The problem that was sampled (``None`` for a posterior read back from disk; then
        ``axes``, ``mask``, ``pixel_area`` and ``bkg_names`` must be given).
    store
        Draws ``image [chain, draw, lb, Ei]``, ``bkg_norm [chain, draw, K]`` (when the
        backgrounds were free) and sample statistics ``stats.<name> [chain, draw]``.
    method
        ``"nuts"``, ``"hmc"``, ``"svi"``, ``"laplace"`` or ``"bootstrap"``.
    settings, timings
        Run settings and timings (seconds), recorded in the saved files and the report.
    start
        The sampler's :class:`~probdeconv.inference.start.Start`, when available.
    mcmc
        The :class:`numpyro.infer.MCMC` object of a single-chunk run (for
        :func:`arviz.from_numpyro`).
    independent
        True when draws are independent (SVI, Laplace, bootstrap): no chains to compare.
    extras
        Further arrays (e.g. the SVI loss history).
    """

    faint_significance = FAINT_SIGNIFICANCE

    def __init__(self, problem: Problem | None, store: DrawStore, *, method: str,
                 settings: dict | None = None, timings: dict | None = None, start: Any = None,
                 mcmc: Any = None, independent: bool = True, extras: dict | None = None,
                 axes: Axes | None = None, mask: np.ndarray | None = None,
                 pixel_area: float | None = None, bkg_names: tuple[str, ...] | None = None,
                 unit: str | None = None, map_image: np.ndarray | None = None,
                 map_bkg: np.ndarray | None = None) -> None:
        self.problem = problem
        self.store = store
        self.method = method
        self.settings = dict(settings or {})
        self.timings = dict(timings or {})
        self.start = start
        self.mcmc = mcmc
        self.independent = bool(independent)
        self.extras = dict(extras or {})
        if problem is not None:
            axes = model_axes(problem.grid, problem.model_shape) if axes is None else axes
            mask = problem.mask if mask is None else mask
            pixel_area = problem.pixel_area if pixel_area is None else pixel_area
            bkg_names = problem.bkg_names if bkg_names is None else bkg_names
            unit = problem.unit if unit is None else unit
        if axes is None or mask is None or pixel_area is None:
            raise DataError("Posterior: give a problem, or axes, mask and pixel_area.")
        self.axes = axes
        self.mask = np.asarray(mask, dtype=bool)
        self.pixel_area = float(pixel_area)
        self.bkg_names = tuple(bkg_names or ())
        self.unit = unit or FLUX_UNIT
        if map_image is None and start is not None:
            map_image, map_bkg = start.map_image, start.map_bkg
        self.map_image = None if map_image is None else np.asarray(map_image)
        self.map_bkg = None if map_bkg is None else np.asarray(map_bkg)
        self._diagnostics = None
        self._qcache: dict = {}

    @classmethod
    def from_draws(cls, problem: Problem, draws: Draws, *, axes: Axes | None = None
                   ) -> Posterior:
        """The posterior of ``problem`` from a sampler's :class:`Draws` record.

        ``axes`` (the image axes) default to those described by ``problem.grid``.

        Examples
        --------
        >>> import numpy as np
        >>> from probdeconv.forward import make_dataset
        >>> from probdeconv.forward.problem import Problem
        >>> from probdeconv.inference.sampling import sample_draws
        >>> ds = make_dataset(np.full((1, 1, 4), 20.0), np.ones((1, 1, 1, 1, 4)),
        ...                   pixel_area=1.0)
        >>> p = Problem.from_datasets([ds])
        >>> post = Posterior.from_draws(p, sample_draws(p, "laplace", num_draws=50))
        >>> post.method, post.n_draws, post.mean_map.axes.nbins.tolist()
        ('laplace', 50, [1, 1])
        """
        return cls(problem, draws.store, method=draws.method, settings=draws.settings,
                   timings=draws.timings, start=draws.start, mcmc=draws.mcmc,
                   independent=draws.independent, extras=draws.extras, axes=axes,
                   map_image=draws.map_image, map_bkg=draws.map_bkg)

    def __repr__(self) -> str:
        return (f"Posterior(method={self.method!r}, chains={self.chains}, "
                f"draws={self.n_draws}, image={tuple(self.axes.nbins)}, "
                f"backgrounds={list(self.bkg_names) if self.has_bkg else 'fixed'})")

    # ------------------------------------------------------------------ sizes
    @property
    def chains(self) -> int:
        return self.store.chains

    @property
    def n_draws(self) -> int:
        """Draws per chain."""
        return self.store.n_draws

    @property
    def has_bkg(self) -> bool:
        """Whether background normalisations were sampled."""
        return "bkg_norm" in self.store.shapes

    @property
    def stat_names(self) -> list[str]:
        return [k[len("stats."):] for k in self.store.names if k.startswith("stats.")]

    def as_map(self, values: np.ndarray, unit: str | None = None) -> Histogram:
        """``[lb, Ei]`` values as a map on the posterior's axes (masked pixels 0; flux unit
        unless ``unit`` is given, ``""`` for dimensionless)."""
        values = np.where(self.mask, values, 0.0)
        return image_map(self.axes, values, self.unit if unit is None else unit)

    # ------------------------------------------------------------------ pixel summaries
    @property
    def mean(self) -> np.ndarray:
        """``[lb, Ei]`` posterior mean (array)."""
        return self.store.mean("image")

    @property
    def std(self) -> np.ndarray:
        """``[lb, Ei]`` posterior standard deviation (array, ``ddof = 1``)."""
        return np.sqrt(self.store.var("image", ddof=1))

    @property
    def mean_map(self) -> Histogram:
        """Posterior mean as a map (flux unit)."""
        return self.as_map(self.mean)

    @property
    def std_map(self) -> Histogram:
        """Posterior standard deviation as a map (flux unit)."""
        return self.as_map(self.std)

    @property
    def significance(self) -> np.ndarray:
        """``mean / std`` per pixel (0 where masked or ``std = 0``)."""
        std = self.std
        return np.where(self.mask & (std > 0), self.mean / np.where(std > 0, std, 1.0), 0.0)

    @property
    def significance_map(self) -> Histogram:
        """``mean / std`` as a dimensionless map."""
        return self.as_map(self.significance, unit="")

    @property
    def median_map(self) -> Histogram:
        return self.quantile_map(0.5)

    def pixel_block(self) -> int:
        """Pixels per block when reading draws (about 250 MB of draws at a time)."""
        per_pixel = 8 * self.chains * max(self.n_draws, 1) * int(self.axes.nbins[1])
        return int(max(1, min(self.axes.nbins[0], 2.5e8 // per_pixel)))

    def _quantiles(self, qs: tuple[float, ...]) -> np.ndarray:
        key = (qs, self.n_draws)
        if key in self._qcache:
            return self._qcache[key]
        n_pix = int(self.axes.nbins[0])
        out = np.empty((len(qs), *self.axes.nbins))
        block = self.pixel_block()
        for start in range(0, n_pix, block):
            draws = self.store.read("image", slice(start, start + block))
            out[:, start:start + block] = np.quantile(draws, qs, axis=(0, 1))
        self._qcache[key] = out
        return out

    def quantiles(self, qs: float | tuple[float, ...]) -> np.ndarray:
        """``[len(qs), lb, Ei]`` quantiles of every pixel (``[lb, Ei]`` for a single q)."""
        single = np.ndim(qs) == 0
        qs = tuple(float(q) for q in np.atleast_1d(qs))
        if not all(0.0 <= q <= 1.0 for q in qs):
            raise ParameterError(f"quantile: got {qs}; expected numbers in [0, 1].")
        out = self._quantiles(qs)
        return out[0] if single else out

    def quantile_map(self, q: float) -> Histogram:
        """The ``q`` quantile of every pixel as a map, e.g. ``quantile_map(0.05)``."""
        return self.as_map(self.quantiles(float(q)))

    @property
    def faint(self) -> np.ndarray:
        """``[lb, Ei]`` bool: free pixels with ``mean / std < faint_significance`` (2).

        Their posterior is skewed and piled up near zero flux: quote an upper limit
        (:meth:`upper_limit_map`) rather than mean ± std (which a log-normal or Gaussian
        approximation gets worst exactly there).
        """
        return self.mask & (self.significance < self.faint_significance)

    def upper_limit_map(self, prob: float = 0.95) -> Histogram:
        """The one-sided ``prob`` upper limit (the ``prob`` quantile) of every pixel.

        Examples
        --------
        >>> import numpy as np
        >>> from probdeconv.forward import make_dataset
        >>> from probdeconv.forward.problem import Problem
        >>> from probdeconv.results.sampling import sample
        >>> ds = make_dataset(np.zeros((1, 1, 5)), np.full((1, 1, 1, 1, 5), 2.0),
        ...                   pixel_area=1.0)   # no counts, exposure 10: Gamma(1, 10)
        >>> post = sample(Problem.from_datasets([ds]), "laplace", num_samples=20000, seed=1)
        >>> bool(post.faint[0, 0]), round(float(np.asarray(post.upper_limit_map())[0, 0]) * 10, 1)
        (True, 3.0)
        """
        if not 0.0 < prob < 1.0:
            raise ParameterError(f"prob: got {prob!r}; expected a number in (0, 1), e.g. 0.95.")
        return self.quantile_map(prob)

    def credible_interval(self, prob: float = 0.9) -> tuple[Histogram, Histogram]:
        """Equal-tailed ``prob`` credible interval per pixel: ``(lower map, upper map)``."""
        if not 0.0 < prob < 1.0:
            raise ParameterError(f"prob: got {prob!r}; expected a number in (0, 1), e.g. 0.9.")
        lo, hi = self.quantiles((0.5 - prob / 2, 0.5 + prob / 2))
        return self.as_map(lo), self.as_map(hi)

    # ------------------------------------------------------------------ regions, backgrounds
    def region_flux(self, region: Any, prob: float = 0.68, *, sum_energy: bool = False
                    ) -> RegionFlux:
        """Total flux ``Σ_{j∈region} λ_j ΔΩ`` (``cm-2 s-1``) with its credible interval.

        Parameters
        ----------
        region
            Boolean ``[lb]`` (all energies) or ``[lb, Ei]`` mask (array or histogram).
        prob
            Mass of the equal-tailed interval.
        sum_energy
            Sum over energy bins (default: one value per bin).
        """
        r = np.asarray(getattr(region, "contents", region), dtype=bool)
        shape = tuple(self.axes.nbins)
        if r.shape == shape[:1]:
            r = np.repeat(r[:, None], shape[1], axis=1)
        if r.shape != shape:
            raise DataError(f"region has shape {r.shape}; expected ({shape[0]},) or {shape} "
                            "(model axes [lb, Ei]).")
        r = r & self.mask
        total = np.zeros((self.chains, self.n_draws, shape[1]))
        block = self.pixel_block()
        for start in range(0, shape[0], block):
            sel = r[start:start + block]
            if sel.any():
                draws = self.store.read("image", slice(start, start + block))
                total += np.einsum("cdpe,pe->cde", draws, sel.astype(float))
        total *= self.pixel_area
        if sum_energy:
            total = total.sum(axis=-1, keepdims=True)
        flat = total.reshape(-1, total.shape[-1])
        lo, hi = np.quantile(flat, (0.5 - prob / 2, 0.5 + prob / 2), axis=0)
        out = RegionFlux(flat.mean(axis=0), flat.std(axis=0, ddof=1), lo, hi, float(prob),
                         int(r.any(axis=1).sum()))
        return out

    def bkg_draws(self) -> np.ndarray:
        """``[chain, draw, K]`` background normalisations (empty when fixed)."""
        if not self.has_bkg:
            return np.zeros((self.chains, self.n_draws, 0))
        return self.store.read("bkg_norm")

    def bkg_summary(self, prob: float = 0.68) -> dict[str, dict[str, float]]:
        """``{name: {mean, std, lower, upper}}`` of each sampled background normalisation."""
        out = {}
        b = self.bkg_draws().reshape(-1, len(self.bkg_names)) if self.has_bkg else None
        for k, name in enumerate(self.bkg_names if self.has_bkg else ()):
            lo, hi = np.quantile(b[:, k], (0.5 - prob / 2, 0.5 + prob / 2))
            out[name] = {"mean": float(b[:, k].mean()), "std": float(b[:, k].std(ddof=1)),
                         "lower": float(lo), "upper": float(hi), "prob": float(prob)}
        return out

    # ------------------------------------------------------------------ delegates
    def diagnostics(self):
        """Convergence diagnostics over all pixels (:class:`~.arviz.Diagnostics`, cached)."""
        if self._diagnostics is None:
            self._diagnostics = compute_diagnostics(self)
        return self._diagnostics

    def predictive_checks(self) -> PredictiveChecks | None:
        """Rootogram and randomised PIT of the counts (:mod:`.predictive`; cached and kept
        in ``extras``, so a saved posterior has them); ``None`` for a posterior read back
        from disk that was saved without them."""
        stored = PredictiveChecks.from_extras(self.extras)
        if stored is not None or self.problem is None:
            return stored
        checks = predictive_checks(self)
        self.extras.update(checks.to_extras())
        return checks

    def loo(self) -> ModelLoo:
        """PSIS-LOO of the posterior (:func:`.compare.loo`; needs the problem — for a saved
        posterior pass its directory to :func:`.compare.loo`)."""
        return loo(self, self.method)

    def to_arviz(self, *, log_likelihood: bool = False, observed_data: bool = True):
        """The draws as an ArviZ :class:`xarray.DataTree` (see :func:`.arviz.to_datatree`)."""
        return to_datatree(self, log_likelihood=log_likelihood, observed_data=observed_data)

    def save(self, directory: str | Path, **options: Any) -> Path:
        """Write maps (HDF5, FITS), draws, DataTree (with the pointwise log-likelihood),
        predictive checks and summary (:mod:`probdeconv.io.posterior`)."""
        self.predictive_checks()  # into extras, saved with the posterior
        return save_posterior(self, directory, **options)

    @classmethod
    def load(cls, directory: str | Path) -> Posterior:
        """Read a posterior directory written by :meth:`save`."""
        parts = read_posterior(directory)
        m = parts["meta"]
        store = DrawStore.restore(**open_draws(parts["draws_path"]))
        return cls(None, store, method=m["method"],
                   settings=m["settings"], timings=m["timings"],
                   independent=m["independent"], extras=parts["extras"], axes=parts["axes"],
                   mask=parts["mask"], pixel_area=m["pixel_area"], bkg_names=m["bkg_names"],
                   unit=m["unit"], map_image=parts["map_image"], map_bkg=parts["map_bkg"])

    def report(self, directory: str | Path, *, truth: Any = None) -> Path:
        """Figures and ``report.md`` (:func:`probdeconv.report.posterior.write_report`)."""
        return write_report(self, directory, truth=truth)
