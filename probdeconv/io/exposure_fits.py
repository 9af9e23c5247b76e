"""Read and write cosipy's spacecraft-attitude exposure table (FITS, ``EXPOSURETABLE``).

Layout written (cosipy 0.3 column names, readable by cosipy's ``from_fits``): one row
per ScAtt bin in a binary-table extension ``EXPOSURETABLE`` with header ``NSIDE``,
``SCHEME`` (and ``BINMETH = 'ScAtt'``)::

    scatt_binning_index K | exposure D [s] | num_pointings K | bkg_group K
    healpix_index_z_pointing K | healpix_index_x_pointing K
    delta_time PD() [s] | zpointing_l, zpointing_b, xpointing_l, xpointing_b PD() [degree]
    zpointing_averaged_l/_b, xpointing_averaged_l/_b D [degree]

plus, when known, the columns of cosipy 0.4 (``livetime`` PD() [s], ``total_livetime`` D
[s], ``earth_zenith_l``/``_b`` PD() [degree], ``altitude`` PD() [km]), so that both
cosipy generations read the file.  The reader accepts either generation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from probdeconv.errors import FileFormatError

from .atomic import atomic_target

__all__ = ["read_exposure_table", "write_exposure_table", "EXTNAME"]

logger = logging.getLogger(__name__)

EXTNAME = "EXPOSURETABLE"


def _object_column(parts: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(parts), dtype=object)
    for i, p in enumerate(parts):
        out[i] = np.ascontiguousarray(p, dtype=np.float64)
    return out


def write_exposure_table(path: str | os.PathLike, c: dict[str, Any], nside: int, scheme: str,
                         overwrite: bool = False) -> None:
    """Write per-bin columns ``c`` (ragged columns as lists of arrays) atomically."""
    cols = [
        fits.Column(name="scatt_binning_index", format="K", array=c["scatt_binning_index"]),
        fits.Column(name="exposure", format="D", unit="s", array=c["exposure"]),
        fits.Column(name="num_pointings", format="K", array=c["num_pointings"]),
        fits.Column(name="bkg_group", format="K", array=c["bkg_group"]),
        fits.Column(name="healpix_index_z_pointing", format="K",
                    array=c["healpix_index_z_pointing"]),
        fits.Column(name="healpix_index_x_pointing", format="K",
                    array=c["healpix_index_x_pointing"]),
        fits.Column(name="delta_time", format="PD()", unit="s",
                    array=_object_column(c["delta_time"])),
    ]
    for axis in ("zpointing", "xpointing"):
        for k, part in ((0, "l"), (1, "b")):
            cols.append(fits.Column(name=f"{axis}_{part}", format="PD()", unit="degree",
                                    array=_object_column([p[:, k] for p in c[axis]])))
    for axis in ("zpointing", "xpointing"):
        for k, part in ((0, "l"), (1, "b")):
            cols.append(fits.Column(name=f"{axis}_averaged_{part}", format="D", unit="degree",
                                    array=np.asarray(c[f"{axis}_averaged"])[:, k]))
    if c.get("livetime") is not None:
        cols.append(fits.Column(name="livetime", format="PD()", unit="s",
                                array=_object_column(c["livetime"])))
        cols.append(fits.Column(name="total_livetime", format="D", unit="s",
                                array=np.array([np.sum(v) for v in c["livetime"]])))
    if c.get("earth_zenith") is not None:
        for k, part in ((0, "l"), (1, "b")):
            cols.append(fits.Column(name=f"earth_zenith_{part}", format="PD()", unit="degree",
                                    array=_object_column([p[:, k] for p in c["earth_zenith"]])))
        cols.append(fits.Column(name="altitude", format="PD()", unit="km",
                                array=_object_column(c["altitude"])))
    table = fits.BinTableHDU.from_columns(cols)
    table.name = EXTNAME
    table.header["NSIDE"] = int(nside)
    table.header["SCHEME"] = str(scheme)
    table.header["BINMETH"] = "ScAtt"
    with atomic_target(path, overwrite, "exposure table") as tmp:
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp, overwrite=True)
    logger.debug("wrote exposure table with %d bins to %s", len(c["exposure"]), path)


def _ragged(data: Any, name: str) -> list[np.ndarray]:
    return [np.asarray(v, dtype=np.float64).ravel() for v in data[name]]


def read_exposure_table(path: str | os.PathLike) -> tuple[dict[str, Any], int, str]:
    """Read an exposure table written by cosipy (0.3 or 0.4) or probdeconv.

    Returns
    -------
    columns : dict
        Per-bin arrays; ragged columns as lists of arrays, pointings as ``(n_i, 2)``.
    nside : int
    scheme : str
        ``'ring'`` or ``'nested'``.

    Raises
    ------
    FileFormatError
        Missing file or extension, missing column or header key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file; expected a FITS exposure table "
                              f"(extension {EXTNAME})")
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as err:
        raise FileFormatError(f"{path}: cannot be read as FITS ({err}); the file may be "
                              "truncated - re-create it with save_as_fits") from err
    with hdul:
        names = [h.name for h in hdul]
        if EXTNAME not in names:
            raise FileFormatError(f"{path}: no extension {EXTNAME} (found {names}); expected "
                                  "an exposure table written by save_as_fits")
        hdu = hdul[EXTNAME]
        for key in ("NSIDE", "SCHEME"):
            if key not in hdu.header:
                raise FileFormatError(f"{path}[{EXTNAME}]: header keyword {key} missing; "
                                      "expected NSIDE and SCHEME of the ScAtt binning")
        data = hdu.data
        have = set(data.columns.names)
        required = {"scatt_binning_index", "healpix_index_z_pointing",
                    "healpix_index_x_pointing", "zpointing_l", "zpointing_b", "xpointing_l",
                    "xpointing_b", "zpointing_averaged_l", "zpointing_averaged_b",
                    "xpointing_averaged_l", "xpointing_averaged_b", "num_pointings"}
        missing = sorted(required - have)
        if "delta_time" not in have and "livetime" not in have:
            missing.append("delta_time")
        if missing:
            raise FileFormatError(f"{path}[{EXTNAME}]: columns {missing} missing (found "
                                  f"{sorted(have)}); not a spacecraft-attitude exposure table")
        c: dict[str, Any] = {}
        for name in ("scatt_binning_index", "healpix_index_z_pointing",
                     "healpix_index_x_pointing", "num_pointings"):
            c[name] = np.asarray(data[name], dtype=np.int64)
        for axis in ("zpointing", "xpointing"):
            lon, lat = _ragged(data, f"{axis}_l"), _ragged(data, f"{axis}_b")
            c[axis] = [np.column_stack([a, b]) for a, b in zip(lon, lat)]
            c[f"{axis}_averaged"] = np.column_stack([
                np.asarray(data[f"{axis}_averaged_l"], dtype=np.float64),
                np.asarray(data[f"{axis}_averaged_b"], dtype=np.float64)])
        c["livetime"] = _ragged(data, "livetime") if "livetime" in have else None
        c["delta_time"] = _ragged(data, "delta_time") if "delta_time" in have else \
            c["livetime"]
        if "exposure" in have:
            c["exposure"] = np.asarray(data["exposure"], dtype=np.float64)
        elif "total_livetime" in have:
            c["exposure"] = np.asarray(data["total_livetime"], dtype=np.float64)
        else:
            c["exposure"] = np.array([np.sum(v) for v in c["delta_time"]])
        c["bkg_group"] = (np.asarray(data["bkg_group"], dtype=np.int64) if "bkg_group" in have
                          else np.zeros(len(c["exposure"]), dtype=np.int64))
        if {"earth_zenith_l", "earth_zenith_b", "altitude"} <= have:
            c["earth_zenith"] = [np.column_stack([a, b]) for a, b in
                                 zip(_ragged(data, "earth_zenith_l"),
                                     _ragged(data, "earth_zenith_b"))]
            c["altitude"] = _ragged(data, "altitude")
        else:
            c["earth_zenith"] = c["altitude"] = None
        nside = int(hdu.header["NSIDE"])
        scheme = str(hdu.header["SCHEME"]).strip()
    return c, nside, scheme
