"""All-sky map panels for the reports: Mollweide projections drawn on matplotlib axes.

healpy projects the map (galactic longitude 0 at the centre, increasing to the left);
matplotlib draws it, so panels share colour scales, carry titles and labelled colour bars,
and the figure layout is matplotlib's own.

- :func:`project` — a HEALPix map (RING or NESTED) to a Mollweide image;
- :func:`draw_map` — one panel: projection, colour scale, title, colour bar with unit;
- :func:`energy_label` — ``"509–513 keV"`` for an energy bin;
- :func:`flux_range` — a colour range shared by several maps, from 0 (never a 1e-215).
"""

from __future__ import annotations

import astropy.units as u
import healpy as hp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402

__all__ = ["project", "draw_map", "energy_label", "flux_range", "unit_label", "new_figure"]

XSIZE = 480


def project(values: np.ndarray, nest: bool = False, xsize: int = XSIZE) -> np.ma.MaskedArray:
    """Mollweide image of a HEALPix map (masked outside the sky).

    Examples
    --------
    >>> img = project(np.arange(12.0), xsize=40)
    >>> img.shape, float(img.max())
    ((20, 40), 11.0)
    """
    values = np.asarray(values, dtype=float)
    nside = hp.npix2nside(values.size)
    proj = hp.projector.MollweideProj(xsize=xsize)
    img = proj.projmap(values, lambda x, y, z: hp.vec2pix(nside, x, y, z, nest=nest))
    return np.ma.masked_where(~np.isfinite(img) | (img == hp.UNSEEN), img)


def unit_label(unit) -> str:
    """A unit as a short label (``cm-2 s-1 sr-1``); '' for none."""
    if unit is None or str(unit) == "":
        return ""
    unit = u.Unit(unit)
    if unit == u.Unit("cm-2 s-1 sr-1"):
        return "cm⁻² s⁻¹ sr⁻¹"
    return unit.to_string()


def energy_label(edges, e: int) -> str:
    """The energy range of bin ``e`` in keV.

    Examples
    --------
    >>> energy_label([509.0, 513.0] * u.keV, 0)
    '509–513 keV'
    """
    ed = edges.to_value(u.keV) if isinstance(edges, u.Quantity) else np.asarray(edges, float)
    return f"{ed[e]:.4g}–{ed[e + 1]:.4g} keV"


def flux_range(*maps, log: bool = False) -> tuple[float, float]:
    """``(vmin, vmax)`` shared by ``maps``: ``[0, max]``, or for a log scale
    ``[max / 1e4 or the smallest positive value above it, max]``.

    Examples
    --------
    >>> flux_range(np.array([4.56e-215, 0.5]), np.array([0.0, 2.0]))
    (0.0, 2.0)
    """
    vals = np.concatenate([np.asarray(m, float).ravel() for m in maps])
    vals = vals[np.isfinite(vals)]
    top = float(vals.max()) if vals.size and vals.max() > 0 else 1.0
    if not log:
        return 0.0, top
    pos = vals[vals > top * 1e-4]
    return (float(pos.min()) if pos.size else top * 1e-4), top


def draw_map(fig, ax, values: np.ndarray, *, nest: bool = False, vmin: float | None = None,
             vmax: float | None = None, cmap: str = "viridis", title: str = "",
             label: str = "", log: bool = False):
    """Draw one Mollweide panel on ``ax`` with a horizontal, labelled colour bar."""
    img = project(values, nest)
    if log:
        lo = vmin if vmin and vmin > 0 else flux_range(values, log=True)[0]
        norm = LogNorm(vmin=lo, vmax=vmax, clip=True)
        img = np.ma.MaskedArray(np.maximum(img.filled(lo), lo), mask=img.mask)  # 0 → floor
    else:
        norm = Normalize(vmin=vmin, vmax=vmax)
    im = ax.imshow(img, origin="lower", extent=(-2, 2, -1, 1), cmap=cmap, norm=norm,
                   interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    cb = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.06, pad=0.02)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    return im


def new_figure(rows: int, cols: int, width: float = 4.6, height: float = 3.0):
    """A figure with a ``rows × cols`` grid of axes (a 2-d array), laid out by matplotlib's
    constrained layout (titles and colour bars never clipped)."""
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             layout="constrained")
    return fig, axes
