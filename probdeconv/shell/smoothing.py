"""The smoothing width of Richardson-Lucy's update: one for all energies, or one per bin.

``smoothing:FWHM`` of a parameter file (or the parameter dict of the Python API) takes

- ``{value: 2.0, unit: deg}``: one width for every energy bin (cosipy's form);
- ``{value: [3.0, 2.0, 1.5], unit: deg}``: one width per energy bin of the image;
- ``{energy: {value: [200, 500, 2000], unit: keV}, value: [4.0, 2.5, 1.2], unit: deg}``: a
  table of width against energy, interpolated (linearly in energy) to the centres of the
  image's energy bins, which must lie inside the table;
- in Python also a Quantity (scalar or one per bin) or a list of Quantities.

:func:`fwhm_per_energy` turns any of them into a Quantity in degrees, scalar or ``[Ei]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import astropy.units as u
import numpy as np

from ..errors import ParameterError

__all__ = ["fwhm_per_energy"]


def _centres(energy_axis: Any) -> u.Quantity:
    centres = energy_axis.centers
    return centres if isinstance(centres, u.Quantity) else centres * u.keV


def fwhm_per_energy(fwhm: Any, energy_axis: Any, path: str = "smoothing:FWHM") -> u.Quantity:
    """The smoothing FWHM in degrees: a scalar, or one width per energy bin ``[Ei]``.

    Parameters
    ----------
    fwhm
        One of the forms of the module docstring.
    energy_axis
        The image's energy axis (its bin centres for a table).
    path
        Where the setting came from, for error messages.

    Raises
    ------
    ParameterError
        A list whose length is not the number of energy bins, negative or non-angle widths,
        or a table that does not cover the bin centres.

    Examples
    --------
    >>> from histpy import Axis
    >>> ax = Axis([100.0, 300.0, 900.0] * u.keV, label="Ei")
    >>> fwhm_per_energy({"value": [3.0, 1.0], "unit": "deg"}, ax).value.tolist()
    [3.0, 1.0]
    >>> table = {"energy": {"value": [100.0, 1000.0], "unit": "keV"},
    ...          "value": [4.0, 1.0], "unit": "deg"}
    >>> [round(x, 3) for x in fwhm_per_energy(table, ax).value.tolist()]  # centres 200, 600
    [3.667, 2.333]
    """
    n_e = int(energy_axis.nbins)
    if hasattr(fwhm, "to_dict"):
        fwhm = fwhm.to_dict()
    if isinstance(fwhm, Mapping):
        try:
            width = np.asarray(fwhm["value"], dtype=np.float64) * u.Unit(fwhm["unit"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"{path}: got {fwhm!r}; expected {{value, unit}} with value "
                                 "a number or a list of numbers and unit an angle unit (deg)."
                                 ) from exc
        table = fwhm.get("energy")
    elif isinstance(fwhm, list | tuple):
        width, table = u.Quantity(list(fwhm)), None
    else:
        width, table = u.Quantity(fwhm), None
    if not width.unit.is_equivalent(u.deg):
        raise ParameterError(f"{path}: the width has unit {width.unit}; expected an angle "
                             "(e.g. deg).")
    width = width.to(u.deg)
    if not (np.all(np.isfinite(width.value)) and np.all(width.value >= 0)):
        raise ParameterError(f"{path}: widths {width.value.tolist()} deg; expected finite "
                             "numbers >= 0.")
    if table is not None:
        return _from_table(width, table, energy_axis, path)
    if width.ndim == 0:
        return width
    if width.shape != (n_e,):
        raise ParameterError(f"{path}: {width.size} width(s) given for {n_e} energy bin(s) of "
                             "the image; give one width, one per energy bin, or a table "
                             "{energy: {value, unit}, value, unit}.")
    return width


def _from_table(width: u.Quantity, table: Any, energy_axis: Any, path: str) -> u.Quantity:
    try:
        energy = (np.asarray(table["value"], dtype=np.float64) * u.Unit(table["unit"])).to(u.keV)
    except (KeyError, TypeError, ValueError, u.UnitConversionError) as exc:
        raise ParameterError(f"{path}:energy: got {table!r}; expected {{value: [E0, E1, ...], "
                             "unit: keV}.") from exc
    e = energy.value
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0) or width.shape != e.shape:
        raise ParameterError(f"{path}: a table of {e.size} energies and {width.size} widths; "
                             "expected at least two strictly increasing energies and one "
                             "width for each.")
    centres = _centres(energy_axis).to_value(u.keV)
    if centres.min() < e[0] or centres.max() > e[-1]:
        raise ParameterError(f"{path}:energy: the table covers {e[0]:g}-{e[-1]:g} keV but the "
                             f"image's energy bins have centres {centres.min():g}-"
                             f"{centres.max():g} keV; extend the table to cover them.")
    return np.interp(centres, e, width.value) * u.deg
