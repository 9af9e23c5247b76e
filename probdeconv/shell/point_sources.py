"""Point sources at fixed positions beside the image: catalogues and interpolation weights.

A point source is a name, a galactic position ``(l, b)`` in degrees and optionally an
initial flux per ``Ei`` bin (ph cm-2 s-1).  :func:`parse_point_sources` accepts

- a list whose items are ``(l, b)`` or ``(l, b, flux)`` tuples, dicts ``{name, l, b
  [, flux]}``, :class:`astropy.coordinates.SkyCoord` (any frame; converted to galactic)
  or :class:`PointSourceSpec`;
- a SkyCoord holding several positions;
- a catalogue file: YAML (a list of ``{name, l, b [, flux]}``, or that list under
  ``point_sources:``) or CSV / ECSV (columns ``name, l, b`` and optionally ``flux`` or
  ``flux_0, flux_1, ...`` one per ``Ei`` bin).

Each source's response is that of the data at its exact direction, interpolated over the
four neighbouring pixels (:func:`healpy.get_interp_weights`), never snapped to a pixel:

- galactic frame: :func:`galactic_weights` over the response's ``NuLambda`` pixels;
- spacecraft frame: :func:`attitude_weights` rotates the source direction into spacecraft
  coordinates for every attitude (``Mᵀ d``, as the CCM construction of
  :mod:`probdeconv.spacecraft.ccm` does for pixel centres) and interpolates it over the
  local ``NuLambda`` pixels, times the attitude's dwell time;
  :func:`ccm_weights` is the fallback when only the CCM is at hand: the CCM rows of the four
  galactic pixels around the source, interpolated with the source's weights (exact at a
  pixel centre; between centres the interpolation of the dwell maps, not of the direction).

Examples
--------
>>> srcs = parse_point_sources([(184.56, -5.78), {"name": "cyg", "l": 71.3, "b": 3.1}])
>>> [s.name for s in srcs], srcs[1].l
(['src0', 'cyg'], 71.3)
>>> w = galactic_weights(srcs, nside=2, nest=False)
>>> w.shape, float(w.sum(axis=-1)[0, 0])
((2, 1, 48), 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import healpy as hp
import numpy as np
import yaml
from astropy.coordinates import SkyCoord
from astropy.table import Table

from ..errors import DataError, FileFormatError, ParameterError

__all__ = ["PointSourceSpec", "parse_point_sources", "read_catalogue", "component_keys",
           "galactic_weights", "attitude_weights", "ccm_weights", "source_weights", "KEY_SEPARATOR",
           "relative_catalogue"]

KEY_SEPARATOR = "@E"
"""Component key of a source's flux in one ``Ei`` bin: ``f"{name}@E{bin}"``."""


class PointSourceSpec(NamedTuple):
    """A point source: name, galactic ``l``, ``b`` (deg) and an optional initial flux per
    ``Ei`` bin (ph cm-2 s-1; ``None``: chosen from the data)."""

    name: str
    l: float
    b: float
    flux: tuple[float, ...] | None = None


def _flux(value: Any, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    f = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
    if not (np.all(np.isfinite(f)) and np.all(f > 0)):
        raise ParameterError(f"{what}: initial flux {f.tolist()}; expected numbers > 0 "
                             "(ph cm-2 s-1), one for every Ei bin or one for all.")
    return tuple(float(x) for x in f)


def _position(l: Any, b: Any, what: str) -> tuple[float, float]:
    try:
        lf, bf = float(l), float(b)
    except (TypeError, ValueError) as err:
        raise ParameterError(f"{what}: position (l, b) = ({l!r}, {b!r}) is not a pair of "
                             "numbers; give galactic longitude and latitude in degrees.") from err
    if not (math.isfinite(lf) and math.isfinite(bf)) or abs(bf) > 90.0:
        raise ParameterError(f"{what}: position (l, b) = ({lf!r}, {bf!r}) deg is not a valid "
                             "galactic coordinate; expected finite l and -90 <= b <= 90 deg.")
    return lf % 360.0, bf


def _from_skycoord(c: SkyCoord, name: str) -> list[PointSourceSpec]:
    g = c.galactic
    ls, bs = np.atleast_1d(g.l.deg), np.atleast_1d(g.b.deg)
    many = ls.size > 1
    return [PointSourceSpec(f"{name}{i}" if many else name, *_position(lv, bv, name))
            for i, (lv, bv) in enumerate(zip(ls, bs))]


def _item(item: Any, default: str) -> list[PointSourceSpec]:
    if isinstance(item, PointSourceSpec):
        return [PointSourceSpec(item.name, *_position(item.l, item.b, item.name),
                                _flux(item.flux, item.name))]
    if isinstance(item, SkyCoord):
        return _from_skycoord(item, default)
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"name", "l", "b", "flux"})
        if unknown or "l" not in item or "b" not in item:
            raise ParameterError(f"point source {item.get('name', default)!r}: got keys "
                                 f"{sorted(item)}; expected l, b (deg) and optionally name "
                                 "and flux (ph cm-2 s-1 per Ei bin).")
        name = str(item.get("name", default))
        return [PointSourceSpec(name, *_position(item["l"], item["b"], f"point source "
                                                 f"{name!r}"),
                                _flux(item.get("flux"), f"point source {name!r}"))]
    if isinstance(item, Sequence) and not isinstance(item, str) and len(item) in (2, 3):
        flux = _flux(item[2], f"point source {default!r}") if len(item) == 3 else None
        return [PointSourceSpec(default, *_position(item[0], item[1],
                                                    f"point source {default!r}"), flux)]
    raise ParameterError(f"point source #{default}: got {item!r}; expected (l, b), (l, b, "
                         "flux), {name, l, b[, flux]}, a SkyCoord or a catalogue file.")


