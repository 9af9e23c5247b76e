"""ArviZ: posterior draws as an :class:`xarray.DataTree`, and convergence diagnostics.

:func:`to_datatree` converts a :class:`~.posterior.Posterior` (duck-typed) with ArviZ's own
converters:
:func:`arviz.from_numpyro` for a single-chunk NUTS/HMC run (the ``MCMC`` object is still
there), :func:`arviz.from_dict` otherwise (SVI, Laplace, bootstrap, or MCMC streamed in
chunks).  Either way the groups and names are the same:

- ``posterior``: ``image (chain, draw, pixel, energy)`` in ``cm-2 s-1 sr-1`` and, when free,
  ``bkg_norm (chain, draw, background)``;
- ``sample_stats`` (MCMC): ``diverging, energy, n_steps, acceptance_rate, step_size, lp,
  tree_depth``;
- ``observed_data``: ``obs_<i> (obs_<i>_time, obs_<i>_bin)``, the counts of dataset ``i``;
- ``constant_data``: ``mask``, ``map_image`` (the MAP the sampler started from);
- ``log_likelihood`` (only with ``log_likelihood=True``): pointwise Poisson
  log-probabilities ``obs_<i> (chain, draw, obs_<i>_point)`` of dataset ``i``
  (:mod:`.loglik`: a point is an observed bin, or the rest of a time bin; coordinates
  ``obs_<i>_kind`` and ``obs_<i>_time``), over thinned draws (the ``draw`` coordinate
  holds the indices kept; attributes ``thin``, ``group``, ``n_bins``).

:func:`compute_diagnostics` evaluates ``arviz.rhat`` (rank-normalised split R-hat),
``arviz.ess`` (bulk and tail), ``arviz.mcse`` (mean) for every pixel — reading the draws
in blocks of pixels — and ``arviz.bfmi`` per chain, and summarises their distribution over
the free pixels (quantiles and the worst pixels).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import arviz as az
import numpy as np
import xarray as xr

from ..errors import DataError
from .loglik import pointwise_log_likelihood, relative_ess

__all__ = ["Diagnostics", "compute_diagnostics", "to_datatree", "log_likelihood_group",
           "RHAT_MAX", "ESS_MIN"]

logger = logging.getLogger(__name__)

RHAT_MAX = 1.01
"""R-hat below which a pixel counts as converged (Vehtari et al. 2021)."""
ESS_MIN = 400
"""Bulk and tail effective sample size a pixel should reach."""

_QUANTILES = (0.0, 0.05, 0.5, 0.95, 1.0)


@dataclasses.dataclass
class Diagnostics:
    """Per-pixel convergence diagnostics (``[lb, Ei]`` arrays, NaN on masked pixels)."""

    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    mcse_mean: np.ndarray
    bkg: dict  # {name: {rhat, ess_bulk, ess_tail, mcse_mean}}
    divergences: int
    bfmi: np.ndarray  # [chain] (empty without an energy statistic)
    chains: int
    draws: int
    independent: bool

    def worst_pixels(self, k: int = 4, by: str = "rhat") -> list[tuple[int, int]]:
        """``(pixel, energy)`` of the ``k`` worst free pixels (highest R-hat / lowest ESS)."""
        values = getattr(self, by)
        flat = np.where(np.isfinite(values), values, np.nan).ravel()
        if not np.isfinite(flat).any():
            return []
        order = np.argsort(-flat if by == "rhat" else flat)
        order = [i for i in order if np.isfinite(flat[i])][:k]
        return [tuple(int(x) for x in np.unravel_index(i, values.shape)) for i in order]

    def summary(self) -> dict[str, Any]:
        """Distribution over free pixels (quantiles 0/5/50/95/100 %), worst pixels, flags."""
        out: dict[str, Any] = {"chains": self.chains, "draws_per_chain": self.draws,
                               "independent_draws": self.independent}
        for name in ("rhat", "ess_bulk", "ess_tail", "mcse_mean"):
            v = getattr(self, name)
            v = v[np.isfinite(v)]
            out[name] = ({f"q{int(q * 100):02d}": float(np.quantile(v, q)) for q in _QUANTILES}
                         if v.size else {})
        out["worst_rhat_pixels"] = [
            {"pixel": p, "energy": e, "rhat": float(self.rhat[p, e]),
             "ess_bulk": float(self.ess_bulk[p, e])} for p, e in self.worst_pixels(5, "rhat")]
        out["lowest_ess_pixels"] = [
            {"pixel": p, "energy": e, "ess_bulk": float(self.ess_bulk[p, e]),
             "ess_tail": float(self.ess_tail[p, e])} for p, e in self.worst_pixels(5, "ess_bulk")]
        out["backgrounds"] = self.bkg
        out["divergences"] = int(self.divergences)
        out["bfmi"] = [float(b) for b in self.bfmi]
        free = np.isfinite(self.ess_bulk)
        out["max_rhat"] = float(np.nanmax(self.rhat)) if free.any() else float("nan")
        out["min_ess_bulk"] = float(np.nanmin(self.ess_bulk)) if free.any() else float("nan")
        out["min_ess_tail"] = float(np.nanmin(self.ess_tail)) if free.any() else float("nan")
        out["converged"] = bool(out["max_rhat"] < RHAT_MAX and out["min_ess_bulk"] > ESS_MIN
                                and out["min_ess_tail"] > ESS_MIN and self.divergences == 0)
        return out

    def to_dataset(self) -> xr.Dataset:
        """Per-pixel diagnostics as an :class:`xarray.Dataset` (``pixel``, ``energy``)."""
        dims = ("pixel", "energy")
        return xr.Dataset({k: (dims, getattr(self, k)) for k in
                           ("rhat", "ess_bulk", "ess_tail", "mcse_mean")},
                          attrs={"divergences": int(self.divergences),
                                 "bfmi": json.dumps([float(b) for b in self.bfmi]),
                                 "backgrounds": json.dumps(self.bkg)})


def _array_diagnostics(draws: np.ndarray) -> dict[str, np.ndarray]:
    """rhat, ess bulk/tail, mcse of ``[chain, draw, ...]`` draws (trailing axes kept)."""
    kw = dict(chain_axis=0, draw_axis=1)
    if draws.shape[0] == 1:  # one chain (independent draws): R-hat of its two halves
        half = draws.shape[1] // 2
        draws = np.stack([draws[0, :half], draws[0, half:2 * half]])
    return {"rhat": np.asarray(az.rhat(draws, **kw)),
            "ess_bulk": np.asarray(az.ess(draws, method="bulk", **kw)),
            "ess_tail": np.asarray(az.ess(draws, method="tail", prob=(0.05, 0.95), **kw)),
            "mcse_mean": np.asarray(az.mcse(draws, method="mean", **kw))}


def compute_diagnostics(post) -> Diagnostics:
    """Diagnostics of every free pixel and background of a posterior (pixel blocks)."""
    shape = tuple(post.axes.nbins)
    maps = {k: np.full(shape, np.nan) for k in ("rhat", "ess_bulk", "ess_tail", "mcse_mean")}
    if post.n_draws >= 4:
        block = post.pixel_block()
        for start in range(0, shape[0], block):
            stop = min(start + block, shape[0])
            free = post.mask[start:stop]
            if not free.any():
                continue
            res = _array_diagnostics(post.store.read("image", slice(start, stop)))
            for k, v in res.items():
                maps[k][start:stop] = np.where(free, v, np.nan)
    bkg = {}
    if post.has_bkg and post.n_draws >= 4:
        res = _array_diagnostics(post.bkg_draws())
        bkg = {name: {k: float(v[i]) for k, v in res.items()}
               for i, name in enumerate(post.bkg_names)}
    names = post.stat_names
    divergences = int(np.sum(post.store.read("stats.diverging"))) if "diverging" in names else 0
    bfmi = np.zeros(0)
    if "energy" in names and post.n_draws >= 4:
        bfmi = np.atleast_1d(np.asarray(az.bfmi(post.store.read("stats.energy"), chain_axis=0,
                                                draw_axis=1)))
    return Diagnostics(**maps, bkg=bkg, divergences=divergences, bfmi=bfmi, chains=post.chains,
                       draws=post.n_draws, independent=post.independent)


def _coords(post) -> dict[str, Any]:
    coords = {"pixel": np.arange(post.axes.nbins[0]), "energy": np.arange(post.axes.nbins[1])}
    if post.has_bkg:
        coords["background"] = list(post.bkg_names)
    return coords


_DIMS = {"image": ["pixel", "energy"], "bkg_norm": ["background"], "z": ["latent"],
         "field_offset": ["energy"]}


def log_likelihood_group(post, **options) -> xr.Dataset:
    """The ``log_likelihood`` group (:func:`.loglik.pointwise_log_likelihood` ``options``)."""
    ll = pointwise_log_likelihood(post, **options)
    data, coords = {}, {"chain": np.arange(post.chains), "draw": ll.draw_index}
    for k, v in ll.values.items():
        data[k] = (("chain", "draw", f"{k}_point"), v)
        coords[f"{k}_kind"] = (f"{k}_point", ll.kind[k])
        coords[f"{k}_time"] = (f"{k}_point", ll.time[k])
    return xr.Dataset(data, coords=coords, attrs={
        "thin": ll.thin, "group": ll.group, "n_bins": ll.n_bins,
        "reff": relative_ess(post, ll.draw_index), "inference_method": post.method})


def to_datatree(post, *, log_likelihood: bool = False, observed_data: bool = True):
    """A :class:`xarray.DataTree` of the posterior (groups listed in the module docstring).

    Parameters
    ----------
    post
        A :class:`~.posterior.Posterior`.
    log_likelihood
        Add the pointwise log-likelihood group (needs the problem; memory
        ``chains × draws × data bins``).
    observed_data
        Add the observed counts (needs the problem).
    """
    coords = _coords(post)
    problem = post.problem
    if post.mcmc is not None:
        dt = az.from_numpyro(post.mcmc, coords=coords, dims=dict(_DIMS))
        posterior = dt["posterior"].to_dataset().drop_vars(["z", "latent"], errors="ignore")
        groups = {"posterior": posterior, "sample_stats": dt["sample_stats"].to_dataset()}
    else:
        data = {"image": post.store.read("image")}
        if post.has_bkg:
            data["bkg_norm"] = post.bkg_draws()
        # the field prior's hyper-parameters (field.amplitude, field.slope, field.offset)
        data.update({k.replace(".", "_"): post.store.read(k) for k in post.store.names
                     if k.startswith("field.")})
        stats = {k: post.store.read(f"stats.{k}") for k in post.stat_names}
        tree = {"posterior": data}
        if stats:
            tree["sample_stats"] = stats
        dt = az.from_dict(tree, coords=coords, dims=dict(_DIMS))
        groups = {name: dt[name].to_dataset() for name in tree}
    groups["posterior"]["image"].attrs["unit"] = post.unit
    if problem is not None and observed_data:
        obs = {}
        for i, ds in enumerate(problem.datasets):
            obs[f"obs_{i}"] = ((f"obs_{i}_time", f"obs_{i}_bin"), np.asarray(ds.counts))
        groups["observed_data"] = xr.Dataset(obs, attrs={
            "datasets": json.dumps(list(problem.dataset_names))})
    const = {"mask": (("pixel", "energy"), post.mask.astype(np.int8))}
    if post.map_image is not None:
        const["map_image"] = (("pixel", "energy"), np.asarray(post.map_image, float))
    groups["constant_data"] = xr.Dataset(const, coords={k: coords[k] for k in
                                                        ("pixel", "energy")},
                                         attrs={"pixel_area_sr": post.pixel_area})
    if log_likelihood:
        if problem is None:
            raise DataError("to_arviz(log_likelihood=True) needs the problem (datasets); "
                            "it is not stored with a saved posterior.")
        groups["log_likelihood"] = log_likelihood_group(post)
    tree = xr.DataTree.from_dict(groups)
    tree.attrs.update({"inference_method": post.method,
                       "settings": json.dumps(post.settings, default=str),
                       "timings_s": json.dumps(post.timings), "flux_unit": post.unit})
    return tree
