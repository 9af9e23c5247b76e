"""Settings of a simulation: one frozen dataclass, written to and read from YAML.

Every number that shapes a simulated data set (binning, instrument, survey, sky,
background, seed) is a field of :class:`SimulationConfig`, so that ``simulation.yml``
beside the files is enough to regenerate them.  Units are fixed per field (keV, deg,
s, cm2, counts/s, ph cm-2 s-1) and given in the field comments.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any

from probdeconv.errors import ParameterError

__all__ = ["SimulationConfig", "DAY"]

logger = logging.getLogger(__name__)

DAY = 86400.0
"""Seconds per day."""


def _positive(name: str, value: Any, integer: bool = False, allow_zero: bool = False) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        what = "an integer" if integer else "a finite number"
        raise ParameterError(f"SimulationConfig.{name}: got {value!r}; expected {what}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ParameterError(f"SimulationConfig.{name}: got {value!r}; it must be {bound}.")


def _edges(name: str, value: Any) -> tuple[float, ...]:
    try:
        edges = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"SimulationConfig.{name}: got {value!r}; expected a list of "
                             "increasing energies in keV, e.g. [509.0, 513.0].") from exc
    if (len(edges) < 2 or not all(math.isfinite(e) and e > 0 for e in edges)
            or any(b <= a for a, b in zip(edges, edges[1:]))):
        raise ParameterError(f"SimulationConfig.{name}: got {list(edges)}; expected at least "
                             "two positive, strictly increasing energies in keV.")
    return edges


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """All settings of :func:`probdeconv.simulate.simulate`.

    Binning
        ``nside`` is the HEALPix NSIDE of the model (``lb``) and of the response's source
        direction (``NuLambda``); ``psichi_nside`` (default ``nside``) that of ``PsiChi``.
        ``energy_edges`` (keV) bin ``Ei``; ``measured_energy_edges`` (default the same)
        bin ``Em``.  ``phi_bins`` equal bins of the Compton scatter angle on
        ``[0, phi_max]`` deg.
    Instrument
        ``arm_sigma`` (deg): Gaussian angular resolution measure, the spread of events
        around the Compton cone.  ``ring_cut`` (in units of the ring width): beyond it the
        response is exactly zero.  ``psichi_oversampling``: sub-pixels per PsiChi pixel
        side used to integrate the ring over a pixel.  ``peak_effective_area`` (cm2) on
        axis at ``peak_energy`` (keV), falling as a log-parabola of width
        ``area_energy_width`` (in ln E).  ``horizon`` (deg): the zenith angle at which the
        effective area reaches zero (linear in cos zenith).  ``energy_resolution`` (keV
        FWHM at 511 keV, scaling as sqrt(E)) and ``photopeak_fraction`` (the rest is a
        flat tail of partly absorbed photons down to ``tail_start`` x Ei).
    Survey
        ``duration`` (s) of a zenith-pointing survey in a circular orbit of period
        ``orbit_period`` (s) and ``inclination`` (deg), whose node precesses at
        ``precession_rate`` (deg/day); the pointing is rocked by ``rocking_angle`` (deg)
        north and south on alternate orbits.  ``n_samples`` attitude samples are binned
        into spacecraft-attitude (ScAtt) bins by the HEALPix pixels of the z axis
        (``scatt_nside``) and x axis (``scatt_x_nside``).
    Sky and background
        ``sky``: a preset name (``'bulge511'``, ``'points'``) or a list of component
        dicts (see :mod:`probdeconv.simulate.skymodels`); ``flux_scale`` multiplies every
        component flux.  ``background_rate`` (counts/s, summed over the data space).
        ``bkg_drift``: the true background rate varies by ``± bkg_drift`` over the mission
        (``bkg_drift_shape`` ``'sine'``: ``1 + a sin(2π t / duration)``, ``'linear'``: from
        ``1 − a`` to ``1 + a``) while the background template written stays flat in time;
        ``time_chunks``: the attitude samples are binned into ScAtt bins within this many
        consecutive time intervals, so that the ScAtt axis runs in time order (for time
        nodes of the background, :mod:`probdeconv.simulate.drift`).
        ``point_sources``: point sources at their exact directions (dicts ``l``, ``b``,
        ``flux`` and optionally ``name``, ``line``, ``index``), their counts from the
        response interpolated at the direction (:mod:`probdeconv.simulate.point_sources`),
        not drawn into the truth image.
    Randomness
        ``seed`` of the :class:`numpy.random.Generator` that draws the Poisson counts
        (the only random step).

    Examples
    --------
    >>> cfg = SimulationConfig(nside=4, seed=3)
    >>> cfg.replace(seed=4).seed
    4
    >>> SimulationConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    sky: str | tuple[Mapping[str, Any], ...] = "bulge511"
    flux_scale: float = 1.0
    point_sources: tuple[Mapping[str, Any], ...] = ()  # exact directions, beside the sky
    nside: int = 4
    psichi_nside: int | None = None
    energy_edges: tuple[float, ...] = (509.0, 513.0)  # keV (Ei)
    measured_energy_edges: tuple[float, ...] | None = None  # keV (Em), default = Ei
    phi_bins: int = 30
    phi_max: float = 180.0  # deg
    # instrument
    arm_sigma: float = 2.5  # deg
    ring_cut: float = 4.0  # ring widths
    psichi_oversampling: int = 4
    peak_effective_area: float = 60.0  # cm2
    peak_energy: float = 511.0  # keV
    area_energy_width: float = 1.5  # ln E
    horizon: float = 100.0  # deg zenith angle where the area reaches zero
    energy_resolution: float = 3.0  # keV FWHM at 511 keV
    photopeak_fraction: float = 0.8
    tail_start: float = 0.3  # x Ei
    # survey
    duration: float = 30 * DAY  # s
    orbit_period: float = 5760.0  # s
    inclination: float = 6.0  # deg
    precession_rate: float = -7.4  # deg/day
    rocking_angle: float = 30.0  # deg
    n_samples: int = 20000
    scatt_nside: int = 2
    scatt_x_nside: int = 1
    # background
    background_rate: float = 1.0  # counts/s
    bkg_drift: float = 0.0  # relative amplitude of a background drift over the mission
    bkg_drift_shape: str = "sine"  # "sine": 1 + a sin(2π t / duration); "linear": ±a
    time_chunks: int = 1  # ScAtt bins made within this many consecutive time intervals
    # randomness
    seed: int = 0

    def __post_init__(self) -> None:
        sky = self.sky
        if isinstance(sky, str):
            pass
        elif isinstance(sky, (list, tuple)) and sky and all(isinstance(c, Mapping)
                                                            for c in sky):
            object.__setattr__(self, "sky", tuple(dict(c) for c in sky))
        else:
            raise ParameterError(f"SimulationConfig.sky: got {sky!r}; expected a preset name "
                                 "('bulge511', 'points') or a non-empty list of component "
                                 "dicts such as {'kind': 'point', 'l': 184.56, 'b': -5.78, "
                                 "'flux': 1e-3}.")
        ps = self.point_sources
        if not (isinstance(ps, list | tuple) and all(isinstance(c, Mapping) and {"l", "b",
                                                     "flux"} <= set(c) for c in ps)):
            raise ParameterError(f"SimulationConfig.point_sources: got {ps!r}; expected a list "
                                 "of {'l': deg, 'b': deg, 'flux': ph cm-2 s-1[, 'name', "
                                 "'line', 'index']}.")
        object.__setattr__(self, "point_sources", tuple(dict(c) for c in ps))
        for name in ("nside", "phi_bins", "psichi_oversampling", "n_samples", "scatt_nside",
                     "scatt_x_nside"):
            _positive(name, getattr(self, name), integer=True)
        if self.psichi_nside is not None:
            _positive("psichi_nside", self.psichi_nside, integer=True)
        for name in ("flux_scale", "phi_max", "arm_sigma", "ring_cut", "peak_effective_area",
                     "peak_energy", "area_energy_width", "horizon", "energy_resolution",
                     "tail_start", "duration", "orbit_period"):
            _positive(name, getattr(self, name))
        for name in ("inclination", "precession_rate", "rocking_angle"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not \
                    math.isfinite(value):
                raise ParameterError(f"SimulationConfig.{name}: got {value!r}; expected a "
                                     "finite number of degrees.")
        _positive("background_rate", self.background_rate, allow_zero=True)
        _positive("time_chunks", self.time_chunks, integer=True)
        _positive("bkg_drift", self.bkg_drift, allow_zero=True)
        if not self.bkg_drift < 1.0 or self.bkg_drift_shape not in ("sine", "linear"):
            raise ParameterError(f"SimulationConfig: bkg_drift {self.bkg_drift!r} with shape "
                                 f"{self.bkg_drift_shape!r}; expected an amplitude in [0, 1) "
                                 "(0.2: ±20 % over the mission) and shape 'sine' or 'linear'.")
        _positive("seed", self.seed, integer=True, allow_zero=True)
        if self.phi_max > 180.0:
            raise ParameterError(f"SimulationConfig.phi_max: got {self.phi_max}; the Compton "
                                 "scatter angle lies in [0, 180] deg.")
        if not 90.0 < self.horizon <= 180.0:
            raise ParameterError(f"SimulationConfig.horizon: got {self.horizon}; expected a "
                                 "zenith angle in (90, 180] deg (e.g. 100).")
        if not 0.0 <= self.photopeak_fraction <= 1.0 or not self.tail_start < 1.0:
            raise ParameterError(
                f"SimulationConfig: photopeak_fraction {self.photopeak_fraction} must lie in "
                f"[0, 1] and tail_start {self.tail_start} in (0, 1).")
        object.__setattr__(self, "energy_edges", _edges("energy_edges", self.energy_edges))
        if self.measured_energy_edges is not None:
            object.__setattr__(self, "measured_energy_edges",
                               _edges("measured_energy_edges", self.measured_energy_edges))
        for name in ("nside", "psichi_nside", "scatt_nside", "scatt_x_nside",
                     "psichi_oversampling"):
            value = getattr(self, name)
            if value is not None and value & (value - 1):
                raise ParameterError(f"SimulationConfig.{name}: got {value}; use a power of "
                                     "2 (1, 2, 4, 8, 16, ...).")
        if self.n_samples * self.orbit_period < 4 * self.duration:
            logger.warning("n_samples=%d samples the %g-s survey more coarsely than 4 per "
                           "orbit; the attitude coverage may be patchy.", self.n_samples,
                           self.duration)

    # ------------------------------------------------------------------ derived values
    @property
    def data_nside(self) -> int:
        """NSIDE of the PsiChi axis (``psichi_nside`` or ``nside``)."""
        return int(self.psichi_nside or self.nside)

    @property
    def em_edges(self) -> tuple[float, ...]:
        """Edges of the measured-energy axis ``Em`` (keV)."""
        return self.measured_energy_edges or self.energy_edges

    # ------------------------------------------------------------------ conversions
    def replace(self, **changes: Any) -> SimulationConfig:
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ParameterError(f"SimulationConfig: unknown setting(s) {unknown}; valid: "
                                 f"{[f.name for f in dataclasses.fields(self)]}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe dict of the settings."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [dict(v) if isinstance(v, Mapping) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimulationConfig:
        """Build from :meth:`to_dict` output (unknown keys are an error)."""
        if not isinstance(data, Mapping):
            raise ParameterError(f"SimulationConfig.from_dict: got a {type(data).__name__}; "
                                 "expected a mapping of setting names to values.")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ParameterError(f"SimulationConfig: unknown setting(s) {unknown}; valid: "
                                 f"{names}.")
        return cls(**dict(data))
