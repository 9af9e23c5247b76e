"""A background that drifts over the mission, and attitude bins in time order.

Real backgrounds vary in time (orbit, solar activity, activation); the simulated one
can drift by ``± bkg_drift`` over the survey (:class:`~.config.SimulationConfig`):
``f(t) = 1 + a sin(2π t / duration)`` (``'sine'``) or ``1 + a (2 t / duration − 1)``
(``'linear'``).  The counts are drawn with the drifting background; the template written
(``background.h5``) is the flat one, as an analyst's template would be.

To fit such a drift with background time nodes the data axis must run in time order:
with ``time_chunks = n`` the attitude samples are cut into ``n`` consecutive intervals
and binned into ScAtt bins within each (the bins of interval 0 first).
:func:`survey_bins` gives the bins, the interval of each bin and its mean drift factor;
:func:`chunk_edges` the bin-index edges of the intervals (``nodes`` edges for a fit).

Examples
--------
>>> from probdeconv.simulate import SimulationConfig
>>> cfg = SimulationConfig(n_samples=2000, time_chunks=4, bkg_drift=0.2)
>>> bins, chunk, factor = survey_bins(cfg)
>>> bool(np.all(np.diff(chunk) >= 0)), chunk_edges(chunk)[0], chunk_edges(chunk)[-1] == bins.n_bins
(True, 0, True)
>>> bool(abs(np.average(factor, weights=bins.dwell) - 1.0) < 1e-3)  # mean over the mission
True
"""

from __future__ import annotations

import healpy as hp
import numpy as np

from .config import SimulationConfig
from .survey import Attitudes, ScAttBins, bin_attitudes, survey_attitudes

__all__ = ["drift_factor", "survey_bins", "chunk_edges"]


def drift_factor(cfg: SimulationConfig, t: np.ndarray) -> np.ndarray:
    """The background rate at times ``t`` (s) relative to ``background_rate``.

    >>> cfg = SimulationConfig(bkg_drift=0.2, bkg_drift_shape="linear")
    >>> drift_factor(cfg, np.array([0.0, cfg.duration])).tolist()
    [0.8, 1.2]
    """
    x = np.asarray(t, dtype=np.float64) / cfg.duration
    shape = np.sin(2 * np.pi * x) if cfg.bkg_drift_shape == "sine" else 2 * x - 1
    return 1.0 + cfg.bkg_drift * shape


def survey_bins(cfg: SimulationConfig) -> tuple[ScAttBins, np.ndarray, np.ndarray]:
    """ScAtt bins of the survey, the time interval of each bin and its mean drift factor.

    With ``time_chunks = 1`` the bins are :func:`~.survey.bin_attitudes` of the whole
    survey.  The factor of a bin is the mean of :func:`drift_factor` over its samples
    (ones without a drift).
    """
    att = survey_attitudes(cfg)
    n = cfg.time_chunks
    part = np.minimum((att.time / cfg.duration * n).astype(np.int64), n - 1)
    pieces, chunks, factors = [], [], []
    for c in range(n):
        sel = part == c
        sub = Attitudes(att.time[sel], att.z[sel], att.x[sel], att.dwell)
        bins = bin_attitudes(sub, cfg.scatt_nside, cfg.scatt_x_nside)
        pieces.append(bins)
        chunks.append(np.full(bins.n_bins, c))
        factors.append(_bin_means(cfg, sub, bins))
    if n == 1:
        return pieces[0], chunks[0], factors[0]
    fields = {f: np.concatenate([getattr(b, f) for b in pieces])
              for f in ("dwell", "z", "x", "z_pixel", "x_pixel", "n_samples")}
    return ScAttBins(**fields), np.concatenate(chunks), np.concatenate(factors)


def _bin_means(cfg: SimulationConfig, att: Attitudes, bins: ScAttBins) -> np.ndarray:
    """Mean drift factor over the samples of each bin (the bins of :func:`bin_attitudes`)."""
    if cfg.bkg_drift == 0:
        return np.ones(bins.n_bins)
    key = hp.vec2pix(cfg.scatt_nside, *att.z.T).astype(np.int64) * hp.nside2npix(
        cfg.scatt_x_nside) + hp.vec2pix(cfg.scatt_x_nside, *att.x.T)
    _, inverse = np.unique(key, return_inverse=True)  # the bin order of bin_attitudes
    sums = np.bincount(inverse.ravel(), weights=drift_factor(cfg, att.time),
                       minlength=bins.n_bins)
    return sums / bins.n_samples


def chunk_edges(chunk: np.ndarray) -> list[int]:
    """Bin-index edges ``[0, ..., n_bins]`` of the time intervals of :func:`survey_bins`.

    >>> chunk_edges(np.array([0, 0, 1, 1, 1, 2]))
    [0, 2, 5, 6]
    """
    chunk = np.asarray(chunk)
    inner = np.flatnonzero(np.diff(chunk)) + 1
    return [0, *inner.tolist(), int(chunk.size)]
