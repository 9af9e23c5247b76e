"""HEALPix maps as FITS files, following the HEALPix / gammapy conventions.

One file holds the maps of one energy bin as columns of a binary table
(``healpy.read_map(path)`` reads the first column, ``field=i`` the others), with

- ``PIXTYPE = 'HEALPIX'``, ``ORDERING`` (``RING`` / ``NESTED``), ``NSIDE``, ``COORDSYS``
  (``G`` for galactic, ``C`` for ICRS), ``INDXSCHM = 'IMPLICIT'`` (written by healpy);
- one column per quantity, named by it (``FLUX``; ``MEAN``, ``STD``, ...), each with its
  ``TUNITn``; ``BUNIT`` the unit of the maps, spelled as FITS spells it
  (``cm-2 s-1 sr-1``), the same in every file probdeconv writes;
- the energy range of the bin: ``E_MIN`` / ``E_MAX`` in keV (``EUNIT = 'keV'``);
- provenance: ``CREATOR`` (probdeconv and its version), ``DATE`` (UTC, ISO 8601) and
  what the caller adds (``METHOD``: the algorithm and ``NITER`` its iterations for a run;
  ``METHOD``: the sampler and ``NDRAWS`` for a posterior).

Every file is written to a temporary name and renamed (:mod:`.atomic`).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from pathlib import Path

import astropy.units as u
import healpy as hp
import numpy as np
from astropy.io import fits

from ..errors import DataError
from ..units import FLUX_UNIT, FLUX_UNIT_NAME
from ..version import __version__
from .atomic import atomic_target

__all__ = ["fits_unit", "write_healpix_maps", "read_healpix_header", "COORDSYS_CODES"]

logger = logging.getLogger(__name__)

COORDSYS_CODES = {"galactic": "G", "icrs": "C", "fk5": "C", "ecliptic": "E",
                  "geocentricmeanecliptic": "E", "barycentricmeanecliptic": "E"}
"""HEALPix ``COORDSYS`` codes of astropy frame names."""


def fits_unit(unit) -> str:
    """The FITS spelling of a unit (``''`` for none or dimensionless).

    Examples
    --------
    >>> fits_unit("1 / (s sr cm2)")
    'cm-2 s-1 sr-1'
    >>> fits_unit(None)
    ''
    """
    if unit is None or unit == "":
        return ""
    unit = u.Unit(unit)
    if unit == FLUX_UNIT:  # astropy would write 's-1 sr-1 cm-2'
        return FLUX_UNIT_NAME
    return "" if unit == u.dimensionless_unscaled else unit.to_string("fits")


def write_healpix_maps(path: str | Path, columns: Mapping[str, np.ndarray], *, nest: bool,
                       unit=None, coordsys: str = "galactic",
                       energy_range_kev: tuple[float, float] | None = None,
                       provenance: Mapping[str, tuple[object, str]] | None = None,
                       unitless: tuple[str, ...] = ()) -> Path:
    """Write HEALPix maps (one column each) of one energy bin to a FITS file, atomically.

    Parameters
    ----------
    path
        The FITS file.
    columns
        Column name (the quantity: ``FLUX``, ``MEAN``, ...) → map of ``12 nside²`` values.
    nest
        True for NESTED pixel ordering, False for RING.
    unit
        Unit of the maps (``BUNIT`` and each column's ``TUNITn``); columns named in
        ``unitless`` get none (e.g. ``SIGNIFICANCE``).
    coordsys
        Frame of the pixels (an astropy frame name: ``galactic``, ``icrs``, ...).
    energy_range_kev
        ``(E_MIN, E_MAX)`` of the energy bin in keV.
    provenance
        Further header keywords, ``{KEY: (value, comment)}`` (``METHOD``, ``NITER``...),
        each key at most 8 characters (the FITS standard).

    Raises
    ------
    DataError
        The columns are not maps of one HEALPix grid, the frame has no HEALPix code, or a
        provenance keyword is longer than 8 characters.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "image_E0.fits"
    >>> _ = write_healpix_maps(path, {"FLUX": np.arange(12.0)}, nest=False,
    ...                        unit="cm-2 s-1 sr-1", energy_range_kev=(509.0, 513.0),
    ...                        provenance={"METHOD": ("RL", "deconvolution algorithm")})
    >>> h = read_healpix_header(path)
    >>> h["TTYPE1"], h["BUNIT"], h["E_MIN"], h["ORDERING"], h["METHOD"]
    ('FLUX', 'cm-2 s-1 sr-1', 509.0, 'RING', 'RL')
    >>> float(hp.read_map(path)[11])
    11.0
    """
    path = Path(path)
    names = list(columns)
    maps = [np.asarray(columns[k], dtype=np.float64) for k in names]
    if not maps or any(m.ndim != 1 or m.size != maps[0].size for m in maps):
        raise DataError(f"{path}: expected one or more 1-d HEALPix maps of one size; got "
                        f"shapes {[m.shape for m in maps]}.")
    if not hp.isnpixok(maps[0].size):
        raise DataError(f"{path}: {maps[0].size} values is not a HEALPix map (12 NSIDE² "
                        "pixels expected).")
    code = COORDSYS_CODES.get(str(coordsys).lower())
    if code is None:
        raise DataError(f"{path}: coordinate frame {coordsys!r} has no HEALPix COORDSYS code; "
                        f"expected one of {sorted(COORDSYS_CODES)}.")
    bunit = fits_unit(unit)
    header = [("EXTNAME", "SKYMAP", "HEALPix maps"), ("BUNIT", bunit, "unit of the maps")]
    if energy_range_kev is not None:
        header += [("E_MIN", float(energy_range_kev[0]), "[keV] lower edge of the energy bin"),
                   ("E_MAX", float(energy_range_kev[1]), "[keV] upper edge of the energy bin"),
                   ("EUNIT", "keV", "unit of E_MIN and E_MAX")]
    header += [("CREATOR", f"probdeconv {__version__}", "software that wrote this file"),
               ("DATE", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "file creation date (UTC)")]
    for key, (value, comment) in (provenance or {}).items():
        if len(key) > 8:
            raise DataError(f"{path}: header keyword {key!r} is longer than 8 characters; "
                            "FITS keywords have at most 8.")
        header.append((key.upper(), value, comment))
    with atomic_target(path, True, "FITS maps") as tmp:
        hp.write_map(str(tmp), maps, nest=nest, coord=code, overwrite=True,
                     column_names=names,
                     column_units=["" if k in unitless else bunit for k in names],
                     dtype=[np.float64] * len(maps), extra_header=header)
    return path


def read_healpix_header(path: str | Path) -> fits.Header:
    """The header of the map table (extension 1) of a HEALPix FITS file."""
    with fits.open(path) as hdul:
        return hdul[1].header.copy()
