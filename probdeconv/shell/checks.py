"""Checks that refuse inputs which would give a silently wrong result, or warn about them.

Each check names the culprit, what was expected and how to fix it:

- :func:`frame_name`, :func:`check_frames`: the coordinate frames of the event histogram,
  the response and the CCM agree with the data space (galactic, or the spacecraft frame
  through a CCM);
- :func:`check_model_grid`: the model's HEALPix scheme and frame are the data's;
- :func:`check_dataset_contents`: counts, backgrounds and exposure that cannot give an image
  (all zero) are refused; few or non-integer counts and a dataset without background are
  warned about;
- :func:`validate_mask`: masks are boolean (True = free pixel), of the model's shape, not
  all False;
- :func:`check_initial_model`: the starting image is finite, non-negative and predicts a
  sensible number of counts (RL's update is multiplicative: it cannot leave zero);
- :func:`check_finite_iteration`: an iteration whose statistic or image is NaN or infinite
  stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import astropy.units as u
import numpy as np
from histpy import Histogram

from ..errors import AxisMismatchError, DataError
from ..units import FLUX_UNIT

__all__ = ["frame_name", "check_frames", "check_model_grid", "check_dataset_contents",
           "validate_mask", "check_initial_model", "check_finite_iteration",
           "FEW_COUNTS", "MIN_SKY_FRACTION", "MAX_SKY_RATIO"]

logger = logging.getLogger(__name__)

FEW_COUNTS = 10
"""Fewer counts than this in a dataset give a warning (the image is mostly noise)."""

MIN_SKY_FRACTION = 1e-6
"""An initial image predicting fewer sky counts than this fraction of the data is refused."""

MAX_SKY_RATIO = 1e12
"""An initial image predicting more than this many times the observed counts is refused."""

SPACECRAFT = "spacecraftframe"


def frame_name(axis) -> str | None:
    """The coordinate frame of a HEALPix axis as a lower-case name, or None when unknown.

    Examples
    --------
    >>> from histpy import HealpixAxis
    >>> frame_name(HealpixAxis(nside=1, coordsys="galactic")), frame_name(HealpixAxis(nside=1))
    ('galactic', None)
    """
    frame = getattr(axis, "coordsys", None)
    if frame is None:
        return None
    name = getattr(frame, "name", frame)
    return str(name).lower() if name is not None else None


def check_frames(name, event_axis, response_axes, ccm_axes=None) -> None:
    """Refuse event, response and CCM frames that do not fit the data space.

    Galactic data space (no CCM): the event ``PsiChi`` and the response's ``NuLambda`` and
    ``PsiChi`` are galactic.  Spacecraft frame (with a CCM): the event ``PsiChi``, the
    response's axes and the CCM's ``NuLambda`` are in the spacecraft frame, the CCM's
    ``lb`` is a sky frame.  An axis without a frame is not checked.

    Raises
    ------
    AxisMismatchError
        A frame that contradicts the data space; the message names the axis and the file.
    """
    local = ccm_axes is not None
    space = "the spacecraft-frame data space (with a CCM)" if local else \
        "the galactic data space (no CCM)"
    want = SPACECRAFT if local else "galactic"
    fix = ("use spacecraft-frame events (e.g. test_event_histogram_localCDS) with a full "
           "detector response and its CCM" if local else
           "use galactic events with a precomputed galactic response, or give the CCM "
           "(coordsys_conv_matrix=) for spacecraft-frame data")
    items = [("PsiChi of the event histogram", event_axis, want),
             ("NuLambda of the response", response_axes["NuLambda"], want),
             ("PsiChi of the response", response_axes["PsiChi"], want)]
    if local:
        items.append(("NuLambda of the coordinate-conversion matrix", ccm_axes["NuLambda"],
                      SPACECRAFT))
    for what, axis, expected in items:
        got = frame_name(axis)
        if got is not None and got != expected:
            raise AxisMismatchError(f"dataset {name!r}: the {what} is in the {got!r} frame, "
                                    f"but {space} needs {expected!r}; {fix}.")
    if local:
        got = frame_name(ccm_axes["lb"])
        if got == SPACECRAFT:
            raise AxisMismatchError(f"dataset {name!r}: the lb axis of the coordinate-"
                                    "conversion matrix is in the spacecraft frame; it must be "
                                    "a sky frame (galactic): rebuild the CCM.")


def check_model_grid(model_axis, data_axis, where: str = "model_definition:property") -> None:
    """Refuse a model whose HEALPix scheme or frame differs from the data's sky axis.

    The arrays would be used as they are, so a NESTED model on RING data (or an ICRS label
    on galactic pixels) scrambles or mislabels every pixel.

    Raises
    ------
    AxisMismatchError
        The scheme or the frame differs; the message names the parameter to change.
    """
    ms, ds = getattr(model_axis, "scheme", None), getattr(data_axis, "scheme", None)
    if ms is not None and ds is not None and str(ms).upper() != str(ds).upper():
        raise AxisMismatchError(
            f"{where}:scheme is {str(ms).lower()!r} but the data's sky axis is "
            f"{str(ds).upper()}-ordered; set scheme: {str(ds).lower()!r} (the pixels would "
            "otherwise be read in the wrong order).")
    mf, df = frame_name(model_axis), frame_name(data_axis)
    if mf is not None and df is not None and mf != df:
        raise AxisMismatchError(
            f"{where}:coordinate is {mf!r} but the data's sky axis (the response's "
            f"NuLambda or the CCM's lb) is {df!r}; probdeconv does not transform images "
            f"between frames, so set coordinate: {df!r}.")


def check_dataset_contents(name, counts: np.ndarray, backgrounds: Mapping[str, np.ndarray],
                           exposure: np.ndarray) -> None:
    """Refuse data that cannot give an image; warn about data that give a poor one.

    Raises
    ------
    DataError
        No counts at all, a background template of zeros, or a zero exposure everywhere (an
        all-zero response or CCM).
    """
    total = float(np.sum(counts))
    if total <= 0:
        raise DataError(f"dataset {name!r}: the event histogram holds no counts (all bins are "
                        "0); check the event file and its selection.")
    for key, b in backgrounds.items():
        if not np.any(np.asarray(b) > 0):
            raise DataError(f"dataset {name!r}: background {key!r} is zero everywhere, so the "
                            "image would absorb every count; give the background template, "
                            "or leave the key out.")
    if not np.any(np.asarray(exposure) > 0):
        raise DataError(f"dataset {name!r}: the exposure map is zero everywhere: the response "
                        "(or the coordinate-conversion matrix) is all zero, so no sky pixel is "
                        "seen; check the response and CCM files.")
    if total < FEW_COUNTS:
        logger.warning("dataset %r holds only %d count(s); the image will be dominated by "
                       "noise.", name, int(round(total)))
    if not np.all(np.asarray(counts) == np.round(counts)):
        logger.warning("dataset %r: the event histogram holds non-integer counts (e.g. %.6g); "
                       "the Poisson likelihood assumes integers: weighted or smoothed data "
                       "give wrong uncertainties.", name,
                       float(np.asarray(counts)[np.asarray(counts) != np.round(counts)][0]))
    if not backgrounds:
        logger.warning("dataset %r has no background model: every count is attributed to the "
                       "sky; give a background template unless the data have none.", name)


def validate_mask(mask, axes=None, what: str = "mask"):
    """A boolean mask histogram (True = free pixel) or a clear error.

    Boolean contents are taken as they are; numbers that are all exactly 0 or 1 are taken
    as False / True.  ``axes`` (the model's) checks the shape; with it, a plain NumPy
    array is accepted too (and returned as an array).

    Raises
    ------
    DataError
        Not a histogram (or array), non-boolean values (NaN, strings, 0.5, 2, ...), the wrong shape,
        or no free pixel at all.

    Examples
    --------
    >>> from histpy import Axes, Axis
    >>> axes = Axes([Axis([0, 1, 2], label="lb")])
    >>> validate_mask(Histogram(axes, contents=np.array([1.0, 0.0])), axes).contents
    array([ True, False])
    >>> validate_mask(Histogram(axes, contents=np.array([0.5, 1.0])), axes)
    Traceback (most recent call last):
    ...
    probdeconv.errors.DataError: mask: expected booleans (True = free pixel), got values 0.5; ...
    """
    if mask is None:
        return None
    plain = isinstance(mask, np.ndarray) and axes is not None  # an algorithm's array mask
    if not isinstance(mask, Histogram) and not plain:
        raise DataError(f"{what}: expected a histpy Histogram of bool on the model axes "
                        f"(True = free pixel), got a {type(mask).__name__}; build it as "
                        "Histogram(model.axes, contents=np.ones(shape, bool))")
    if not plain:
        mask = mask.to_dense() if mask.is_sparse else mask
    c = mask if plain else mask.contents
    c = np.asarray(c.value if isinstance(c, u.Quantity) else c)
    shape = c.shape
    if axes is not None and tuple(shape) != tuple(axes.shape):
        raise DataError(f"{what} has shape {tuple(shape)}; expected {tuple(axes.shape)} (the "
                        f"model axes {axes.labels.tolist()}). Build it as "
                        "Histogram(model.axes, contents=np.ones(shape, bool)).")
    if c.dtype != bool:
        ok = np.issubdtype(c.dtype, np.number) and not np.issubdtype(c.dtype, np.complexfloating)
        bad = c[~np.isin(c, (0, 1))] if ok else c.ravel()
        if not ok or bad.size:
            shown = ", ".join(sorted({str(v) for v in bad.ravel()[:50].tolist()})[:4])
            raise DataError(f"{what}: expected booleans (True = free pixel), got values "
                            f"{shown}; build it as Histogram(model.axes, "
                            "contents=array_of_bool).")
        logger.debug("%s: 0/1 numbers taken as booleans", what)
        c = c.astype(bool)
        mask = c if plain else Histogram(mask.axes, contents=c)
    if not np.any(c):
        raise DataError(f"{what}: every pixel is masked (all False), so there is nothing to "
                        "fit; True marks a free pixel.")
    return mask


def check_initial_model(model, datasets: Sequence = (), mask=None,
                        where: str = "model_definition:initialization") -> None:
    """Refuse a starting image that is not finite, negative, zero or absurdly faint/bright.

    The predicted sky counts ``Σ_d Σ_j S_dj λ_j`` (exposure maps of the datasets that
    have one) are compared with the observed counts: RL's update is multiplicative, so an
    image predicting almost nothing cannot grow in a sensible number of iterations (and its
    stopping rule stops at once), and one predicting ~10¹² times the data overflows.

    Raises
    ------
    DataError
        NaN / inf / negative values, an image of zeros (on the free pixels), subnormal
        values, or predicted counts outside ``[1e-6, 1e12]`` × the observed ones.
    """
    c = model.contents
    unit = getattr(model, "unit", None)
    values = np.asarray(c.to_value(FLUX_UNIT) if isinstance(c, u.Quantity) and unit is not None
                        and u.Unit(unit).is_equivalent(FLUX_UNIT) else
                        getattr(c, "value", c), dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError(f"{where}: the initial image holds {int(np.sum(~np.isfinite(values)))} "
                        "NaN or infinite value(s); give finite fluxes >= 0.")
    if np.any(values < 0):
        raise DataError(f"{where}: the initial image holds negative fluxes (min "
                        f"{values.min():.3g}); give fluxes >= 0.")
    free = np.ones(values.shape, bool) if mask is None else np.asarray(
        getattr(mask, "contents", mask), dtype=bool)
    if not np.any(values[free] > 0):
        raise DataError(f"{where}: the initial image is zero on every free pixel; RL's update "
                        "is multiplicative, so zero stays zero: start from a positive flux, "
                        "e.g. value: [1.0e-4] (cm-2 s-1 sr-1).")
    tiny = np.finfo(np.float64).tiny
    if np.any((values > 0) & (values < tiny)):
        raise DataError(f"{where}: the initial image holds subnormal fluxes (below {tiny:.3g}) "
                        "that the arithmetic cannot grow; start from a flux like 1.0e-4.")
    exposures = [d.exposure_map for d in datasets if getattr(d, "exposure_map", None) is not None]
    events = [getattr(d, "event", None) for d in datasets]
    if not exposures or any(e is None for e in events):
        return
    s = sum(np.asarray(e.contents.to_value(u.cm**2 * u.s * u.sr)
                       if isinstance(e.contents, u.Quantity) else e.contents, np.float64)
            for e in exposures)
    with np.errstate(over="ignore", invalid="ignore"):
        sky = float(np.sum(s * values))
    observed = float(sum(np.sum(np.asarray(getattr(e.contents, "value", e.contents)))
                         for e in events))
    if observed <= 0:
        return
    flat = 0.1 * observed / max(float(np.sum(s)), tiny)
    if not np.isfinite(sky) or sky > MAX_SKY_RATIO * observed:
        raise DataError(f"{where}: the initial image predicts {sky:.3g} sky counts, against "
                        f"{observed:.0f} observed; the arithmetic overflows. Start from a "
                        f"flux near {flat:.2g} cm-2 s-1 sr-1 (a tenth of the counts).")
    if sky < MIN_SKY_FRACTION * observed:
        raise DataError(f"{where}: the initial image predicts {sky:.3g} sky counts, a "
                        f"fraction {sky / observed:.2g} of the {observed:.0f} observed; RL's "
                        "multiplicative update cannot grow it in a sensible number of "
                        "iterations and its stopping rule would stop at once. Start from a "
                        f"flux near {flat:.2g} cm-2 s-1 sr-1 (a tenth of the counts).")


def check_finite_iteration(algo) -> None:
    """Stop a run whose last iteration gave a NaN or infinite statistic or image.

    Raises
    ------
    DataError
        Naming the iteration and what became non-finite, with the usual causes.
    """
    r = algo.results[-1] if algo.results else {}
    bad = []
    for key in ("log-likelihood", "log-posterior"):
        if key in r and not np.all(np.isfinite(np.asarray(r[key], dtype=np.float64))):
            bad.append(f"the {key} is {np.asarray(r[key], dtype=np.float64).tolist()}")
    bkg = r.get("background_normalization") or {}
    if not all(np.isfinite(float(v)) for v in bkg.values()):
        bad.append(f"a background normalisation is {dict(bkg)}")
    model = getattr(algo, "model", None)
    if model is not None:
        values = np.asarray(getattr(model.contents, "value", model.contents), np.float64)
        n = int(np.sum(~np.isfinite(values)))
        if n:
            bad.append(f"{n} of {values.size} image values are NaN or infinite")
    if bad:
        raise DataError(f"iteration {algo.iteration_count}: {'; '.join(bad)}. The run is "
                        "stopped (nothing of this iteration is saved): check the initial flux "
                        "(model_definition:initialization), the data (NaN or huge values) "
                        "and, after --resume, the checkpoint.")
