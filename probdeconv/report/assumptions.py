"""What an uncertainty report states first: the method's assumptions and its calibration.

- :func:`assumption_lines` — Markdown lines naming what the posterior approximation of a
  run assumes (Laplace: Gaussian in log flux, with the rank and captured variance of the
  low-rank curvature; MCMC: valid only where its convergence checks pass; SVI: its guide;
  MGVI: its number of samples; bootstrap: "spread of RL stopped after N iterations, not a
  posterior");
- :func:`calibration_lines` — the coverage of 68 % and 95 % intervals measured for that
  method on small simulated skies, from :data:`CALIBRATION_FILE` (written by
  ``benchmarks/bench_calibration.py --record``): coverage, nominal, binomial error and
  whether it lies within two binomial standard deviations; and, where measured, the ratio
  of the method's σ to long-NUTS σ over the informative pixels.

Examples
--------
>>> assumption_lines("bootstrap", {"iterations": 50, "algorithm": "RL"})[2][:63]
'- **Not a posterior:** spread of RL stopped after 50 iterations'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["CALIBRATION_FILE", "calibration_key", "assumption_lines", "calibration_lines",
           "load_calibration"]

logger = logging.getLogger(__name__)

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
"""Coverage of each method on small skies (``benchmarks/bench_calibration.py --record``)."""


def calibration_key(method: str, settings: dict) -> str:
    """The calibration record of a run: ``laplace_dense`` / ``laplace_lowrank`` for the
    Laplace approximation (by its curvature), ``field_<method>`` under the field prior,
    otherwise the method name."""
    if settings.get("image_prior") == "field":
        return f"field_{method}"
    if method == "laplace":
        return f"laplace_{settings.get('curvature', 'dense')}"
    return method


def _laplace(s: dict) -> list[str]:
    space = s.get("space", "log")
    if space == "linear":
        lines = ["- **Gaussian in flux** at the flux-space MAP (precision: Fisher information "
                 f"`{s.get('fisher', '?')}` + prior Hessian); draws can be negative "
                 f"(fraction {s.get('negative_fraction', 0):.3g})."]
    else:
        lines = ["- **Gaussian in log flux** at the log-space posterior mode (precision: "
                 f"Fisher information `{s.get('fisher', '?')}` + prior Hessian, with the "
                 f"Jacobian); pixel marginals `{s.get('marginals', '?')}`, correlations "
                 "Gaussian. Skewed, multimodal or bounded posteriors beyond that are not "
                 "represented: check faint pixels by their upper limits."]
    if s.get("curvature") == "lowrank":
        rule = "met" if s.get("rank_converged") else "**NOT met** (max_rank reached)"
        lines.append(f"- **Low-rank curvature:** rank {s.get('rank')} of {s.get('n_params')} "
                     f"directions, carrying {float(s.get('captured_variance', 0)):.1%} of the "
                     "whitened posterior variance (the other directions at the precision's "
                     f"diagonal); rank rule (σ of informative pixels changes < "
                     f"{float(s.get('rank_tolerance', 0.01)):.0%} at the 95th percentile) "
                     f"{rule}; history (rank: change) {s.get('rank_history', '?')}.")
    else:
        lines.append(f"- Curvature: dense {s.get('n_params')} × {s.get('n_params')} "
                     "precision (exact at the mode).")
    return lines


def assumption_lines(method: str, settings: dict) -> list[str]:
    """Markdown lines ``## Method assumptions`` for a posterior of ``method``."""
    s = settings or {}
    head = ["## Method assumptions", ""]
    if method == "laplace":
        body = _laplace(s)
    elif method in ("nuts", "hmc"):
        body = [f"- **Markov chain Monte Carlo ({method.upper()})**: the exact posterior of "
                "the model in the limit of many draws; trust it only where the convergence "
                "line above passes (R-hat, ESS, divergences)."]
    elif method == "svi":
        body = [f"- **Variational approximation** (guide `{s.get('guide', '?')}`, rank "
                f"{s.get('rank', '-')}) in whitened log flux, fitted by "
                f"{s.get('num_steps', '?')} SVI steps: Gaussian in log flux; such fits "
                "usually under-estimate the spread."]
    elif method == "mgvi":
        n = s.get("n_samples", s.get("num_samples", "?"))
        body = [f"- **MGVI** ({n} (antithetic) samples per round, {s.get('rounds', '?')} "
                "rounds): " + str(s.get("assumptions", "Gaussian in the standardised "
                                        "coordinates around the expansion point, metric "
                                        "from the Fisher information")) + "."]
    elif method == "bootstrap":
        body = [f"- **Not a posterior:** spread of {s.get('algorithm', 'RL')} stopped after "
                f"{s.get('iterations', '?')} iterations over resampled counts. The early "
                "stop regularises the image, so this spread is smaller than the posterior's "
                "(4–17 % of the Laplace σ on the README's NSIDE-8 simulation); do not quote "
                "it as credible intervals."]
    else:
        body = [f"- Method `{method}`: no stated assumptions."]
    if s.get("image_prior") == "field":  # the field prior's own coordinates and model
        body = [f"- **Field prior** (standardised coordinates, not whitened log flux): "
                f"{s.get('assumptions', '?')}; MAP amplitude {s.get('map_amplitude', '?')}, "
                f"slope {s.get('map_slope', '?')}; posterior amplitude, slope and offsets "
                "are in the draws (field.*)."] + body
    return head + body + [""]


def load_calibration(path: str | Path | None = None) -> dict:
    """The calibration records by key (empty when the file is absent or unreadable)."""
    p = Path(path) if path is not None else CALIBRATION_FILE
    try:
        return json.loads(p.read_text()).get("methods", {})
    except (OSError, ValueError) as exc:
        logger.info("no calibration record read from %s: %s", p, exc)
        return {}


def _row(level: str, rec: dict) -> str:
    ok = abs(rec["z"]) <= 2.0
    return (f"| {level} | {rec['coverage']:.3f} | {rec['nominal']:.2f} | "
            f"{rec['binomial_error']:.3f} | {rec['z']:+.2f} | {'yes' if ok else '**no**'} |")


def calibration_lines(method: str, settings: dict, records: dict[str, Any] | None = None,
                      ) -> list[str]:
    """Markdown lines ``## Calibration of this method`` (coverage table on small skies)."""
    key = calibration_key(method, settings or {})
    records = load_calibration() if records is None else records
    rec = records.get(key)
    lines = ["## Calibration of this method", ""]
    if rec is None:
        return lines + [f"No calibration measured for `{key}` (run benchmarks/"
                        "bench_calibration.py --methods ... --record).", ""]
    lines += [f"Measured on {rec['skies']} simulated skies at NSIDE {rec['nside']} "
              f"({rec['pixels']} pixel intervals; truth drawn from the prior): coverage of "
              "equal-tailed intervals against nominal, within 2 binomial σ when calibrated.",
              "", "| interval | coverage | nominal | binomial σ | z | within 2σ |",
              "| --- | --- | --- | --- | --- | --- |",
              _row("68 %", rec["in68"]), _row("95 %", rec["in95"]), ""]
    ratio = rec.get("sigma_ratio")
    if ratio:
        lines += [f"σ against long-NUTS σ over {ratio['pixels']} informative pixels: ratio "
                  f"5/50/95 % quantiles {ratio['q05']:.3f} / {ratio['q50']:.3f} / "
                  f"{ratio['q95']:.3f}; within 10 % for {ratio['within_10pc']:.1%} of them.",
                  ""]
    return lines
