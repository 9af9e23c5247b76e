"""Units: the flux unit of every sky image, defined once.

Images are fluxes per solid angle, ``cm-2 s-1 sr-1`` (the model unit of cosipy's
``AllSkyImageModel``). :data:`FLUX_UNIT_NAME` is the spelling used in parameter files
and array-only records; :data:`FLUX_UNIT` the astropy unit used at the shell's edges.

Examples
--------
>>> import astropy.units as u
>>> from probdeconv.units import FLUX_UNIT, FLUX_UNIT_NAME, flux_factor
>>> FLUX_UNIT == u.Unit(FLUX_UNIT_NAME)
True
>>> flux_factor("m-2 s-1 sr-1")
0.0001
"""

from __future__ import annotations

import astropy.units as u

__all__ = ["FLUX_UNIT", "FLUX_UNIT_NAME", "flux_factor"]

FLUX_UNIT_NAME = "cm-2 s-1 sr-1"
FLUX_UNIT = u.Unit(FLUX_UNIT_NAME)


def flux_factor(unit: str | u.UnitBase | None) -> float:
    """The factor that converts a flux in ``unit`` to :data:`FLUX_UNIT` (1 for ``None``).

    Raises
    ------
    astropy.units.UnitConversionError
        ``unit`` is not a flux per solid angle.
    """
    return 1.0 if unit is None else float(u.Unit(unit).to(FLUX_UNIT))
