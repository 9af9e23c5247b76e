"""Responses and coordinate-conversion matrices, read from the files a COSI user has.

- :class:`FullDetectorResponse` is cosipy's name for a full detector response file
  (format code in :mod:`probdeconv.io.drm`: version 1 dense or sparse, version 2);
  :meth:`FullDetectorResponse.to_image_response` reduces it, one ``NuLambda`` pixel at a
  time, to the dense ``[NuLambda, Ei, Em, Phi, PsiChi]`` histogram imaging needs.
- :class:`CoordsysConversionMatrix` is a sparse ``histpy.Histogram``
  ``[Time|ScAtt, lb, NuLambda]`` of dwell times (s);
  :meth:`CoordsysConversionMatrix.time_binning_ccm` and
  :meth:`CoordsysConversionMatrix.spacecraft_attitude_binning_ccm` compute one from an
  orientation or an exposure table (:mod:`probdeconv.spacecraft`).

The precomputed galactic response is a plain histpy histogram: open it with
``histpy.Histogram.open`` (``probdeconv.Histogram`` is the same class).
"""

from __future__ import annotations

import logging
from pathlib import Path

import astropy.units as u
import numpy as np
from histpy import Axes, Histogram

from ..errors import DataError, FileFormatError
from ..io.drm import IMAGE_RESPONSE_AXES, ResponseFile
from ..io.histpy_h5 import read_histogram
from ..spacecraft.ccm import spacecraft_attitude_binning_ccm, time_binning_ccm

__all__ = ["FullDetectorResponse", "CoordsysConversionMatrix", "IMAGE_RESPONSE_AXES"]

logger = logging.getLogger(__name__)


class FullDetectorResponse(ResponseFile):
    """Full detector response file: version 1 (dense or sparse ``DRM``) or version 2.

    Open with :meth:`open`; use as a context manager or call :meth:`close`.

    ``rsp[ipix]`` is the response of one ``NuLambda`` pixel over all the other axes (a
    histpy Histogram, nothing summed), as cosipy's; ``filename`` and ``ndim`` are cosipy's
    attributes.

    Examples
    --------
    >>> with FullDetectorResponse.open(path) as rsp:          # doctest: +SKIP
    ...     image_rsp = rsp.to_image_response()                # [NuLambda, Ei, Em, Phi, PsiChi]
    ...     drm = rsp[0]                                       # [Ei, Em, Phi, PsiChi, ...]
    """

    @property
    def filename(self) -> Path:
        """Path of the response file."""
        return self.path

    @property
    def ndim(self) -> int:
        """Number of axes of the file (``NuLambda`` included)."""
        return int(self.axes.ndim)

    def __getitem__(self, ipix: int) -> Histogram:
        """Response of ``NuLambda`` pixel ``ipix`` over the other axes (unit of the file).

        Raises
        ------
        IndexError
            ``ipix`` is not an integer in ``[0, npix)``.
        """
        return Histogram(Axes(list(self.axes[1:]), copy_axes=True),
                         contents=self.read_pixel(ipix), unit=self.unit, copy_contents=False)

    def to_image_response(self) -> Histogram:
        """Reduce to the dense imaging response ``[NuLambda, Ei, Em, Phi, PsiChi]`` (cm2).

        Reads one ``NuLambda`` pixel at a time, so the file may be larger than memory.
        The contents are 64-byte aligned (:func:`probdeconv.forward.aligned_empty`).
        """
        return self.read_image_response()


class CoordsysConversionMatrix(Histogram):
    """Coordinate-conversion matrix ``[Time|ScAtt, lb, NuLambda]`` (dwell time, s).

    A ``histpy.Histogram`` (sparse contents); ``binning_method`` is the label of the
    first axis (``'Time'`` or ``'ScAtt'``).

    Examples
    --------
    >>> import numpy as np, sparse, astropy.units as u
    >>> from histpy import Axes, Axis, HealpixAxis
    >>> axes = Axes([Axis([0, 1], label="ScAtt"),
    ...              HealpixAxis(nside=1, label="lb", coordsys="galactic"),
    ...              HealpixAxis(nside=1, label="NuLambda")])
    >>> ccm = CoordsysConversionMatrix(axes, sparse.COO([[0], [3], [5]], [2.0], (1, 12, 12)),
    ...                                unit=u.s)
    >>> ccm.binning_method, ccm.coo()[1].tolist()
    ('ScAtt', [2.0])
    """

    @property
    def binning_method(self) -> str:
        """``'Time'`` or ``'ScAtt'``: the label of the first axis."""
        return str(self.axes.labels[0])

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
        return cls.from_histogram(h)

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
        return cls.from_histogram(h)

    @classmethod
    def open(cls, filename: str | Path, name: str = "hist") -> CoordsysConversionMatrix:
        """Read a CCM written by cosipy or probdeconv (histpy sparse layout).

        Raises
        ------
        FileFormatError
            Unreadable file or group, or axes other than ``[Time|ScAtt, lb, NuLambda]``.
        """
        h = read_histogram(filename, name=name)
        return cls.from_histogram(h, source=f"{filename}:{name}")

    @classmethod
    def from_histogram(cls, h: Histogram, source: str = "CCM") -> CoordsysConversionMatrix:
        """A CCM holding the contents of the histpy histogram ``h`` (not copied).

        Raises
        ------
        FileFormatError
            ``h`` is not ``[Time|ScAtt, lb, NuLambda]``.
        """
        if not isinstance(h, Histogram):
            raise DataError(f"{source}: expected a histpy Histogram [Time|ScAtt, lb, "
                            f"NuLambda], got a {type(h).__name__}")
        labels = tuple(str(x) for x in h.axes.labels)
        if len(labels) != 3 or labels[0] not in ("Time", "ScAtt") or labels[1:] != ("lb",
                                                                                   "NuLambda"):
            raise FileFormatError(
                f"{source}: a coordinate-conversion matrix has axes [Time|ScAtt, lb, NuLambda]; "
                f"found {list(labels)}."
            )
        if type(h) is cls and h.unit is not None:
            return h
        unit = h.unit if h.unit is not None else u.s
        new = cls.__new__(cls)
        Histogram.__init__(new, h.axes, contents=h.full_contents, sumw2=h.sumw2, unit=unit,
                           copy_contents=False)
        return new

    def coo(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coords, values)`` with ``coords`` ``3 × nnz`` and values in seconds."""
        factor = 1.0 if self.unit is None else float(u.Unit(self.unit).to(u.s))
        if self.is_sparse:
            c = self.contents
            keep = c.data != 0
            return np.asarray(c.coords)[:, keep], np.asarray(c.data)[keep] * factor
        dense = np.asarray(self.contents.value if self.unit is not None else self.contents)
        coords = np.array(np.nonzero(dense))
        return coords, dense[tuple(coords)] * factor
