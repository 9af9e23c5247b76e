"""Full detector response files (the ``DRM`` group), read one ``NuLambda`` pixel at a time.

Formats:

- version 1 dense: ``DRM/CONTENTS`` ``[NuLambda, Ei, Em, Phi, PsiChi, ...]``, axes under
  ``DRM/AXES/<label>`` with attributes ``TYPE`` (``healpix`` / ``linear`` / ``log``),
  ``NSIDE``, ``SCHEME``, ``UNIT``;
- version 1 sparse: ``DRM/CONTENTS[ipix]`` values and ``DRM/BIN_NUMBERS[ipix]`` their bins;
- version 2 (cosipy 0.4): integer ``DRM/COUNTS`` (bitshuffle compressed, ``hdf5plugin``)
  times ``DRM/EFF_AREA`` per ``Ei`` bin; the axes in histpy's layout under ``DRM/AXES``.

:meth:`ResponseFile.read_image_response` reduces the file to the dense
``[NuLambda, Ei, Em, Phi, PsiChi]`` histogram imaging needs (further axes such as
``SigmaTau`` and ``Dist`` summed out), straight into a 64-byte-aligned array
(:func:`probdeconv.forward.aligned_empty`) that the forward model can take over without a
copy (``make_dataset(share_response=True)``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
import sparse
from histpy import Axes, Axis, HealpixAxis, Histogram

from ..errors import FileFormatError
from ..forward.dataset import aligned_empty
from .histpy_h5 import SPACECRAFT_FRAME

__all__ = ["ResponseFile", "IMAGE_RESPONSE_AXES"]

logger = logging.getLogger(__name__)

IMAGE_RESPONSE_AXES = ("NuLambda", "Ei", "Em", "Phi", "PsiChi")
_LOCAL_AXES = ("NuLambda", "PsiChi")  # HEALPix axes in the spacecraft frame


def _attr_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return _attr_str(value.flat[0])
    return str(value)


class ResponseFile:
    """An open full detector response file: version 1 (dense or sparse ``DRM``) or 2.

    Open with :meth:`open`; use as a context manager or call :meth:`close`.

    Attributes
    ----------
    path : Path
    version : int
    unit : astropy.units.Unit
        Unit of the values (``cm2``).
    is_sparse : bool
        Version 1 sparse layout.
    axes : histpy.Axes
        All axes of the file, ``NuLambda, Ei, Em, Phi, PsiChi`` first.
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
            self.axes = _v2_axes(drm, path)
        else:
            if "SPARSE" in drm.attrs:
                self.is_sparse = bool(drm.attrs["SPARSE"])
            else:
                self.is_sparse = "BIN_NUMBERS" in drm
            self.axes = _v1_axes(drm)
        labels = tuple(self.axes.labels.tolist())
        missing = [a for a in IMAGE_RESPONSE_AXES if a not in labels]
        if missing:
            raise FileFormatError(
                f"{path}: the response lacks axes {missing}; found {list(labels)}, "
                f"expected at least {list(IMAGE_RESPONSE_AXES)}."
            )
        if labels[0] != "NuLambda":
            raise FileFormatError(f"{path}: the first response axis is {labels[0]!r}; "
                                  "expected 'NuLambda'.")
        if labels[:5] != IMAGE_RESPONSE_AXES:
            raise FileFormatError(
                f"{path}: response axes {list(labels)}; imaging needs "
                f"{list(IMAGE_RESPONSE_AXES)} first (further axes are summed out). A "
                "polarization axis 'Pol' is not supported; reduce the response first."
            )
        if self.version == 2:
            self._check_v2(drm, path)
        else:
            self._check_v1(drm, path)

    def _check_v1(self, drm: h5py.Group, path: Path) -> None:
        """The data sets of a version-1 file exist and fit the axes."""
        needed = ("CONTENTS", "BIN_NUMBERS") if self.is_sparse else ("CONTENTS",)
        missing = [k for k in needed if not isinstance(drm.get(k), h5py.Dataset)]
        if missing:
            raise FileFormatError(f"{path}: damaged response: DRM/{missing[0]} is missing "
                                  f"(found {sorted(drm.keys())}); a version-1 "
                                  f"{'sparse' if self.is_sparse else 'dense'} response holds "
                                  f"{' and '.join('DRM/' + k for k in needed)}. Re-copy or "
                                  "regenerate the file.")
        npix = int(self.axes.nbins[0])
        shape = tuple(drm["CONTENTS"].shape)
        nbins = tuple(int(n) for n in self.axes.nbins)
        if (self.is_sparse and shape[:1] != (npix,)) or (not self.is_sparse and shape != nbins):
            raise FileFormatError(f"{path}: damaged response: DRM/CONTENTS has shape {shape}; "
                                  f"the axes {self.axes.labels.tolist()} give {nbins}. Re-copy "
                                  "or regenerate the file.")

    def _read(self, name: str, ipix: int) -> np.ndarray:
        """``DRM/<name>[ipix]``; a block h5py cannot read (corrupt, truncated) is named."""
        try:
            return np.asarray(self._file["DRM"][name][ipix])
        except (OSError, KeyError, ValueError) as exc:
            raise FileFormatError(f"{self.path}: damaged response: DRM/{name} of NuLambda "
                                  f"pixel {ipix} cannot be read ({exc}); the file is corrupt "
                                  "or truncated. Re-copy or regenerate it.") from exc

    def verify(self) -> float:
        """Read every ``NuLambda`` pixel (each compressed block once); returns the sum.

        Raises
        ------
        FileFormatError
            A block cannot be read or holds non-finite values (a damaged file).
        """
        total = 0.0
        for ipix in range(self.npix):
            value = float(np.sum(self.pixel(ipix)))
            if not np.isfinite(value):
                raise FileFormatError(f"{self.path}: damaged response: NuLambda pixel {ipix} "
                                      "holds NaN or infinite values. Re-copy or regenerate "
                                      "the file.")
            total += value
        return total

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
        nbins = tuple(int(n) for n in self.axes.nbins)
        if tuple(counts.shape) != nbins:
            raise FileFormatError(f"{path}: DRM/COUNTS has shape {tuple(counts.shape)}; the "
                                  f"axes {self.axes.labels.tolist()} give {nbins}")
        eff = np.asarray(drm["EFF_AREA"][()], dtype=np.float64).ravel()
        n_ei = self.axes["Ei"].nbins
        if eff.size == 1:
            eff = np.full(n_ei, eff[0])
        if eff.size != n_ei or not np.all(np.isfinite(eff)):
            raise FileFormatError(f"{path}: DRM/EFF_AREA has {eff.size} values; expected "
                                  f"{n_ei} finite values (one per Ei bin)")
        self._eff_area = eff

    @classmethod
    def open(cls, filename: str | Path):
        """Open a full detector response file (HDF5 with a ``DRM`` group).

        Raises
        ------
        FileFormatError
            Missing file, not HDF5, no ``DRM`` group, unknown version or axes.
        """
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
        except FileFormatError:
            f.close()
            raise
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
            f.close()
            raise FileFormatError(f"{path}: damaged response: its DRM group cannot be read "
                                  f"({type(exc).__name__}: {exc}); expected DRM/AXES and "
                                  "DRM/CONTENTS (version 1) or DRM/COUNTS (version 2). "
                                  "Re-copy or regenerate the file.") from exc
        except BaseException:
            f.close()
            raise

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def nside(self) -> int:
        """NSIDE of the ``NuLambda`` axis."""
        return int(self.axes["NuLambda"].nside)

    @property
    def npix(self) -> int:
        """Number of ``NuLambda`` pixels."""
        return int(self.axes["NuLambda"].npix)

    def pixel(self, ipix: int) -> np.ndarray:
        """Dense ``[Ei, Em, Phi, PsiChi]`` response of one ``NuLambda`` pixel, extra axes summed."""
        shape = tuple(int(n) for n in self.axes.nbins[1:])
        n_image = len(IMAGE_RESPONSE_AXES) - 1
        if self.version == 2:
            # [Ei, Em, Phi, PsiChi, ...] counts x EFF_AREA[Ei]
            block = self._read("COUNTS", ipix).astype(np.float64)
            block *= self._eff_area.reshape((-1,) + (1,) * (block.ndim - 1))
            if block.ndim > n_image:
                block = block.sum(axis=tuple(range(n_image, block.ndim)))
            return block
        if self.is_sparse:
            data = self._read("CONTENTS", ipix).astype(np.float64)
            bins = self._read("BIN_NUMBERS", ipix).reshape(len(shape), -1)
            out = np.zeros(shape[:n_image])
            np.add.at(out, tuple(bins[:n_image]), data)
            return out
        block = self._read("CONTENTS", ipix).astype(np.float64)
        if block.ndim > n_image:
            block = block.sum(axis=tuple(range(n_image, block.ndim)))
        return block

    def read_pixel(self, ipix: int) -> np.ndarray | sparse.COO:
        """All axes after ``NuLambda`` of one pixel, nothing summed (cosipy's ``rsp[ipix]``).

        A version-1 sparse file gives a ``sparse.COO`` array, the others a dense one.

        Raises
        ------
        IndexError
            ``ipix`` is not an integer in ``[0, npix)``.
        """
        if isinstance(ipix, bool) or not isinstance(ipix, int | np.integer) or \
                not 0 <= ipix < self.npix:
            raise IndexError(f"{self.path}: NuLambda pixel {ipix!r}; expected an integer in "
                             f"[0, {self.npix}) (NSIDE {self.nside}).")
        shape = tuple(int(n) for n in self.axes.nbins[1:])
        if self.version == 2:
            block = self._read("COUNTS", ipix).astype(np.float64)
            return block * self._eff_area.reshape((-1,) + (1,) * (block.ndim - 1))
        if self.is_sparse:
            bins = self._read("BIN_NUMBERS", ipix).reshape(len(shape), -1)
            return sparse.COO(bins, self._read("CONTENTS", ipix).astype(np.float64),
                              shape=shape)
        return self._read("CONTENTS", ipix).astype(np.float64)

    def read_image_response(self) -> Histogram:
        """The dense imaging response ``[NuLambda, Ei, Em, Phi, PsiChi]`` (histpy, ``cm2``).

        Reads one ``NuLambda`` pixel at a time, so the file may be larger than memory.
        The contents are 64-byte aligned (:func:`probdeconv.forward.aligned_empty`) and
        not copied into the histogram.
        """
        axes = Axes([self.axes[label] for label in IMAGE_RESPONSE_AXES])
        contents = aligned_empty(tuple(int(n) for n in axes.nbins))  # the forward model
        for ipix in range(self.npix):                                # may share it
            contents[ipix] = self.pixel(ipix)
        return Histogram(axes, contents=contents, unit=self.unit, copy_contents=False)

    def __repr__(self) -> str:
        kind = "sparse" if self.is_sparse else "dense"
        nbins = tuple(int(n) for n in self.axes.nbins)
        return (f"{type(self).__name__}({str(self.path)!r}, version {self.version}, {kind}, "
                f"axes={self.axes.labels.tolist()}, nbins={nbins}, unit={self.unit})")


