"""Simulate a spacecraft-frame COSI data set, write it as real data, and read it back.

:func:`simulate` puts together the pieces of this package:

1. the true sky (:mod:`.skymodels`) as an :class:`~probdeconv.shell.allsky_image.AllSkyImageModel`;
2. the response (:mod:`.instrument`), ``[NuLambda, Ei, Em, Phi, PsiChi]`` in cm2;
3. the survey orientation, its ScAtt bins and the CCM ``[ScAtt, lb, NuLambda]`` (:mod:`.survey`);
4. a background template ``[ScAtt, Em, Phi, PsiChi]`` (:func:`background_template`);
5. the expected counts from :func:`probdeconv.forward.expected_counts` (the one forward
   model) and Poisson counts drawn with ``numpy.random.default_rng(seed)``.

With ``out`` it writes ``response.h5`` (full detector response v1, dense), ``ccm.h5``
(histpy sparse), ``event.h5`` and ``background.h5`` (histpy dense), ``truth.h5``
(AllSkyImageModel) and ``simulation.yml`` (settings, seed, ScAtt table, totals), and
:func:`load_simulation` opens them again through probdeconv's readers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import astropy.units as u
import healpy as hp
import jax.numpy as jnp
import numpy as np
from histpy import Axes, Axis, Histogram

from probdeconv import forward as fm
from probdeconv.errors import FileFormatError
from probdeconv.io.histpy_h5 import read_histogram, write_histogram
from probdeconv.io.memory import (
    USABLE_FRACTION,
    available_memory,
    format_bytes,
    require_memory,
)
from probdeconv.shell.allsky_image import AllSkyImageModel
from probdeconv.shell.dataif import DataIF_COSI_DC2
from probdeconv.shell.response import CoordsysConversionMatrix, FullDetectorResponse

from .config import SimulationConfig
from .drift import survey_bins
from .files import read_yaml, write_full_detector_response, write_yaml
from .instrument import build_response
from .point_sources import point_source_counts
from .skymodels import SkyComponent, component_images, components_from_config, sky_image
from .survey import ScAttBins, coordsys_conversion_matrix

__all__ = ["Simulation", "simulate", "load_simulation", "background_template", "FILE_NAMES"]

logger = logging.getLogger(__name__)

FILE_NAMES = {"response": "response.h5", "ccm": "ccm.h5", "event": "event.h5",
              "background": "background.h5", "truth": "truth.h5", "config": "simulation.yml"}
"""File of each product inside the output directory."""

_FORMAT = "probdeconv-simulation-1"


def background_template(cfg: SimulationConfig, data_axes: Axes,
                        dwell: np.ndarray) -> np.ndarray:
    """Expected background counts ``[ScAtt, Em, Phi, PsiChi]``.

    ``background_rate × dwell[t]`` shared out as: ``Em`` ∝ ∫ E^-1.5 dE over the bin;
    ``Phi`` ∝ sin φ · exp(-φ / 90°) at the bin centre times its width; ``PsiChi`` ∝
    ``1 − 0.3 cos θ`` (θ the spacecraft zenith angle: a little more from below, like Earth
    albedo).  Each factor sums to 1, so the total is ``background_rate × Σ dwell``.

    Examples
    --------
    >>> from probdeconv.simulate.instrument import response_axes
    >>> cfg = SimulationConfig(nside=1)
    >>> ax = Axes([Axis(np.arange(3), label="ScAtt")] + list(response_axes(cfg))[2:])
    >>> round(float(background_template(cfg, ax, np.array([10.0, 30.0])).sum()), 9)
    40.0
    """
    em = data_axes["Em"].edges.to_value(u.keV)
    e_part = np.diff(em ** -0.5) / -0.5
    phi_edges = data_axes["Phi"].edges.to_value(u.rad)
    phi = 0.5 * (phi_edges[1:] + phi_edges[:-1])
    phi_part = np.sin(phi) * np.exp(-phi / (np.pi / 2)) * np.diff(phi_edges)
    theta, _ = hp.pix2ang(data_axes["PsiChi"].nside, np.arange(data_axes["PsiChi"].nbins))
    psi_part = 1.0 - 0.3 * np.cos(theta)
    parts = [p / p.sum() for p in (e_part, phi_part, psi_part)]
    # [t] x [Em] x [Phi] x [PsiChi] -> [t, Em, Phi, PsiChi]
    return cfg.background_rate * np.einsum("t,m,f,p->tmfp", np.asarray(dwell), *parts)


@dataclasses.dataclass
class Simulation:
    """A simulated data set (returned by :func:`simulate` and :func:`load_simulation`).

    Attributes
    ----------
    config : SimulationConfig
    event, background : Histogram
        Counts and background template ``[ScAtt, Em, Phi, PsiChi]``.
    response : Histogram
        ``[NuLambda, Ei, Em, Phi, PsiChi]`` in cm2.
    ccm : CoordsysConversionMatrix
        ``[ScAtt, lb, NuLambda]`` in s.
    truth : AllSkyImageModel
        True sky ``[lb, Ei]`` in cm-2 s-1 sr-1.
    scatt : ScAttBins
        Dwell time and averaged attitude of each ScAtt bin.
    paths : dict of str to Path
        Files written (keys of :data:`FILE_NAMES`); empty when nothing was written.
    """

    config: SimulationConfig
    event: Histogram
    background: Histogram
    response: Histogram
    ccm: CoordsysConversionMatrix
    truth: AllSkyImageModel
    scatt: ScAttBins
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)

    def write(self, out: str | Path, overwrite: bool = False) -> None:
        """Write the files of the simulation into ``out`` (what ``simulate(out=...)`` does).

        Raises
        ------
        FileFormatError
            A file exists and ``overwrite`` is False.
        OutputError
            A file cannot be written (disk full, read-only); it is not left half-written.
        """
        _write(self, Path(out), overwrite)

    @property
    def components(self) -> tuple[SkyComponent, ...]:
        """The sky components of the configuration (fluxes scaled)."""
        return components_from_config(self.config.sky, self.config.flux_scale)

    def forward_dataset(self) -> fm.Dataset:
        """The data set as a :class:`probdeconv.forward.Dataset` (background ``bkg`` first)."""
        return fm.make_dataset(np.asarray(self.event), np.asarray(self.response.contents.value),
                               [np.asarray(self.background)], ccm=self.ccm.coo(),
                               n_model_pixels=self.truth.axes["lb"].nbins, name="simulation")

    def expected_counts(self, model: AllSkyImageModel | np.ndarray | None = None,
                        bkg_norm: float = 1.0) -> Histogram:
        """Expected counts of ``model`` (default the truth) + ``bkg_norm`` × background."""
        values = np.asarray(self.truth if model is None else model, dtype=np.float64)
        e = fm.expected_counts(self.forward_dataset(), jnp.asarray(values),
                               jnp.asarray([bkg_norm]), almost_zero=0.0)
        return Histogram(self.event.axes, contents=np.array(e).reshape(self.event.shape),
                         copy_contents=False)

    def detection_significance(self) -> dict[str, float]:
        """Expected (Asimov) significance ``sqrt(TS)`` of each sky component.

        ``TS = 2 Σ [E log(E / E₀) − (E − E₀)]`` with ``E`` the full expectation and ``E₀``
        the expectation without that component (background fixed).
        """
        ds = self.forward_dataset()
        full = np.asarray(fm.expected_counts(ds, jnp.asarray(np.asarray(self.truth)),
                                             jnp.asarray([1.0]), almost_zero=0.0))
        images = component_images(self.components, self.config.nside, self.config.energy_edges)
        out = {}
        for name, image in images.items():
            part = np.asarray(fm.sky_counts(ds, jnp.asarray(image)))
            e0 = np.maximum(full - part, 1e-300)
            ratio = np.where(full > 0, full / e0, 1.0)
            ts = 2.0 * np.sum(np.where(full > 0, full * np.log(ratio), 0.0) - part)
            out[name] = float(np.sqrt(max(ts, 0.0)))
        return out

    def dataif(self, name: str = "simulation", dtype: str = "float64",
               precision: str = "full") -> DataIF_COSI_DC2:
        """Load as :class:`DataIF_COSI_DC2` with background ``"bkg"``.

        Reads the response through :class:`FullDetectorResponse` when the files exist
        (the path a user with real data takes), otherwise uses the in-memory response.
        """
        rsp_path = self.paths.get("response")
        if rsp_path is not None and Path(rsp_path).is_file():
            with FullDetectorResponse.open(rsp_path) as rsp:
                return DataIF_COSI_DC2.load(name, self.event, {"bkg": self.background}, rsp,
                                            coordsys_conv_matrix=self.ccm, dtype=dtype,
                                            precision=precision)
        return DataIF_COSI_DC2.load(name, self.event, {"bkg": self.background}, self.response,
                                    coordsys_conv_matrix=self.ccm, dtype=dtype,
                                    precision=precision)

    def summary(self) -> dict[str, Any]:
        """Totals and sizes (what ``simulation.yml`` records besides the settings)."""
        sky = self.expected_counts(bkg_norm=0.0)
        rsp = np.asarray(self.response)
        return {
            "observed_counts": float(np.sum(np.asarray(self.event))),
            "expected_sky_counts": float(np.sum(np.asarray(sky))),
            "expected_background_counts": float(np.sum(np.asarray(self.background))),
            "n_scatt_bins": self.scatt.n_bins,
            "response_shape": list(rsp.shape),
            "response_zero_fraction": float(1.0 - np.count_nonzero(rsp) / rsp.size),
            "ccm_nonzero": int(self.ccm.contents.nnz),
        }


def _data_axes(response_axes: Axes, n_scatt: int) -> Axes:
    return Axes([Axis(np.arange(n_scatt + 1), label="ScAtt")]
                + [response_axes[k].copy() for k in ("Em", "Phi", "PsiChi")])


def simulate(sky: Any = None, nside: int | None = None, seed: int | None = None,
             out: str | Path | None = None, *, config: SimulationConfig | None = None,
             overwrite: bool = False, **settings: Any) -> Simulation:
    """Simulate a spacecraft-frame data set (and write it to ``out`` when given).

    Parameters
    ----------
    sky : str or list of dict, optional
        Preset name (``'bulge511'``, ``'points'``) or component dicts; overrides ``config``.
    nside, seed : int, optional
        Override the corresponding settings.
    out : str or Path, optional
        Directory to write the files into (created if missing).
    config : SimulationConfig, optional
        Base settings (default :class:`SimulationConfig()`).
    overwrite : bool
        Replace files already in ``out``.
    **settings
        Any other :class:`SimulationConfig` field, e.g. ``phi_bins=20``.

    Returns
    -------
    Simulation

    Raises
    ------
    ParameterError
        Unknown or invalid settings.
    FileFormatError
        Files exist in ``out`` and ``overwrite`` is False.

    Examples
    --------
    >>> sim = simulate(sky="points", nside=2, seed=1, phi_bins=10)
    >>> sim.event.axes.labels.tolist()
    ['ScAtt', 'Em', 'Phi', 'PsiChi']
    >>> sim2 = simulate(sky="bulge511", nside=8, seed=0, out="sim/")  # doctest: +SKIP
    """
    cfg = config or SimulationConfig()
    explicit = {k: v for k, v in dict(sky=sky, nside=nside, seed=seed).items() if v is not None}
    cfg = cfg.replace(**explicit, **settings)
    out_dir = None if out is None else Path(out)
    if out_dir is not None and not overwrite:
        taken = [n for n in FILE_NAMES.values() if (out_dir / n).exists()]
        if taken:
            raise FileFormatError(f"{out_dir}: already holds {taken}; pass overwrite=True or "
                                  "choose an empty directory.")
    start = time.perf_counter()
    bins, _, drift = survey_bins(cfg)  # (time-ordered ScAtt bins, drift per bin)
    check_simulation_memory(cfg, bins.n_bins)
    truth = sky_image(components_from_config(cfg.sky, cfg.flux_scale), cfg.nside,
                      cfg.energy_edges)
    response = build_response(cfg)
    ccm = coordsys_conversion_matrix(bins, cfg.nside, cfg.nside)
    axes = _data_axes(response.axes, bins.n_bins)
    bkg = background_template(cfg, axes, bins.dwell)
    true_bkg = bkg if cfg.bkg_drift == 0 else bkg * drift[:, None, None, None]
    ds = fm.make_dataset(np.zeros(axes.shape), np.asarray(response.contents.value), [true_bkg],
                         ccm=ccm.coo(), n_model_pixels=truth.axes["lb"].nbins,
                         name="simulation")
    expected = np.asarray(fm.expected_counts(ds, jnp.asarray(np.asarray(truth)),
                                             jnp.asarray([1.0]), almost_zero=0.0))
    if cfg.point_sources:  # at their exact directions, beside the truth image
        expected = expected + point_source_counts(cfg, ds, bins)
    rng = np.random.default_rng(cfg.seed)
    counts = rng.poisson(np.maximum(expected, 0.0)).astype(np.float64).reshape(axes.shape)
    sim = Simulation(config=cfg, event=Histogram(axes, contents=counts, copy_contents=False),
                     background=Histogram(axes.copy(), contents=bkg, copy_contents=False),
                     response=response,
                     ccm=ccm, truth=truth, scatt=bins)
    logger.info("simulated %d counts (%.1f expected) in %d ScAtt bins in %.1f s",
                int(counts.sum()), expected.sum(), bins.n_bins, time.perf_counter() - start)
    if out_dir is not None:
        _write(sim, out_dir, overwrite)
    return sim


def simulation_bytes(cfg: SimulationConfig, n_scatt: int) -> tuple[int, str]:
    """Peak memory of :func:`simulate` (bytes) and the sizes it follows from.

    The dense float64 response ``[NuLambda, Ei, Em, Phi, PsiChi]`` is held about three
    times (built, in the forward model, written), the data-space arrays ``[ScAtt, Em, Phi,
    PsiChi]`` (counts, background, expectation, their forward-model copies) about six.

    Examples
    --------
    >>> need, sizes = simulation_bytes(SimulationConfig(nside=32), n_scatt=60)
    >>> round(need / 2**30)
    102
    >>> sizes  # doctest: +NORMALIZE_WHITESPACE
    'response [NuLambda 12288, Ei 1, Em 1, Phi 30, PsiChi 12288], data [ScAtt 60, Em 1,
     Phi 30, PsiChi 12288]'
    """
    n_pix, n_psi = hp.nside2npix(cfg.nside), hp.nside2npix(cfg.data_nside)
    n_ei, n_em = len(cfg.energy_edges) - 1, len(cfg.em_edges) - 1
    response = n_pix * n_ei * n_em * cfg.phi_bins * n_psi
    data = n_scatt * n_em * cfg.phi_bins * n_psi
    sizes = (f"response [NuLambda {n_pix}, Ei {n_ei}, Em {n_em}, Phi {cfg.phi_bins}, PsiChi "
             f"{n_psi}], data [ScAtt {n_scatt}, Em {n_em}, Phi {cfg.phi_bins}, PsiChi {n_psi}]")
    return 8 * (3 * response + 6 * data), sizes


def check_simulation_memory(cfg: SimulationConfig, n_scatt: int) -> None:
    """Refuse settings whose arrays cannot fit in memory, naming the figure and a fix.

    Raises
    ------
    ParameterError
        The estimate of :func:`simulation_bytes` exceeds what
        :func:`probdeconv.io.memory.require_memory` allows.
    """
    need, sizes = simulation_bytes(cfg, n_scatt)
    fix = "lower nside (or psichi_nside) or phi_bins"
    have = available_memory()
    nside = cfg.nside
    while have is not None and nside > 1:
        nside //= 2
        less, _ = simulation_bytes(cfg.replace(nside=nside, psichi_nside=None), n_scatt)
        if less <= USABLE_FRACTION * have:
            fix = (f"lower nside (NSIDE {nside} needs about {format_bytes(less)}), "
                   "psichi_nside or phi_bins")
            break
    require_memory(need, f"a simulation at NSIDE {cfg.nside} ({sizes}, float64)", fix)


def _write(sim: Simulation, out_dir: Path, overwrite: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / n for k, n in FILE_NAMES.items()}
    if overwrite:  # the settings file goes first: a failed rewrite never pairs old settings
        paths["config"].unlink(missing_ok=True)  # with new files
    for key in ("event", "background", "ccm", "truth"):
        if overwrite:
            paths[key].unlink(missing_ok=True)
    written = []
    try:  # each file atomically; a failure removes the files of this call (no partial set)
        write_full_detector_response(sim.response, paths["response"], overwrite=overwrite)
        written.append(paths["response"])
        for key in ("ccm", "event", "background", "truth"):
            write_histogram(getattr(sim, key), paths[key], overwrite=overwrite)
            written.append(paths[key])
        write_yaml({"format": _FORMAT, "config": sim.config.to_dict(),
                    "files": dict(FILE_NAMES), "summary": sim.summary(),
                    "scatt": sim.scatt.to_dict()}, paths["config"], overwrite=overwrite)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    sim.paths = paths
    logger.info("wrote the simulation to %s", out_dir)


def load_simulation(directory: str | Path) -> Simulation:
    """Reopen a simulation written by :func:`simulate` through probdeconv's file readers.

    Examples
    --------
    >>> sim = load_simulation("sim/")                                  # doctest: +SKIP
    >>> data = sim.dataif("511keV")                                    # doctest: +SKIP
    """
    directory = Path(directory)
    meta = read_yaml(directory / FILE_NAMES["config"])
    if meta.get("format") != _FORMAT:
        raise FileFormatError(f"{directory / FILE_NAMES['config']}: format "
                              f"{meta.get('format')!r}, expected {_FORMAT!r}; it was not "
                              "written by probdeconv.simulate.")
    files = {**FILE_NAMES, **meta.get("files", {})}
    paths = {k: directory / files[k] for k in FILE_NAMES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileFormatError(f"{directory}: missing {missing}; rerun simulate(out=...).")
    with FullDetectorResponse.open(paths["response"]) as rsp:
        response = rsp.to_image_response()
    return Simulation(config=SimulationConfig.from_dict(meta["config"]),
                      event=read_histogram(paths["event"]),
                      background=read_histogram(paths["background"]), response=response,
                      ccm=CoordsysConversionMatrix.open(paths["ccm"]),
                      truth=AllSkyImageModel.open(paths["truth"]),
                      scatt=ScAttBins.from_dict(meta["scatt"]), paths=paths)
