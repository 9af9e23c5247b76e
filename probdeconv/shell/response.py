"""Responses and coordinate-conversion matrices, read from the files a COSI user has.

- :class:`FullDetectorResponse` reads the full detector response (``DRM`` group),
  version 1 dense or sparse, and version 2 (cosipy 0.4: integer ``COUNTS``, bitshuffle
  compressed, times ``EFF_AREA`` per ``Ei`` bin; histpy axes under ``DRM/AXES``).
  :meth:`FullDetectorResponse.to_image_response` reduces it,
  one ``NuLambda`` pixel at a time, to the dense ``[NuLambda, Ei, Em, Phi, PsiChi]``
  histogram imaging needs (extra axes such as ``SigmaTau`` and ``Dist`` summed out).
- :class:`CoordsysConversionMatrix` is a sparse histogram ``[Time|ScAtt, lb, NuLambda]``
  of dwell times (s); :meth:`CoordsysConversionMatrix.time_binning_ccm` and
  :meth:`CoordsysConversionMatrix.spacecraft_attitude_binning_ccm` compute one from an
  orientation or an exposure table (:mod:`probdeconv.spacecraft`).

The precomputed galactic response is a plain histpy-layout histogram: open it with
:meth:`probdeconv.Histogram.open`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np

from ..errors import FileFormatError
from ..forward.dataset import aligned_empty
from ..histogram import Axes, Axis, HealpixAxis, Histogram
from ..io.histpy_h5 import read_histogram
from ..spacecraft.ccm import spacecraft_attitude_binning_ccm, time_binning_ccm

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
    """Full detector response: version 1 (dense or sparse ``DRM``) or version 2.

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
        if self.version not in (1, 2):
            raise FileFormatError(
                f"{path}: full detector response version {self.version}; probdeconv reads "
                "versions 1 (dense or sparse) and 2 (cosipy 0.4). Convert it with cosipy, or "
                "reduce it to a [NuLambda, Ei, Em, Phi, PsiChi] histpy histogram."
            )
        self.unit = u.Unit(_attr_str(drm.attrs.get("UNIT", "cm2")))
        self._eff_area: np.ndarray | None = None
        if self.version == 2:
            self.is_sparse = False
            self.axes = self._v2_axes(drm, path)
        else:
            if "SPARSE" in drm.attrs:
                self.is_sparse = bool(drm.attrs["SPARSE"])
            else:
                self.is_sparse = "BIN_NUMBERS" in drm
            self.axes = self._v1_axes(drm)
        missing = [a for a in IMAGE_RESPONSE_AXES if a not in self.axes.labels]
        if missing:
            raise FileFormatError(
                f"{path}: the response lacks axes {missing}; found {list(self.axes.labels)}, "
                f"expected at least {list(IMAGE_RESPONSE_AXES)}."
            )
        if self.axes.labels[0] != "NuLambda":
            raise FileFormatError(f"{path}: the first response axis is "
                                  f"{self.axes.labels[0]!r}; expected 'NuLambda'.")
        if tuple(self.axes.labels[:5]) != IMAGE_RESPONSE_AXES:
            raise FileFormatError(
                f"{path}: response axes {list(self.axes.labels)}; imaging needs "
                f"{list(IMAGE_RESPONSE_AXES)} first (further axes are summed out). A "
                "polarization axis 'Pol' is not supported; reduce the response first."
            )
        if self.version == 2:
            self._check_v2(drm, path)

    @staticmethod
    def _v1_axes(drm: h5py.Group) -> Axes:
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
        return Axes(axes)

    @staticmethod
    def _v2_axes(drm: h5py.Group, path: Path) -> Axes:
        """Axes stored in histpy's layout (``DRM/AXES/0``, ``1``, ...)."""
        from ..io.histpy_h5 import _read_axis

        if "AXES" not in drm:
            raise FileFormatError(f"{path}: version-2 response without DRM/AXES; the file "
                                  "is incomplete - regenerate it with cosipy's RspConverter")
        group = drm["AXES"]
        try:
            keys = sorted(group.keys(), key=int)
        except ValueError as exc:
            raise FileFormatError(f"{path}: DRM/AXES entries {sorted(group.keys())}; version 2 "
                                  "stores the axes as 0, 1, 2, ... (histpy layout)") from exc
        axes = [_read_axis(group[k], f"{path}:DRM/AXES/{k}") for k in keys]
        for a in axes:
            if isinstance(a, HealpixAxis) and a.coordsys is None and a.label in (
                    "NuLambda", "PsiChi"):
                a.coordsys = "spacecraftframe"
        return Axes(axes)

    def _check_v2(self, drm: h5py.Group, path: Path) -> None:
        try:
            import hdf5plugin  # noqa: F401  (registers the bitshuffle filter with h5py)
        except ImportError as exc:  # pragma: no cover - hdf5plugin is a dependency
            raise FileFormatError(f"{path}: a version-2 response is bitshuffle-compressed; "
                                  "install hdf5plugin (pip install hdf5plugin)") from exc
        missing = [k for k in ("COUNTS", "EFF_AREA") if k not in drm]
        if missing:
            raise FileFormatError(f"{path}: version-2 response lacks DRM/{missing[0]}; "
                                  "expected integer DRM/COUNTS and DRM/EFF_AREA (one value "
                                  "per Ei bin)")
        counts = drm["COUNTS"]
        if tuple(counts.shape) != tuple(self.axes.nbins):
            raise FileFormatError(f"{path}: DRM/COUNTS has shape {tuple(counts.shape)}; the "
                                  f"axes {list(self.axes.labels)} give {tuple(self.axes.nbins)}")
        eff = np.asarray(drm["EFF_AREA"][()], dtype=np.float64).ravel()
        n_ei = self.axes["Ei"].nbins
        if eff.size == 1:
            eff = np.full(n_ei, eff[0])
        if eff.size != n_ei or not np.all(np.isfinite(eff)):
            raise FileFormatError(f"{path}: DRM/EFF_AREA has {eff.size} values; expected "
                                  f"{n_ei} finite values (one per Ei bin)")
        self._eff_area = eff

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
        if self.version == 2:
            # [Ei, Em, Phi, PsiChi, ...] counts x EFF_AREA[Ei]
            block = np.asarray(drm["COUNTS"][ipix], dtype=np.float64)
            block *= self._eff_area.reshape((-1,) + (1,) * (block.ndim - 1))
            if block.ndim > n_image:
                block = block.sum(axis=tuple(range(n_image, block.ndim)))
            return block
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
        The contents are 64-byte aligned (:func:`probdeconv.forward.aligned_empty`).
        """
        axes = Axes([self.axes[label] for label in IMAGE_RESPONSE_AXES])
        contents = aligned_empty(axes.nbins)  # aligned: the forward model can share it
        for ipix in range(self.npix):
            contents[ipix] = self.pixel(ipix)
        return Histogram(axes, contents=contents, unit=self.unit, copy=False)

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
    def time_binning_ccm(cls, full_detector_response, orientation, time_intervals,
                         nside_model=None, is_nest_model=False, **kwargs
                         ) -> CoordsysConversionMatrix:
        """CCM ``[Time, lb, NuLambda]`` from an orientation (cosipy's signature).

        See :func:`probdeconv.spacecraft.ccm.time_binning_ccm`; keyword options
        ``earth_occ`` and ``use_livetime``.
        """
        h = time_binning_ccm(full_detector_response, orientation, time_intervals,
                             nside_model=nside_model, is_nest_model=is_nest_model, **kwargs)
        return cls(h.axes, contents=h.contents, unit=h.unit, copy=False)

    @classmethod
    def spacecraft_attitude_binning_ccm(cls, full_detector_response, exposure_table,
                                        nside_model=None, use_averaged_pointing=False, **kwargs
                                        ) -> CoordsysConversionMatrix:
        """CCM ``[ScAtt, lb, NuLambda]`` from an exposure table (cosipy's signature).

        See :func:`probdeconv.spacecraft.ccm.spacecraft_attitude_binning_ccm`; keyword
        options ``scheme_model`` and ``earth_occ``.
        """
        h = spacecraft_attitude_binning_ccm(full_detector_response, exposure_table,
                                            nside_model=nside_model,
                                            use_averaged_pointing=use_averaged_pointing,
                                            **kwargs)
        return cls(h.axes, contents=h.contents, unit=h.unit, copy=False)

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