def _v1_axes(drm: h5py.Group) -> Axes:
    """Axes of a version-1 file (``DRM/AXES/<label>``, creation order = axis order)."""
    axes = []
    for label in drm["AXES"]:
        ds = drm["AXES"][label]
        kind = _attr_str(ds.attrs.get("TYPE", "linear")).lower()
        if kind == "healpix":
            scheme = _attr_str(ds.attrs.get("SCHEME", "ring"))
            axes.append(HealpixAxis(nside=int(ds.attrs["NSIDE"]), scheme=scheme, label=label,
                                    coordsys=SPACECRAFT_FRAME if label in _LOCAL_AXES
                                    else None))
        else:
            unit = ds.attrs.get("UNIT")
            axes.append(Axis(np.asarray(ds[()]), label=label, scale=kind,
                             unit=None if unit is None else _attr_str(unit)))
    return Axes(axes, copy_axes=False)


def _v2_axes(drm: h5py.Group, path: Path) -> Axes:
    """Axes of a version-2 file: histpy's layout under ``DRM/AXES`` (``0``, ``1``, ...)."""
    if "AXES" not in drm:
        raise FileFormatError(f"{path}: version-2 response without DRM/AXES; the file "
                              "is incomplete - regenerate it with cosipy's RspConverter")
    group = drm["AXES"]
    try:
        sorted(group.keys(), key=int)
        axes = Axes.open(group)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FileFormatError(f"{path}: DRM/AXES entries {sorted(group.keys())} are not "
                              f"histpy axes 0, 1, 2, ... as version 2 stores them ({exc})"
                              ) from exc
    for a in axes:
        if isinstance(a, HealpixAxis) and a.coordsys is None and a.label in _LOCAL_AXES:
            a.coordsys = SPACECRAFT_FRAME
    return axes
