"""Benchmark: orientation → ScAtt exposure table → coordinate-conversion matrix at DC2 scale.

COSI Data Challenge 2 used three months of one-second orientation records (~8 million),
278 ScAtt bins and NSIDE 16 for the model and the response's NuLambda axis; cosipy took
over 8 minutes for the table and the CCM.  This script builds a synthetic orientation of
the same size (no large file in the repository): a 530 km, 6 deg orbit of 96 min whose
node precesses, the z-axis rocking 35 deg north/south of the zenith every 12 h, the x-axis
along the velocity, live time 0 in a mock SAA (~8 % of the time).

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_ccm.py               # 8e6 records
    PYTHONPATH=. .venv/bin/python benchmarks/bench_ccm.py --rows 1000000 --ori-rows 200000

Steps timed (wall clock, one process): building the orientation from arrays, writing and
parsing an ``.ori`` file (``--ori-rows`` records; 0 skips it), the exposure table, the CCM
from averaged pointings (with and without Earth occultation), and the exact per-pointing
CCM on a six-hour part (the cost grows linearly with the number of pointings, so the
full-size figure is extrapolated).

Measured (2026-11-28, CPU of the lent H200 machine, 16 cores, numpy 2.5.2, default
arguments): orientation from arrays 0.26 s, exposure table 9.9 s (465 ScAtt bins),
averaged-pointing CCM 0.54 s (5.7e6 non-zero entries): 10.7 s in all, against cosipy's
> 8 min.  Averaged CCM with Earth occultation 31 s; exact per-pointing CCM 645 us per
pointing (~86 min for 8e6, extrapolated); .ori parse 2.5 s per 1e6 records.  Details
in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from histpy import HealpixAxis

from probdeconv import CoordsysConversionMatrix
from probdeconv.spacecraft import SpacecraftAttitudeExposureTable, SpacecraftFile
from probdeconv.spacecraft.geometry import vec_to_lonlat

logger = logging.getLogger("bench_ccm")

T0 = 1835478000.0  # 2028-03-01, as the cosipy test orientations
ORBIT_S = 5760.0
PRECESSION_S = 60 * 86400.0
ROCK_S = 12 * 3600.0


def _icrs_to_galactic() -> np.ndarray:
    basis = SkyCoord(x=np.eye(3)[0], y=np.eye(3)[1], z=np.eye(3)[2], frame="icrs",
                     representation_type="cartesian").galactic.cartesian.xyz.value
    return basis  # columns: the ICRS basis vectors in galactic coordinates


def synthetic_columns(n_rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Arguments of :class:`SpacecraftFile` for ``n_rows`` COSI-like one-second records."""
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(n_rows, dtype=np.float64)
    s = t - T0
    inc = np.radians(6.0)
    node = 2 * np.pi * s / PRECESSION_S
    u_ = 2 * np.pi * s / ORBIT_S
    # orbit-plane basis (equatorial): ascending node direction n, in-plane perpendicular m
    n = np.stack([np.cos(node), np.sin(node), np.zeros_like(node)], axis=-1)
    m = np.stack([-np.sin(node) * np.cos(inc), np.cos(node) * np.cos(inc),
                  np.full_like(node, np.sin(inc))], axis=-1)
    zen = np.cos(u_)[:, None] * n + np.sin(u_)[:, None] * m
    vel = -np.sin(u_)[:, None] * n + np.cos(u_)[:, None] * m
    normal = np.cross(zen, vel)
    rock = np.radians(35.0) * np.where((s // ROCK_S) % 2 == 0, 1.0, -1.0)
    z = np.cos(rock)[:, None] * zen + np.sin(rock)[:, None] * normal
    x = vel - np.sum(vel * z, axis=1, keepdims=True) * z
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    g = _icrs_to_galactic()
    z, x, zen = z @ g.T, x @ g.T, zen @ g.T
    xl, xb = vec_to_lonlat(x)
    zl, zb = vec_to_lonlat(z)
    el, eb = vec_to_lonlat(zen)
    # mock SAA: no live time on ~8 % of each orbit, jittered
    saa = np.sin(u_[:-1] + 0.3 * node[:-1]) > 0.965 + 0.002 * rng.standard_normal(n_rows - 1)
    return dict(time=t, x_pointings=np.column_stack([xl, xb]),
                z_pointings=np.column_stack([zl, zb]), altitude=np.full(n_rows, 530.0),
                earth_zenith=np.column_stack([el, eb]), livetime=np.where(saa, 0.0, 1.0))


def _from_columns(c: dict[str, np.ndarray]) -> SpacecraftFile:
    return SpacecraftFile(c["time"], c["x_pointings"], c["z_pointings"], altitude=c["altitude"],
                          earth_zenith=c["earth_zenith"], livetime=c["livetime"])


def synthetic_orientation(n_rows: int, seed: int = 0) -> SpacecraftFile:
    """A COSI-like orientation of ``n_rows`` one-second records."""
    return _from_columns(synthetic_columns(n_rows, seed))


def _timed(label: str, fn, results: list):
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    results.append((label, dt))
    print(f"{label:<58s} {dt:8.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8_000_000, help="orientation records (1 s)")
    ap.add_argument("--ori-rows", type=int, default=1_000_000,
                    help="records written to and parsed from an .ori file (0: skip)")
    ap.add_argument("--nside-scatt", type=int, default=4, help="NSIDE of the ScAtt binning")
    ap.add_argument("--nside", type=int, default=16, help="NSIDE of model and NuLambda")
    ap.add_argument("--exact-rows", type=int, default=21_600,
                    help="records for the exact per-pointing CCM (extrapolated to --rows)")
    args = ap.parse_args()
    res: list = []

    cols = synthetic_columns(args.rows)
    ori = _timed(f"SpacecraftFile from arrays, {args.rows:,} records",
                 functools.partial(_from_columns, cols), res)
    del cols
    if args.ori_rows:
        with tempfile.TemporaryDirectory() as tmp:
            small = synthetic_orientation(args.ori_rows, seed=1)
            path = Path(tmp) / "bench.ori"
            _timed(f"write .ori, {args.ori_rows:,} records", lambda: small.write(path), res)
            size = path.stat().st_size / 1e6
            _timed(f"parse .ori, {args.ori_rows:,} records ({size:.0f} MB)",
                   lambda: SpacecraftFile.parse_from_file(path), res)
    table = _timed(f"exposure table (NSIDE {args.nside_scatt})",
                   lambda: SpacecraftAttitudeExposureTable.from_orientation(
                       ori, args.nside_scatt, min_exposure=0.0), res)
    print(f"  -> {len(table)} ScAtt bins, exposure {table['exposure'].sum():.0f} s")
    table_live = _timed("exposure table, live time",
                        lambda: SpacecraftAttitudeExposureTable.from_orientation(
                            ori, args.nside_scatt, use_livetime=True, min_exposure=1.0), res)
    print(f"  -> {len(table_live)} ScAtt bins, live time {table_live['exposure'].sum():.0f} s")
    axis = HealpixAxis(nside=args.nside, label="NuLambda", coordsys="spacecraftframe")
    ccm = _timed(f"CCM, averaged pointing (model/NuLambda NSIDE {args.nside})",
                 lambda: CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(
                     axis, table, use_averaged_pointing=True), res)
    print(f"  -> shape {ccm.axes.shape}, {ccm.contents.nnz:,} non-zero entries")
    with tempfile.TemporaryDirectory() as tmp:
        _timed("CCM written (histpy COO HDF5)", lambda: ccm.write(Path(tmp) / "ccm.h5"), res)
    _timed("CCM, averaged pointing, Earth occultation",
           lambda: CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(
               axis, table_live, use_averaged_pointing=True, earth_occ=True), res)
    part = ori.source_interval(ori.time_unix[0], ori.time_unix[min(args.exact_rows, args.rows - 1)])
    small_table = SpacecraftAttitudeExposureTable.from_orientation(part, args.nside_scatt)
    label = f"CCM, every pointing, {len(part) - 1:,} pointings"
    _timed(label, lambda: CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(
        axis, small_table, use_averaged_pointing=False), res)
    per = res[-1][1] / (len(part) - 1)
    print(f"  -> {per * 1e6:.1f} us per pointing; {args.rows:,} pointings: "
          f"~{per * args.rows / 60:.0f} min (extrapolated)")
    edges = np.linspace(part.time_unix[0], part.time_unix[-1], 25)
    _timed(f"time-binning CCM, 24 bins, {len(part) - 1:,} intervals",
           lambda: CoordsysConversionMatrix.time_binning_ccm(axis, part, edges), res)
    core = ("SpacecraftFile", "exposure table (", "CCM, averaged pointing (")
    total = sum(dt for lab, dt in res if lab.startswith(core))
    print(f"orientation + table + averaged CCM (no file I/O): {total:.1f} s")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}")


if __name__ == "__main__":
    main()
