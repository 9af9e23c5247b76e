"""Which model do the data prefer: PSIS-LOO of posteriors and ArviZ's comparison table.

:func:`loo` estimates the expected log pointwise predictive density (``elpd_loo``) of one
posterior from its pointwise log-likelihood (:mod:`.loglik`) by Pareto-smoothed
importance sampling (:func:`arviz.loo`): MCMC draws directly, SVI and Laplace draws with
their importance weights ``log p − log q`` per draw
(:func:`arviz.loo_approximate_posterior`, which corrects for the approximation).
Bootstrap draws have no posterior density and are refused.

:func:`compare` puts several posteriors of the *same data* side by side with
:func:`arviz.compare` (``elpd_loo``, its standard error ``se``, the difference to the best
model ``elpd_diff`` with its standard error ``dse``, stacking weights) and counts the
Pareto ``k`` of each: a point with ``k > good_k`` (ArviZ's threshold
``min(1 − 1/log10 S, 0.7)`` for ``S`` draws) has an unreliable LOO estimate; with many
such points the ``elpd`` of that model is biased (usually upward) and the comparison with
it is not trustworthy — refit with more draws, a less grouped log-likelihood, or K-fold
cross-validation.

Each posterior is a :class:`~.posterior.Posterior` with its problem (computed here) or a
posterior directory written by ``probdeconv sample`` (read from its ``posterior.nc``).

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> from probdeconv.forward.problem import Problem
>>> from probdeconv.results.sampling import sample
>>> rng = np.random.default_rng(0)
>>> ds = make_dataset(rng.poisson(20.0, (1, 1, 8)).astype(float), np.ones((1, 1, 1, 1, 8)),
...                   pixel_area=1.0)
>>> a = sample(Problem.from_datasets([ds]), "laplace", num_draws=400, seed=0)
>>> b = sample(Problem.from_datasets([ds], image_prior="gamma", gamma=(2.0, 0.1)),
...            "laplace", num_draws=400, seed=1)
>>> result = compare({"flat": a, "gamma": b})
>>> list(result.table.columns[:3]), result.table.index[0] in ("flat", "gamma")
(['rank', 'elpd_diff', 'dse'], True)
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError, ParameterError
from ..io.posterior import read_log_likelihood
from .arviz import log_likelihood_group
from .loglik import APPROXIMATE_METHODS, importance_log_weights

__all__ = ["ModelLoo", "Comparison", "loo", "compare", "VAR_NAME"]

logger = logging.getLogger(__name__)

VAR_NAME = "counts"
"""Name of the pointwise log-likelihood variable handed to ArviZ (all datasets' points)."""


class ModelLoo(NamedTuple):
    """PSIS-LOO of one posterior, with what an analyst checks."""

    elpd: Any  # arviz ELPDData (pointwise)
    method: str
    approximate: bool  # importance-weight correction of an approximate posterior
    n_points: int
    n_draws: int
    thin: int
    group: int
    observed: tuple  # total counts per dataset
    pareto_k: np.ndarray  # [points]
    good_k: float
    approx_k: float  # Pareto k of the weights p/q themselves (NaN for MCMC)

    @property
    def n_bad_k(self) -> int:
        """Points with ``good_k < k``."""
        return int(np.sum(self.pareto_k > self.good_k))

    @property
    def n_very_bad_k(self) -> int:
        """Points with ``k > 1``."""
        return int(np.sum(self.pareto_k > 1.0))

    def diagnostic_line(self) -> str:
        """Pareto k, draws and reductions in one line."""
        k = self.pareto_k
        far = "" if self.approx_k <= 0.7 else " > 0.7: q too far from the posterior"
        approx = (f" (approximation corrected by importance weights p/q, whose own Pareto k "
                  f"is {self.approx_k:.2f}{far})" if self.approximate else "")
        return (f"{self.method}{approx}: {self.n_points} points, {self.n_draws} draws (every "
                f"{self.thin} of each chain), bins per point {self.group}; Pareto k max "
                f"{k.max():.2f}, {self.n_bad_k} above {self.good_k:.2f}, {self.n_very_bad_k} "
                "above 1.")


class Comparison(NamedTuple):
    """ArviZ's comparison table and the LOO of each model (best first)."""

    table: pd.DataFrame
    models: dict  # {name: ModelLoo}

    def warnings(self) -> list[str]:
        """A line per model with unreliable points (``k > good_k``) or an approximation
        too far from its posterior (Pareto k of ``p/q`` above 0.7)."""
        out = []
        for name, m in self.models.items():
            if m.approximate and not m.approx_k <= 0.7:
                out.append(f"{name}: the {m.method} approximation is far from the posterior "
                           f"(Pareto k of its importance weights {m.approx_k:.2f} > 0.7): "
                           "its elpd_loo is not reliable; sample it with NUTS.")
            if m.n_bad_k:
                out.append(f"{name}: {m.n_bad_k} of {m.n_points} points have Pareto k > "
                           f"{m.good_k:.2f} ({m.n_very_bad_k} > 1): its elpd_loo is not "
                           "reliable there (more draws, an ungrouped log-likelihood, or "
                           "K-fold cross-validation).")
        return out


def _combined(ll: xr.Dataset) -> xr.DataArray:
    """All datasets' points as one ``(chain, draw, point)`` array."""
    parts = [ll[k].rename({f"{k}_point": "point"}).drop_vars(
        [c for c in ll[k].coords if c not in ("chain", "draw")]) for k in sorted(ll.data_vars)]
    out = xr.concat(parts, dim="point") if len(parts) > 1 else parts[0]
    return out.assign_coords(point=np.arange(out.sizes["point"])).rename(VAR_NAME)


def _inputs(source: Any) -> dict:
    """``log_likelihood`` dataset, stats, method, observed totals of a posterior or directory."""
    if isinstance(source, str | Path):
        return read_log_likelihood(source)
    if getattr(source, "problem", None) is None:
        raise DataError("compare: a Posterior without its problem (read back from disk); pass "
                        "its directory instead, which holds the pointwise log-likelihood.")
    ll = log_likelihood_group(source)
    stats = None
    weights = importance_log_weights(source, np.asarray(ll["draw"]))
    if weights is not None:
        stats = xr.Dataset({"log_p": (("chain", "draw"), weights[0]),
                            "log_q": (("chain", "draw"), weights[1])},
                           coords={"draw": ll["draw"]})
    obs = {f"obs_{i}": float(np.sum(ds.counts)) for i, ds in enumerate(source.problem.datasets)}
    return {"log_likelihood": ll, "sample_stats": stats, "method": source.method,
            "observed": obs}


def loo(source: Any, name: str = "posterior") -> ModelLoo:
    """PSIS-LOO of a posterior (a :class:`~.posterior.Posterior` with its problem, or a
    posterior directory).

    Raises
    ------
    ParameterError
        A bootstrap posterior (its draws have no posterior density).
    DataError, FileFormatError
        No pointwise log-likelihood, or an SVI / Laplace posterior without its importance
        weights.
    """
    inp = _inputs(source)
    method = inp["method"]
    if method == "bootstrap":
        raise ParameterError(f"{name}: bootstrap draws are replicates of an estimator, not "
                             "posterior draws, and have no density for importance weights; "
                             "PSIS-LOO needs a posterior sampled with nuts, hmc, svi or "
                             "laplace.")
    ll = inp["log_likelihood"]
    arr = _combined(ll)
    tree = xr.DataTree.from_dict({"log_likelihood": xr.Dataset({VAR_NAME: arr})})
    approximate = method in APPROXIMATE_METHODS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto k: counted and reported below
        if approximate:
            stats = inp["sample_stats"]
            if stats is None or not {"log_p", "log_q"} <= set(stats.data_vars):
                raise DataError(f"{name}: {method} posterior without the per-draw densities "
                                "log_p / log_q (sample_stats; written by an older probdeconv): "
                                "sample it again to compare it by PSIS-LOO.")
            draws = np.asarray(ll["draw"])
            sel = {"draw": draws} if stats.sizes["draw"] != draws.size else {}
            log_p = xr.DataArray(np.asarray(stats["log_p"].sel(sel) if sel else stats["log_p"]),
                                 dims=("chain", "draw"))
            log_q = xr.DataArray(np.asarray(stats["log_q"].sel(sel) if sel else stats["log_q"]),
                                 dims=("chain", "draw"))
            if not np.all(np.isfinite(log_q)) or not np.any(np.isfinite(log_p)):
                raise DataError(f"{name}: the importance weights log p − log q are not finite "
                                "(no draw inside the posterior's support); the approximation "
                                "cannot be corrected: use space='log' or NUTS.")
            inside = np.flatnonzero(np.all(np.isfinite(log_p.values), axis=0))
            if inside.size < log_p.sizes["draw"]:  # weight 0 outside the support: drop them
                logger.warning("%s: %d of %d draws lie outside the posterior's support "
                               "(weight 0); PSIS-LOO uses the other %d.", name,
                               log_p.sizes["draw"] - inside.size, log_p.sizes["draw"],
                               inside.size)
                arr, log_p, log_q = (x.isel(draw=inside) for x in (arr, log_p, log_q))
                tree = xr.DataTree.from_dict({"log_likelihood": xr.Dataset({VAR_NAME: arr})})
            elpd = az.loo_approximate_posterior(tree, log_p=log_p, log_q=log_q,
                                                pointwise=True, var_name=VAR_NAME)
            approx_k = float((log_p - log_q).azstats.psislw(r_eff=1.0,
                                                              dim=["chain", "draw"])[1])
        else:
            approx_k = float("nan")
            elpd = az.loo(tree, pointwise=True, var_name=VAR_NAME,
                          reff=float(ll.attrs.get("reff", 1.0)))
    k = np.asarray(elpd.pareto_k).ravel()
    return ModelLoo(elpd, method, approximate, int(arr.sizes["point"]),
                    int(arr.sizes["chain"] * arr.sizes["draw"]), int(ll.attrs.get("thin", 1)),
                    int(ll.attrs.get("group", 1)),
                    tuple(inp["observed"][key] for key in sorted(inp["observed"])),
                    k, float(elpd.good_k), approx_k)


def _named(posteriors: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    if isinstance(posteriors, Mapping):
        out = {str(k): v for k, v in posteriors.items()}
    else:
        out = {}
        for i, p in enumerate(posteriors):
            name = Path(p).name if isinstance(p, str | Path) else f"model{i}"
            if name in out:
                name = f"{name}#{i}"
            out[name] = p
    if len(out) < 2:
        raise ParameterError(f"compare: got {len(out)} posterior(s); give two or more (e.g. "
                             "`probdeconv compare post_a/ post_b/`).")
    return out


def compare(posteriors: Mapping[str, Any] | Sequence[Any], *, method: str = "stacking"
            ) -> Comparison:
    """PSIS-LOO comparison of posteriors of the same data (see the module docstring).

    Parameters
    ----------
    posteriors
        ``{name: posterior}`` or a list (names: the directory names, else ``model<i>``);
        each a :class:`~.posterior.Posterior` with its problem or a posterior directory.
    method
        Weights of :func:`arviz.compare`: ``"stacking"`` (default), ``"BB-pseudo-BMA"`` or
        ``"pseudo-BMA"``.

    Raises
    ------
    ParameterError
        Fewer than two posteriors, or a bootstrap posterior.
    DataError
        Posteriors of different data (their points or total counts differ).
    FileFormatError
        A directory that is not a posterior written by ``probdeconv sample``.
    """
    named = _named(posteriors)
    models = {name: loo(p, name) for name, p in named.items()}
    first_name, first = next(iter(models.items()))
    for name, m in models.items():
        if m.n_points != first.n_points or not np.allclose(m.observed, first.observed):
            raise DataError(f"compare: {name!r} has {m.n_points} points and counts "
                            f"{m.observed}, {first_name!r} {first.n_points} and "
                            f"{first.observed}; LOO compares posteriors of the same data with "
                            "the same points (the same grouping of the log-likelihood).")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = az.compare({k: m.elpd for k, m in models.items()}, method=method,
                           round_to="none")
    logger.info("compare: %s", ", ".join(f"{k} elpd_loo {m.elpd.elpd:.1f}"
                                         for k, m in models.items()))
    return Comparison(table, {k: models[k] for k in table.index})
