"""Files of a simulation: the full detector response (version 1, dense) and the YAML summary.

Both are written atomically: assembled under a temporary name in the target directory
and moved into place with :func:`os.replace`, so a reader never sees half a file.
Histograms (events, background, CCM, true sky) go through
:meth:`probdeconv.Histogram.write`, which is atomic as well.

Layout of the response file (what :class:`probdeconv.FullDetectorResponse` and cosipy
read)::

    DRM/                 attrs UNIT='cm2', SPARSE=False (and NSIDE, SCHEME of NuLambda)
      AXES/NuLambda      edges 0..npix; attrs TYPE='healpix', NSIDE, SCHEME='ring'
      AXES/Ei, AXES/Em   edges (keV); attrs TYPE='log', UNIT='keV'
      AXES/Phi           edges (deg); attrs TYPE='linear', UNIT='deg'
      AXES/PsiChi        edges 0..npix; attrs TYPE='healpix', NSIDE, SCHEME='ring'
      CONTENTS           float64 [NuLambda, Ei, Em, Phi, PsiChi], one gzip chunk per NuLambda

``AXES`` keeps its creation order (HDF5 link-creation order), which is the axis order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import astropy.units as u
import h5py
import numpy as np
import yaml
from histpy import HealpixAxis, Histogram

from probdeconv.config.parameters import safe_load_yaml
from probdeconv.errors import DataError, FileFormatError
from probdeconv.io.atomic import atomic_target
from probdeconv.io.drm import IMAGE_RESPONSE_AXES

__all__ = ["write_full_detector_response", "write_yaml", "read_yaml"]

logger = logging.getLogger(__name__)

_DESCRIPTION = {
    "NuLambda": "Location of the simulated source in the spacecraft coordinates",
    "Ei": "Initial simulated energy",
    "Em": "Measured energy",
    "Phi": "Compton angle",
    "PsiChi": "Location in the Compton Data Space",
}


def _atomic(path: Path, overwrite: bool, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` and move ``tmp`` onto ``path`` (see :mod:`probdeconv.io.atomic`)."""
    with atomic_target(path, overwrite, "simulation file") as tmp:
        write(tmp)


def write_full_detector_response(response: Histogram, path: str | os.PathLike,
                                 overwrite: bool = False) -> None:
    """Write ``[NuLambda, Ei, Em, Phi, PsiChi]`` (cm2) as a version-1 dense response file.

    Parameters
    ----------
    response : Histogram
        Dense response with exactly the axes ``NuLambda, Ei, Em, Phi, PsiChi``.
    path : str or os.PathLike
        Target ``.h5`` file.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    DataError
        Wrong axes or a unit that is not an area.
    FileFormatError
        The file exists and ``overwrite`` is False, or the directory is missing.

    Examples
    --------
    >>> from probdeconv.simulate import SimulationConfig, build_response
    >>> write_full_detector_response(build_response(SimulationConfig(nside=1)),
    ...                              "rsp.h5")                      # doctest: +SKIP
    """
    labels = tuple(response.axes.labels.tolist())
    if labels != IMAGE_RESPONSE_AXES:
        raise DataError(f"response axes {list(labels)}: a full detector response written "
                        f"here needs exactly {list(IMAGE_RESPONSE_AXES)}.")
    unit = response.unit or u.cm**2
    if not unit.is_equivalent(u.cm**2):
        raise DataError(f"response unit {unit}: a full detector response is an area (cm2); "
                        "convert it with response.to('cm2').")
    values = np.asarray(response.to_dense().to(u.cm**2).contents.value, dtype=np.float64)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w", track_order=True) as f:
            drm = f.create_group("DRM", track_order=True)
            drm.attrs["UNIT"] = "cm2"
            drm.attrs["SPARSE"] = np.False_
            nu = response.axes["NuLambda"]
            drm.attrs["NSIDE"] = np.int64(nu.nside)
            drm.attrs["SCHEME"] = nu.scheme.lower()
            axes = drm.create_group("AXES", track_order=True)
            for axis in response.axes:
                edges = np.asarray(getattr(axis.edges, "value", axis.edges))
                ds = axes.create_dataset(axis.label, data=edges, track_times=False)
                ds.attrs["DESCRIPTION"] = _DESCRIPTION[axis.label]
                if isinstance(axis, HealpixAxis):
                    ds.attrs["TYPE"] = "healpix"
                    ds.attrs["NSIDE"] = np.int64(axis.nside)
                    ds.attrs["SCHEME"] = "ring" if axis.scheme == "RING" else "nested"
                else:
                    ds.attrs["TYPE"] = axis.axis_scale
                    if axis.unit is not None:
                        ds.attrs["UNIT"] = str(axis.unit)
            drm.create_dataset("CONTENTS", data=values, chunks=(1, *values.shape[1:]),
                               compression="gzip", compression_opts=1,
                               track_times=False)

    _atomic(Path(path), overwrite, write)
    logger.info("wrote full detector response %s to %s", tuple(values.shape), path)


def write_yaml(data: Mapping[str, Any], path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``data`` as YAML, atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=None))

    _atomic(Path(path), overwrite, write)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; :class:`FileFormatError` naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file; expected the simulation.yml written by "
                              "probdeconv.simulate.simulate(out=...).")
    try:
        data = safe_load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise FileFormatError(f"{path}: not valid YAML ({exc}); regenerate it.") from exc
    if not isinstance(data, dict):
        raise FileFormatError(f"{path}: expected a YAML mapping, got {type(data).__name__}.")
    return data
