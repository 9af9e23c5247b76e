"""Responses and coordinate-conversion matrices, read from the files a COSI user has.

- :class:`FullDetectorResponse` reads the full detector response (``DRM`` group),
  version 1 dense or sparse.  :meth:`FullDetectorResponse.to_image_response` reduces it,
  one ``NuLambda`` pixel at a time, to the dense ``[NuLambda, Ei, Em, Phi, PsiChi]``
  histogram imaging needs (extra axes such as ``SigmaTau`` and ``Dist`` summed out).
- :class:`CoordsysConversionMatrix` is a sparse histogram ``[Time|ScAtt, lb, NuLambda]``
  of dwell times (s).

The precomputed galactic response is a plain histpy-layout histogram: open it with
:meth:`probdeconv.Histogram.open`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np

from .errors import FileFormatError
from .histogram import Axes, Axis, HealpixAxis, Histogram
from .io.histpy_h5 import read_histogram

__all__ = ["FullDetectorResponse", "CoordsysConversionMatrix", "IMAGE_RESPONSE_AXES"]

logger = logging.getLogger(__name__)

IMAGE_RESPONSE_AXES = ("NuLambda", "Ei", "Em", "Phi", "PsiChi")


def _attr_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return _attr_str(value.flat[0])
    return str(value)


class FullDetectorResponse:
    """Full detector response, version 1 (dense or sparse ``DRM`` layout).

    Open with :meth:`open`; use as a context manager or call :meth:`close`.

    Examples
    --------
    >>> with FullDetectorResponse.open(path) as rsp:          # doctest: +SKIP
    ...     image_rsp = rsp.to_image_response()                # [NuLambda, Ei, Em, Phi, PsiChi]
    """

    def __init__(self, file: h5py.File, path: Path):
        self._file = file
        self.path = path
        drm = file["DRM"]
        self.version = int(drm.attrs.get("VERSION", 1))
        if self.version != 1:
            raise FileFormatError(
                f"{path}: full detector response version {self.version}; this release of "
                "probdeconv reads version 1 (dense or sparse). Convert it with cosipy, or "
                "reduce it to a [NuLambda, Ei, Em, Phi, PsiChi] histpy histogram."
            )
        self.unit = u.Unit(_attr_str(drm.attrs.get("UNIT", "cm2")))
        if "SPARSE" in drm.attrs:
            self.is_sparse = bool(drm.attrs["SPARSE"])
        else:
            self.is_sparse = "BIN_NUMBERS" in drm
        axes = []
        for label in drm["AXES"]:  # creation order is the axis order
            ds = drm["AXES"][label]
            kind = _attr_str(ds.attrs.get("TYPE", "linear")).lower()
            if kind == "healpix":
                scheme = _attr_str(ds.attrs.get("SCHEME", "ring"))
                axes.append(HealpixAxis(nside=int(ds.attrs["NSIDE"]), scheme=scheme,
                                        label=label, coordsys="spacecraftframe"
                                        if label in ("NuLambda", "PsiChi") else None))
            else:
                unit = ds.attrs.get("UNIT")
                axes.append(Axis(ds[()], label=label, scale=kind,
                                 unit=None if unit is None else _attr_str(unit)))
        self.axes = Axes(axes)
        missing = [a for a in IMAGE_RESPONSE_AXES if a not in self.axes.labels]
        if missing:
            raise FileFormatError(
                f"{path}: the response lacks axes {missing}; found {list(self.axes.labels)}, "
                f"expected at least {list(IMAGE_RESPONSE_AXES)}."
            )
        if self.axes.labels[0] != "NuLambda":
            raise FileFormatError(f"{path}: the first response axis is "
                                  f"{self.axes.labels[0]!r}; expected 'NuLambda'.")

    @classmethod
    def open(cls, filename: str | Path) -> FullDetectorResponse:
        """Open a full detector response file (HDF5 with a ``DRM`` group)."""
        path = Path(filename)
        if not path.exists():
            raise FileFormatError(f"{path}: no such file (expected a full detector response).")
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise FileFormatError(
                f"{path}: cannot be read as HDF5 ({exc}); the file may be truncated or not a "
                "response. Re-copy or regenerate it."
            ) from exc
        if "DRM" not in f:
            keys = list(f.keys())
            f.close()
            raise FileFormatError(
                f"{path}: no 'DRM' group (found {keys}); expected a full detector response. "
                "A precomputed galactic response opens with Histogram.open(path)."
            )
        try:
            return cls(f, path)
        except Exception:
            f.close()
            raise

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FullDetectorResponse:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def nside(self) -> int:
        return self.axes["NuLambda"].nside

    @property
    def npix(self) -> int:
        return self.axes["NuLambda"].npix

    def pixel(self, ipix: int) -> np.ndarray:
        """Dense ``[Ei, Em, Phi, PsiChi]`` response of one ``NuLambda`` pixel, extra axes summed."""
        drm = self._file["DRM"]
        shape = tuple(self.axes.nbins[1:])
        n_image = len(IMAGE_RESPONSE_AXES) - 1
        if self.is_sparse:
            data = np.asarray(drm["CONTENTS"][ipix], dtype=np.float64)
            bins = np.asarray(drm["BIN_NUMBERS"][ipix]).reshape(len(shape), -1)
            out = np.zeros(shape[:n_image])
            np.add.at(out, tuple(bins[:n_image]), data)
            return out
        block = np.asarray(drm["CONTENTS"][ipix], dtype=np.float64)
        if block.ndim > n_image:
            block = block.sum(axis=tuple(range(n_image, block.ndim)))
        return block

    def to_image_response(self) -> Histogram:
        """Reduce to the dense imaging response ``[NuLambda, Ei, Em, Phi, PsiChi]``.

        Reads one ``NuLambda`` pixel at a time, so the file may be larger than memory.
        """
        axes = Axes([self.axes[label] for label in IMAGE_RESPONSE_AXES])
        contents = np.empty(axes.nbins)
        for ipix in range(self.npix):
            contents[ipix] = self.pixel(ipix)
        return Histogram(axes, contents=contents, unit=self.unit)

    def __repr__(self) -> str:
        kind = "sparse" if self.is_sparse else "dense"
        return (f"FullDetectorResponse({str(self.path)!r}, version {self.version}, {kind}, "
                f"axes={list(self.axes.labels)}, nbins={tuple(self.axes.nbins)}, unit={self.unit})")


class CoordsysConversionMatrix(Histogram):
    """Coordinate-conversion matrix ``[Time|ScAtt, lb, NuLambda]`` (dwell time, s).

    ``binning_method`` is the label of the first axis (``'Time'`` or ``'ScAtt'``).
    """

    @property
    def binning_method(self) -> str:
        return self.axes.labels[0]

    @classmethod
    def open(cls, filename: str | Path, name: str = "hist") -> CoordsysConversionMatrix:
        """Read a CCM written by cosipy or probdeconv (histpy sparse layout)."""
        h = read_histogram(filename, name=name)
        return cls.from_histogram(h, source=str(filename))

    @classmethod
    def from_histogram(cls, h: Histogram, source: str = "CCM") -> CoordsysConversionMatrix:
        labels = tuple(h.axes.labels)
        if len(labels) != 3 or labels[0] not in ("Time", "ScAtt") or labels[1:] != ("lb",
                                                                                   "NuLambda"):
            raise FileFormatError(
                f"{source}: a coordinate-conversion matrix has axes [Time|ScAtt, lb, NuLambda]; "
                f"found {list(labels)}."
            )
        contents = h.contents if h.is_sparse else np.asarray(h)
        if not h.is_sparse and h.unit is not None:
            contents = np.asarray(h.contents.to_value(h.unit))
        new = cls(h.axes, contents=contents, unit=h.unit if h.unit is not None else u.s)
        return new

    def coo(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coords, values)`` with ``coords`` ``3 × nnz`` and values in seconds."""
        factor = 1.0 if self.unit is None else float(u.Unit(self.unit).to(u.s))
        if self.is_sparse:
            c = self.contents
            keep = c.data != 0
            return np.asarray(c.coords)[:, keep], np.asarray(c.data)[keep] * factor
        dense = np.asarray(self)
        coords = np.array(np.nonzero(dense))
        return coords, dense[tuple(coords)] * factor
