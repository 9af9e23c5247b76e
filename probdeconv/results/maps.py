"""Maps with axes and units from arrays: the image axes of a problem, and ``[lb, Ei]`` maps.

A :class:`~probdeconv.forward.problem.Problem` describes its image axes in plain numbers
(:class:`~probdeconv.forward.problem.ImageGrid`, given by the shell that built it);
:func:`model_axes` turns that description into histpy axes and :func:`image_map` an array
into an :class:`~probdeconv.shell.allsky_image.AllSkyImageModel` (HEALPix axes) or a plain
histogram.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward.problem import ImageGrid
>>> axes = model_axes(ImageGrid(1, (100.0, 200.0)), (12, 1))
>>> m = image_map(axes, np.ones((12, 1)))
>>> type(m).__name__, str(m.unit)
('AllSkyImageModel', '1 / (s sr cm2)')
"""

from __future__ import annotations

import math
from typing import Any

import astropy.units as u
import numpy as np
from histpy import Axes, Axis, HealpixAxis, Histogram

from ..errors import DataError
from ..forward.problem import FLUX_UNIT, ImageGrid
from ..shell.allsky_image import AllSkyImageModel

__all__ = ["model_axes", "image_map"]


def model_axes(grid: ImageGrid | None, shape: tuple[int, int]) -> Axes:
    """The ``[lb, Ei]`` axes of ``grid``, or generic ones for ``shape`` when there is none.

    Generic axes: HEALPix (ring, galactic) when the pixel count is ``12 nside²`` with a
    power-of-two ``nside``, otherwise plain pixel indices; energy bins ``1, 2, ...`` keV.
    """
    n_pix, n_e = (int(n) for n in shape)
    if grid is not None and grid.nside:
        if grid.shape != (n_pix, n_e):
            raise DataError(f"image grid of {grid.shape} bins for an image of {(n_pix, n_e)}.")
        lb = HealpixAxis(nside=int(grid.nside), scheme="nested" if grid.nest else "ring",
                         coordsys=grid.coordsys, label=grid.labels[0])
        edges = np.asarray(grid.energy_edges, dtype=float) * u.Unit(grid.energy_unit)
        return Axes([lb, Axis(edges, label=grid.labels[1], scale=grid.energy_scale)])
    nside = math.isqrt(n_pix // 12) if n_pix % 12 == 0 else 0
    energy = Axis(np.arange(1, n_e + 2, dtype=float) * u.keV, label="Ei")
    if nside and 12 * nside * nside == n_pix and nside & (nside - 1) == 0:
        return Axes([HealpixAxis(nside=nside, label="lb", coordsys="galactic"), energy])
    return Axes([Axis(np.arange(n_pix + 1, dtype=float), label="lb"), energy])


def image_map(axes: Axes, values: Any, unit: str | None = FLUX_UNIT) -> Histogram:
    """An ``[lb, Ei]`` map of ``values`` on ``axes``: :class:`AllSkyImageModel` when ``lb`` is
    HEALPix; ``unit`` ``""`` or ``None`` for a dimensionless map (e.g. a significance)."""
    values = np.asarray(values, dtype=np.float64).reshape(tuple(int(n) for n in axes.nbins))
    h = Histogram(axes, contents=values, unit=unit or None)
    if isinstance(h.axes[0], HealpixAxis):
        return AllSkyImageModel.from_histogram(h)
    return h
