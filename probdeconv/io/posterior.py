"""A posterior directory: maps (HDF5, FITS), draws, ArviZ DataTree and a summary.

:func:`save_posterior` writes, each file atomically (temporary name, then rename)::

    draws.h5                the draws [chain, draw, ...] and running moments (:mod:`.draws`)
    posterior.nc            ArviZ DataTree (posterior, sample_stats, observed_data,
                            constant_data, diagnostics), netCDF4 via h5netcdf
    posterior_E<e>.fits     HEALPix maps of energy bin e, columns MEAN, STD, LOWER, UPPER,
                            SIGNIFICANCE (``healpy.read_map(path)`` reads the mean;
                            ``field=1`` the std, ...); BUNIT, E_MIN / E_MAX (keV),
                            METHOD, NCHAINS, NDRAWS (:mod:`.maps`)
    summary.yml             method, settings, timings, diagnostics summary, backgrounds
    posterior.h5            histpy groups mean, std, median, lower, upper, significance,
                            map, rhat, ess_bulk, ess_tail, mcse_mean; group ``posterior``
                            with the metadata — written last: its presence marks a
                            complete posterior directory

:func:`load_posterior` reads it back as a :class:`~probdeconv.results.posterior.Posterior`
(without the problem: no observed data or log-likelihood).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr
import yaml
from histpy import HealpixAxis, Histogram

from ..errors import FileFormatError
from .atomic import atomic_target
from .draws import write_draws
from .histpy_h5 import read_histogram
from .maps import write_healpix_maps

__all__ = ["MARKER", "save_posterior", "read_posterior", "is_posterior_directory",
           "read_log_likelihood"]

logger = logging.getLogger(__name__)

MARKER = "posterior.h5"
_FORMAT = "probdeconv-posterior-1"
FITS_COLUMNS = ("MEAN", "STD", "LOWER", "UPPER", "SIGNIFICANCE")


def is_posterior_directory(directory: str | Path) -> bool:
    """Whether ``directory`` holds a complete posterior (its ``posterior.h5`` marker)."""
    return (Path(directory) / MARKER).is_file()


def _atomic_yaml(path: Path, data: dict) -> None:
    with atomic_target(path, True, "summary") as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))


def _plain(obj: Any) -> Any:
    """YAML/JSON-safe copy (numpy scalars and arrays to Python)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_posterior(post, directory: str | Path, *, prob: float = 0.9, arviz: bool = True,
                   arviz_max_bytes: float = 2e9, log_likelihood: bool = True) -> Path:
    """Write a posterior directory (see the module docstring); returns the directory.

    Parameters
    ----------
    post
        A :class:`~probdeconv.results.posterior.Posterior`.
    prob
        Mass of the credible interval stored as LOWER / UPPER.
    arviz
        Write ``posterior.nc`` (skipped, with a warning, above ``arviz_max_bytes`` of draws:
        ``draws.h5`` has them all).
    log_likelihood
        Include the pointwise log-likelihood in ``posterior.nc`` (when the posterior has its
        problem; thinned and grouped to a size limit, :mod:`probdeconv.results.loglik`):
        what ``probdeconv compare`` reads.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).unlink(missing_ok=True)  # incomplete until rewritten at the end
    draws = d / "draws.h5"
    write_draws(draws, post.store)  # nothing to do when the store streams into it
    diag = post.diagnostics()
    lower, upper = post.credible_interval(prob)
    maps: dict[str, Histogram] = {
        "mean": post.mean_map, "std": post.std_map, "median": post.median_map,
        "lower": lower, "upper": upper, "significance": post.significance_map}
    if post.map_image is not None:
        maps["map"] = post.as_map(post.map_image)
    for name in ("rhat", "ess_bulk", "ess_tail", "mcse_mean"):
        maps[name] = post.as_map(np.nan_to_num(getattr(diag, name), nan=0.0),
                               unit=post.unit if name == "mcse_mean" else "")
    summary = {"format": _FORMAT, "method": post.method, "chains": post.chains,
               "draws_per_chain": post.n_draws, "credible_mass": prob,
               "settings": _plain(post.settings), "timings_s": _plain(post.timings),
               "diagnostics": _plain(diag.summary()), "backgrounds": post.bkg_summary(),
               "files": ["posterior.h5", "draws.h5"]}
    if isinstance(post.axes[0], HealpixAxis):
        summary["files"] += _write_fits(d, post, maps)
    if arviz:
        if post.store.nbytes() > arviz_max_bytes:
            logger.warning("posterior.nc skipped: %.3g GB of draws (limit %.3g GB); the draws "
                           "are in draws.h5.", post.store.nbytes() / 1e9, arviz_max_bytes / 1e9)
        else:
            _write_datatree(d / "posterior.nc", post, diag, log_likelihood)
            summary["files"].append("posterior.nc")
    _atomic_yaml(d / "summary.yml", summary)
    with atomic_target(d / MARKER, True, "posterior maps") as tmp:
        tmp.unlink()  # histpy starts a new HDF5 file
        for name, h in maps.items():
            h.write(tmp, name=name, overwrite=True)
        with h5py.File(tmp, "a") as f:
            g = f.create_group("posterior")
            g.attrs["format"] = _FORMAT
            g.attrs["method"] = post.method
            g.attrs["independent"] = post.independent
            g.attrs["pixel_area_sr"] = post.pixel_area
            g.attrs["unit"] = post.unit
            g.attrs["credible_mass"] = prob
            g.attrs["bkg_names"] = json.dumps(list(post.bkg_names))
            g.attrs["settings"] = json.dumps(_plain(post.settings), default=str)
            g.attrs["timings"] = json.dumps(_plain(post.timings))
            g.create_dataset("mask", data=post.mask.astype(np.int8))
            if post.map_bkg is not None:
                g.create_dataset("map_bkg", data=np.asarray(post.map_bkg, dtype=float))
            for k, v in post.extras.items():
                g.create_dataset(f"extras/{k}", data=np.asarray(v))
    logger.info("posterior written to %s", d)
    return d


def _write_fits(d: Path, post, maps: dict) -> list[str]:
    """One HEALPix FITS file per energy bin (:func:`.maps.write_healpix_maps`: the unit
    spelled as in the run's image files, the energy range, method and draws)."""
    nest = bool(post.axes[0].is_nested)
    edges = post.axes[1].edges
    edges = edges.to_value("keV") if hasattr(edges, "to_value") else np.asarray(edges, float)
    names = []
    cols = [maps[k.lower()] for k in FITS_COLUMNS]
    for e in range(post.axes.nbins[1]):
        path = d / f"posterior_E{e}.fits"
        write_healpix_maps(path, {k: np.asarray(m, dtype=np.float64)[:, e]
                                  for k, m in zip(FITS_COLUMNS, cols)},
                           nest=nest, unit=post.unit, energy_range_kev=(edges[e], edges[e + 1]),
                           coordsys=getattr(getattr(post.axes[0], "coordsys", None), "name",
                                            None) or "galactic",
                           provenance={"METHOD": (post.method, "posterior method"),
                                       "NCHAINS": (int(post.chains), "chains"),
                                       "NDRAWS": (int(post.n_draws), "draws per chain")},
                           unitless=("SIGNIFICANCE",))
        names.append(path.name)
    return names


def _write_datatree(path: Path, post, diag, log_likelihood: bool) -> None:
    dt = post.to_arviz(log_likelihood=log_likelihood and post.problem is not None,
                       observed_data=post.problem is not None)
    dt["diagnostics"] = diag.to_dataset()
    with atomic_target(path, True, "ArviZ DataTree") as tmp:
        dt.to_netcdf(tmp, engine="h5netcdf")


def read_posterior(directory: str | Path) -> dict:
    """The parts of a posterior directory written by :func:`save_posterior`, as plain data.

    Returns a dict with ``meta`` (method, settings, timings, unit, pixel area, background
    names), ``mask``, ``map_bkg``, ``extras``, ``axes`` (the model axes), ``map_image`` and
    ``draws_path``; :meth:`probdeconv.results.posterior.Posterior.load` builds the posterior.

    Raises
    ------
    FileFormatError
        ``posterior.h5`` missing or not in this layout.
    """
    d = Path(directory)
    marker = d / MARKER
    if not marker.is_file():
        raise FileFormatError(f"{d}: no {MARKER}; not a complete posterior directory (write "
                              "one with Posterior.save or `probdeconv sample`).")
    try:
        with h5py.File(marker, "r") as f:
            g = f["posterior"]
            if g.attrs.get("format") != _FORMAT:
                raise FileFormatError(f"{marker}: format {g.attrs.get('format')!r}, expected "
                                      f"{_FORMAT!r}.")
            meta = {k: g.attrs[k] for k in g.attrs}
            mask = np.asarray(g["mask"], dtype=bool)
            map_bkg = np.asarray(g["map_bkg"]) if "map_bkg" in g else None
            extras = ({k: np.asarray(v) for k, v in g["extras"].items()}
                      if "extras" in g else {})
            has_map = "map" in f
    except (OSError, KeyError) as exc:
        raise FileFormatError(f"{marker}: cannot be read as a posterior ({exc}); rewrite it "
                              "with Posterior.save.") from exc
    mean = read_histogram(marker, "mean")
    map_image = np.asarray(read_histogram(marker, "map"), dtype=float) if has_map else None
    return {
        "meta": {"method": str(meta["method"]),
                 "settings": json.loads(meta.get("settings", "{}")),
                 "timings": json.loads(meta.get("timings", "{}")),
                 "independent": bool(meta.get("independent", False)),
                 "pixel_area": float(meta["pixel_area_sr"]),
                 "bkg_names": tuple(json.loads(meta.get("bkg_names", "[]"))),
                 "unit": str(meta.get("unit", mean.unit))},
        "mask": mask, "map_bkg": map_bkg, "extras": extras, "axes": mean.axes,
        "map_image": map_image, "draws_path": d / "draws.h5",
    }


def read_log_likelihood(directory: str | Path) -> dict:
    """What PSIS-LOO needs from a posterior directory, read from its ``posterior.nc``.

    Returns a dict with ``log_likelihood`` (the :class:`xarray.Dataset` of that group),
    ``sample_stats`` (the group, or ``None``), ``method`` and ``observed`` (the total
    counts per dataset, to check that two posteriors saw the same data).

    Raises
    ------
    FileFormatError
        Not a complete posterior directory, no ``posterior.nc``, or one without the
        ``log_likelihood`` group; each message says how to get one.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileFormatError(f"{d}: no such directory; give the --out directory of "
                              "`probdeconv sample`.")
    if not is_posterior_directory(d):
        raise FileFormatError(f"{d}: not a posterior directory (no {MARKER}); give the --out "
                              "directory of a finished `probdeconv sample`.")
    path = d / "posterior.nc"
    if not path.is_file():
        raise FileFormatError(f"{path}: missing (it is skipped above arviz_max_bytes of "
                              "draws); save the posterior again with a higher limit, or with "
                              "fewer draws.")
    try:
        with xr.open_datatree(path, engine="h5netcdf") as tree:
            groups = set(tree.children)
            method = str(tree.attrs.get("inference_method", ""))
            ll = tree["log_likelihood"].to_dataset().load() if "log_likelihood" in groups \
                else None
            stats = (tree["sample_stats"].to_dataset().load() if "sample_stats" in groups
                     else None)
            obs = ({k: float(v.sum()) for k, v in tree["observed_data"].to_dataset().items()}
                   if "observed_data" in groups else {})
    except (OSError, ValueError, KeyError) as exc:
        raise FileFormatError(f"{path}: cannot be read as an ArviZ DataTree ({exc}); save the "
                              "posterior again.") from exc
    if ll is None or not ll.data_vars:
        raise FileFormatError(f"{path}: no log_likelihood group (written without the "
                              "pointwise log-likelihood, or by an older probdeconv); sample "
                              "again with `probdeconv sample`, or save with "
                              "Posterior.save(directory, log_likelihood=True).")
    return {"log_likelihood": ll, "sample_stats": stats, "method": method, "observed": obs}