def read_catalogue(path: str | Path) -> list[PointSourceSpec]:
    """Point sources from a YAML, CSV or ECSV catalogue (see the module docstring).

    Raises
    ------
    FileFormatError
        Missing file, unknown extension or missing columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such point-source catalogue; give a YAML, CSV or "
                              "ECSV file with name, l, b [, flux].")
    suffix = path.suffix.lower()
    if suffix in (".yml", ".yaml"):
        with open(path) as f:
            data = yaml.safe_load(f)
        if isinstance(data, Mapping):
            data = data.get("point_sources")
        if not isinstance(data, list):
            raise FileFormatError(f"{path}: expected a list of {{name, l, b[, flux]}} (or "
                                  "that list under point_sources:).")
        return parse_point_sources(data)
    if suffix not in (".csv", ".ecsv"):
        raise FileFormatError(f"{path}: unknown catalogue format {suffix!r}; use .yml, "
                              ".yaml, .csv or .ecsv.")
    table = Table.read(path, format="ascii.ecsv" if suffix == ".ecsv" else "ascii.csv")
    missing = [c for c in ("l", "b") if c not in table.colnames]
    if missing:
        raise FileFormatError(f"{path}: no column(s) {missing}; a catalogue has columns name, "
                              "l, b (deg) and optionally flux or flux_0, flux_1, ...")
    flux_cols = sorted((c for c in table.colnames if c.startswith("flux_")),
                       key=lambda c: int(c.split("_")[1]) if c.split("_")[1].isdigit() else -1)
    items = []
    for i, row in enumerate(table):
        item = {"name": str(row["name"]) if "name" in table.colnames else f"src{i}",
                "l": float(row["l"]), "b": float(row["b"])}
        if "flux" in table.colnames:
            item["flux"] = float(row["flux"])
        elif flux_cols:
            item["flux"] = [float(row[c]) for c in flux_cols]
        items.append(item)
    return parse_point_sources(items)


def parse_point_sources(spec: Any) -> list[PointSourceSpec]:
    """A list of :class:`PointSourceSpec` from any accepted form (module docstring).

    Raises
    ------
    ParameterError
        A position that is not a valid galactic coordinate, repeated names, bad fluxes.
    """
    if spec is None:
        return []
    if isinstance(spec, str | Path):
        return read_catalogue(spec)
    if isinstance(spec, SkyCoord):
        return _from_skycoord(spec, "src")
    if isinstance(spec, Mapping) or not isinstance(spec, Sequence):
        raise ParameterError(f"point_sources: got a {type(spec).__name__}; expected a list of "
                             "sources, a SkyCoord or a catalogue file path.")
    out: list[PointSourceSpec] = []
    for i, item in enumerate(spec):
        out += _item(item, f"src{i}")
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ParameterError(f"point_sources: names {names} repeat; give every source its "
                             "own name.")
    bad = [n for n in names if KEY_SEPARATOR in n]
    if bad:
        raise ParameterError(f"point_sources: names {bad} contain {KEY_SEPARATOR!r}, which "
                             "separates a source name from its energy bin; rename them.")
    return out


def component_keys(sources: Sequence[PointSourceSpec], n_energies: int) -> list[str]:
    """Component names of the source fluxes, source-major: ``name@E0, name@E1, ...``."""
    return [f"{s.name}{KEY_SEPARATOR}{e}" for s in sources for e in range(n_energies)]


def _directions(sources: Sequence[PointSourceSpec]) -> np.ndarray:
    """Unit vectors ``[S, 3]`` of the galactic positions."""
    lon = np.radians([s.l for s in sources])
    lat = np.radians([s.b for s in sources])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)


def galactic_weights(sources: Sequence[PointSourceSpec], nside: int, nest: bool
                     ) -> np.ndarray:
    """``[S, 1, npix]``: the four bilinear interpolation weights of each source direction
    on the galactic HEALPix grid (sum 1; ``(1, 0, 0, 0)`` at a pixel centre)."""
    npix = hp.nside2npix(nside)
    out = np.zeros((len(sources), 1, npix))
    if not sources:
        return out
    pix, w = hp.get_interp_weights(nside, [s.l for s in sources], [s.b for s in sources],
                                   nest=nest, lonlat=True)  # [4, S]
    for k in range(4):
        np.add.at(out[:, 0, :], (np.arange(len(sources)), pix[k]), w[k])
    return out


def attitude_weights(sources: Sequence[PointSourceSpec], matrices: np.ndarray,
                     row_bin: np.ndarray, row_weight: np.ndarray, n_bins: int,
                     nside_local: int, nest_local: bool = False) -> np.ndarray:
    """``[S, n_bins, npix_local]`` dwell time (s) of each source in each local pixel.

    Parameters
    ----------
    matrices
        ``[N, 3, 3]`` attitudes, columns the spacecraft x, y, z axes in galactic
        coordinates (as :mod:`probdeconv.spacecraft.ccm` takes them).
    row_bin
        ``[N]`` time / ScAtt bin of each attitude.
    row_weight
        ``[N]`` its dwell (or live) time in s.
    """
    m = np.asarray(matrices, dtype=np.float64)
    row_bin = np.asarray(row_bin, dtype=np.int64)
    row_weight = np.asarray(row_weight, dtype=np.float64)
    if m.ndim != 3 or m.shape[1:] != (3, 3) or row_bin.shape != (m.shape[0],) or \
            row_weight.shape != (m.shape[0],):
        raise DataError(f"attitudes: matrices {m.shape}, bins {row_bin.shape}, weights "
                        f"{row_weight.shape}; expected (N, 3, 3), (N,) and (N,).")
    if row_bin.size and (row_bin.min() < 0 or row_bin.max() >= n_bins):
        raise DataError(f"attitudes: bins {row_bin.min()}..{row_bin.max()} outside the "
                        f"{n_bins} time bins of the data.")
    npix = hp.nside2npix(nside_local)
    out = np.zeros((len(sources), n_bins, npix))
    for s, d in enumerate(_directions(sources)):
        v = np.einsum("nji,j->ni", m, d)  # Mᵀ d: the direction in spacecraft coordinates
        theta = np.arccos(np.clip(v[:, 2], -1.0, 1.0))
        phi = np.arctan2(v[:, 1], v[:, 0]) % (2 * np.pi)
        pix, w = hp.get_interp_weights(nside_local, theta, phi, nest=nest_local)  # [4, N]
        for k in range(4):
            np.add.at(out[s], (row_bin, pix[k]), w[k] * row_weight)
    return out


def ccm_weights(sources: Sequence[PointSourceSpec], coords: np.ndarray, values: np.ndarray,
                n_bins: int, nside_model: int, nest_model: bool, n_local: int) -> np.ndarray:
    """``[S, n_bins, n_local]``: the CCM rows ``C[t, l, ·]`` of the four galactic pixels
    around each source, weighted by its interpolation weights (exact at a pixel centre).

    ``coords`` (``3 × nnz``: bin, model pixel, local pixel) and ``values`` (s) are the CCM's
    COO form (:meth:`CoordsysConversionMatrix.coo`).
    """
    gw = galactic_weights(sources, nside_model, nest_model)[:, 0]  # [S, lb]
    t, l, v = np.asarray(coords)
    out = np.zeros((len(sources), n_bins, n_local))
    for s in range(len(sources)):
        w = gw[s, l] * np.asarray(values)
        keep = w != 0
        np.add.at(out[s], (t[keep], v[keep]), w[keep])
    return out


def source_weights(sources: Sequence[PointSourceSpec], *, n_bins: int, local_nside: int,
                   local_nest: bool, ccm: tuple[np.ndarray, np.ndarray] | None = None,
                   model_nside: int | None = None, model_nest: bool = False,
                   attitudes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                   ) -> np.ndarray:
    """``[S, n_bins, npix_local]`` interpolation weights of the sources for a dataset.

    Galactic frame (no ``ccm``): :func:`galactic_weights` on the response's grid.  Spacecraft
    frame: :func:`attitude_weights` when ``attitudes = (matrices, row_bin, row_weight)`` are
    given, else :func:`ccm_weights` from the CCM's COO form ``ccm = (coords, values)``.
    """
    if ccm is None:
        if attitudes is not None:
            raise ParameterError("attitudes: given for a galactic-frame dataset (no CCM); "
                                 "leave them out, the galactic response needs none.")
        return galactic_weights(sources, local_nside, local_nest)
    if attitudes is not None:
        if len(attitudes) != 3:
            raise ParameterError("attitudes: expected (matrices [N, 3, 3], row_bin [N], "
                                 "row_weight [N] in s).")
        return attitude_weights(sources, *attitudes, n_bins, local_nside, local_nest)
    return ccm_weights(sources, *ccm, n_bins, int(model_nside), model_nest,
                       hp.nside2npix(local_nside))


def relative_catalogue(spec: Any, parameter_file: str | Path | None) -> Any:
    """A catalogue path given in a parameter file, taken relative to that file."""
    if isinstance(spec, str) and parameter_file and not Path(spec).is_absolute():
        return str(Path(parameter_file).parent / spec)
    return spec
