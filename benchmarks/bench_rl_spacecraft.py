"""Time accelerated Richardson-Lucy on a synthetic spacecraft-frame problem of COSI DC2 shape.

The problem is the DC2 511 keV analysis scaled to fit a small machine: model and PsiChi
HEALPix NSIDE 8 (or 16 with ``--nside 16``), Ei 1 bin, Em 1 bin, Phi 60 bins, 278 ScAtt
bins, a coordinate-conversion matrix (CCM) ``[ScAtt, lb, NuLambda]`` with 4 bilinear
interpolation weights per ``(ScAtt, lb)`` row (times the dwell time), a COSI-like response
``[NuLambda, Ei, Em, Phi, PsiChi]`` (for each source direction and Phi bin a Gaussian ring
of 4 deg width at angular distance Phi, cut at 3 sigma, times an effective area falling
with zenith angle), one background template and Poisson counts from a model sky (four
point sources and a diffuse blob) plus background, all from a fixed seed.

The RL configuration is the one of the issue: acceleration on (``alpha_max`` 10), response
weighting (index 0.5), background optimisation on, float64 (``--float32`` to compare).

Each case runs in a fresh subprocess, so the peak resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is that of the case alone.  With
``--write DIR`` the synthetic problem is also written as histpy-layout HDF5 files
(event, background, CCM, a version-2 full detector response, a cosipy parameter file);
probdeconv then reads those files too, like cosipy does.  If cosipy is importable (by this
interpreter or by ``--cosipy-python``) its ``RLadvanced`` algorithm (0.4.x name of the
accelerated RL, ``MaxStep`` accelerator) runs on the same files in another subprocess and
its figures are printed beside ours.

Examples::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_rl_spacecraft.py
    PYTHONPATH=. .venv/bin/python benchmarks/bench_rl_spacecraft.py --nside 16
    PYTHONPATH=. .venv/bin/python benchmarks/bench_rl_spacecraft.py \\
        --write /tmp/bench_sc --cosipy-python /tmp/cosipy-venv/bin/python

This module imports only the standard library and numpy at the top, so that the cosipy
worker can run it with an interpreter that has no JAX.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_SCATT = 278
N_PHI = 60
EI_EDGES = np.array([509.0, 513.0])  # keV
EM_EDGES = np.array([509.0, 513.0])  # keV
PHI_EDGES = np.linspace(0.0, 180.0, N_PHI + 1)  # deg
TOTAL_TIME = 7.9e6  # s, three months
RING_SIGMA_DEG = 4.0
N_SKY = 4.0e5  # expected source counts
N_BKG = 2.0e6  # expected background counts
SEED = 20240601
ALPHA_MAX = 10.0
WEIGHTING_INDEX = 0.5
BKG_RANGE = (0.0, 100.0)
RESULT_TAG = "@@RESULT@@ "

FILES = dict(event="event.h5", bkg="bkg.h5", ccm="ccm.h5", response="response.h5",
             parameters="parameters.yml", meta="meta.json")


def peak_rss_gb() -> float:
    """Peak resident set of this process in GB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


# --------------------------------------------------------------------------- problem


def _rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniformly random rotation matrices (spacecraft axes as columns, galactic)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def _aligned_empty(shape) -> np.ndarray:
    """64-byte-aligned float64 array (probdeconv's helper; imported here so that the cosipy
    worker, which never builds arrays, needs no probdeconv)."""
    from probdeconv.forward import aligned_empty

    return aligned_empty(shape)


def make_problem(nside: int, seed: int = SEED) -> dict:
    """Build the synthetic problem as numpy arrays (float64)."""
    import healpy as hp

    rng = np.random.default_rng(seed + nside)
    npix = hp.nside2npix(nside)
    pixarea = 4 * np.pi / npix
    vec = np.array(hp.pix2vec(nside, np.arange(npix)))  # [3, pix]

    # spacecraft attitudes and dwell times per ScAtt bin
    att = _rotations(N_SCATT, rng)  # [t, 3 (gal), 3 (sc)]
    dwell = rng.gamma(2.0, 1.0, N_SCATT)
    dwell *= TOTAL_TIME / dwell.sum()

    # CCM [ScAtt, lb, NuLambda]: model pixel direction in the spacecraft frame,
    # bilinear HEALPix interpolation weights x dwell time
    v_sc = np.einsum("tji,jl->tli", att, vec).reshape(-1, 3)  # [(t, l), 3]
    theta, phi = hp.vec2ang(v_sc)
    pix, wgt = hp.get_interp_weights(nside, theta, phi)  # [4, (t, l)]
    t_idx = np.broadcast_to(np.repeat(np.arange(N_SCATT), npix), pix.shape)
    l_idx = np.broadcast_to(np.tile(np.arange(npix), N_SCATT), pix.shape)
    keep = wgt > 0
    coords = np.stack([t_idx[keep], l_idx[keep], pix[keep]]).astype(np.int64)
    values = wgt[keep] * dwell[coords[0]]
    order = np.lexsort(coords[::-1])
    coords, values = coords[:, order], values[order]
    del v_sc, theta, phi, pix, wgt, t_idx, l_idx, keep

    # response [NuLambda, Ei, Em, Phi, PsiChi] in cm2: effective area(zenith) x
    # P(Phi bin) x Gaussian ring of half-angle Phi around the source direction
    phi_c = 0.5 * (PHI_EDGES[1:] + PHI_EDGES[:-1])
    p_phi = np.sin(np.radians(phi_c)) * np.exp(-phi_c / 50.0)
    p_phi *= 0.5 / p_phi.sum()
    zenith = np.degrees(np.arccos(np.clip(vec[2], -1, 1)))
    eff_area = 100.0 * (0.02 + 0.98 * np.exp(-(zenith / 60.0) ** 2))  # cm2
    response = _aligned_empty((npix, 1, 1, N_PHI, npix))
    block = max(1, 2_000_000 // (N_PHI * npix))
    for v0 in range(0, npix, block):
        vb = slice(v0, min(v0 + block, npix))
        ang = np.degrees(np.arccos(np.clip(vec[:, vb].T @ vec, -1, 1)))  # [v, psichi]
        x = (ang[:, None, :] - phi_c[None, :, None]) / RING_SIGMA_DEG  # [v, phi, psichi]
        ring = np.where(np.abs(x) < 3.0, np.exp(-0.5 * x * x), 0.0)
        norm = ring.sum(axis=2, keepdims=True)
        ring /= np.where(norm > 0, norm, 1.0)
        response[vb, 0, 0] = (eff_area[vb, None, None] * p_phi[None, :, None]) * ring
        del ang, x, ring, norm

    # sky (galactic): diffuse blob at the Galactic centre + four point sources
    l_deg, b_deg = hp.pix2ang(nside, np.arange(npix), lonlat=True)
    gc = np.degrees(np.arccos(np.clip(vec[0], -1, 1)))  # distance to (l, b) = (0, 0)
    sky = np.exp(-0.5 * (gc / 20.0) ** 2)
    for lon, lat, flux in [(184.56, -5.78, 0.35), (263.6, -2.8, 0.25), (30.0, 10.0, 0.15),
                           (300.0, -30.0, 0.10)]:
        sky[hp.ang2pix(nside, lon, lat, lonlat=True)] += flux / pixarea
    del l_deg, b_deg, gc

    # expected counts of the sky, scaled to N_SKY source counts
    r2 = response.reshape(npix, -1)
    rot = np.bincount(coords[0] * npix + coords[2], weights=values * sky[coords[1]],
                      minlength=N_SCATT * npix).reshape(N_SCATT, npix)
    sky_counts = pixarea * (rot @ r2)  # [t, (phi, psichi)]
    scale = N_SKY / sky_counts.sum()
    sky *= scale
    sky_counts *= scale
    del rot

    # background: dwell-time modulated, brighter towards the Earth's limb, smooth in Phi
    psi_zenith = zenith
    g_psi = 1.0 + 3.0 * np.exp(-0.5 * ((psi_zenith - 110.0) / 15.0) ** 2)
    p_bkg = np.sin(np.radians(phi_c)) * np.exp(-phi_c / 70.0)
    t_bkg = dwell * (0.8 + 0.4 * rng.random(N_SCATT))
    bkg = t_bkg[:, None, None] * p_bkg[None, :, None] * g_psi[None, None, :]
    bkg *= N_BKG / bkg.sum()
    bkg = bkg.reshape(N_SCATT, 1, N_PHI, npix)

    counts = rng.poisson(sky_counts.reshape(bkg.shape) + bkg).astype(np.float64)
    del sky_counts

    # flat initial image with the true total source counts: Σ_j S_j λ0 = N_SKY
    exposure = pixarea * np.bincount(coords[1], weights=values * r2.sum(axis=1)[coords[2]],
                                     minlength=npix)
    init_value = float(N_SKY / exposure.sum())
    return dict(nside=nside, counts=counts, response=response, bkg=bkg, ccm_coords=coords,
                ccm_values=values, init_value=init_value, truth=sky)


# --------------------------------------------------------------------------- histpy files


def _axis(group, name: str, edges, label: str, *, unit: str | None = None,
          scale: str = "linear", nside: int | None = None, coordsys: str | None = None):
    ds = group.create_dataset(name, data=np.asarray(edges), track_times=False)
    if nside is None:
        ds.attrs["__class__"] = ("histpy.axis", "Axis")
    else:
        ds.attrs["__class__"] = ("histpy.healpix_axis", "HealpixAxis")
        ds.attrs["nside"] = np.int64(nside)
        ds.attrs["scheme"] = "RING"
        ds.attrs["coordsys"] = coordsys
    ds.attrs["label"] = label
    ds.attrs["scale"] = scale
    if unit is not None:
        ds.attrs["unit"] = unit


def _data_axes(group, nside: int) -> None:
    _axis(group, "0", np.arange(N_SCATT + 1), "ScAtt")
    _axis(group, "1", EM_EDGES, "Em", unit="keV")
    _axis(group, "2", PHI_EDGES, "Phi", unit="deg")
    _axis(group, "3", np.arange(12 * nside**2 + 1), "PsiChi", nside=nside,
          coordsys="spacecraftframe")


def write_files(p: dict, directory: Path, iterations: int) -> None:
    """Write the problem as histpy-layout HDF5 files plus a cosipy parameter file."""
    import h5py

    directory.mkdir(parents=True, exist_ok=True)
    nside = p["nside"]
    npix = 12 * nside**2

    with h5py.File(directory / FILES["event"], "w") as f:  # COO event histogram
        g = f.create_group("hist")
        g.attrs["format"] = "coo"
        _data_axes(g.create_group("axes"), nside)
        c = g.create_group("contents")
        nz = np.nonzero(p["counts"])
        c.create_dataset("coords", data=np.stack(nz).astype(np.int64), compression="gzip")
        c.create_dataset("data", data=p["counts"][nz], compression="gzip")
        c.create_dataset("shape", data=np.array(p["counts"].shape, dtype=np.int64))
        c.create_dataset("fill_value", data=np.float64(0.0))

    with h5py.File(directory / FILES["bkg"], "w") as f:  # dense background template
        g = f.create_group("hist")
        g.attrs["format"] = "dense"
        _data_axes(g.create_group("axes"), nside)
        g.create_dataset("contents", data=p["bkg"])

    with h5py.File(directory / FILES["ccm"], "w") as f:  # COO CCM, unit s
        g = f.create_group("hist")
        g.attrs["format"] = "coo"
        g.attrs["unit"] = "s"
        a = g.create_group("axes")
        _axis(a, "0", np.arange(N_SCATT + 1), "ScAtt")
        _axis(a, "1", np.arange(npix + 1), "lb", nside=nside, coordsys="galactic")
        _axis(a, "2", np.arange(npix + 1), "NuLambda", nside=nside, coordsys="spacecraftframe")
        c = g.create_group("contents")
        c.create_dataset("coords", data=p["ccm_coords"], compression="gzip")
        c.create_dataset("data", data=p["ccm_values"], compression="gzip")
        c.create_dataset("shape", data=np.array([N_SCATT, npix, npix], dtype=np.int64))
        c.create_dataset("fill_value", data=np.float64(0.0))

    # full detector response, version 2 (cosipy 0.4.x): COUNTS x EFF_AREA[Ei]; the
    # "counts" are stored as float64 with EFF_AREA = 1 so that the values are exact
    with h5py.File(directory / FILES["response"], "w") as f:
        g = f.create_group("DRM")
        g.attrs["VERSION"] = 2
        g.attrs["UNIT"] = "cm2"
        g.attrs["SPARSE"] = False
        a = g.create_group("AXES")
        _axis(a, "0", np.arange(npix + 1), "NuLambda", nside=nside, coordsys="spacecraftframe")
        _axis(a, "1", EI_EDGES, "Ei", unit="keV", scale="log")
        _axis(a, "2", EM_EDGES, "Em", unit="keV")
        _axis(a, "3", PHI_EDGES, "Phi", unit="deg")
        _axis(a, "4", np.arange(npix + 1), "PsiChi", nside=nside, coordsys="spacecraftframe")
        g.create_dataset("COUNTS", data=p["response"], chunks=(1,) + p["response"].shape[1:])
        g.create_dataset("EFF_AREA", data=np.ones(len(EI_EDGES) - 1))

    (directory / FILES["parameters"]).write_text(f"""\
model_definition:
  class: "AllSkyImage"
  property:
    coordinate: "galactic"
    nside: {nside}
    scheme: "ring"
    energy_edges:
      value: [{float(EI_EDGES[0])!r}, {float(EI_EDGES[1])!r}]
      unit: "keV"
    unit: "cm-2 s-1 sr-1"
  initialization:
    algorithm: "flat"
    parameter:
      value: [{p["init_value"]!r}]
      unit: "cm-2 s-1 sr-1"
deconvolution:
  algorithm: "RLadvanced"
  parameter:
    iteration_max: {iterations}
    minimum_flux:
      value: 0.0
      unit: "cm-2 s-1 sr-1"
    acceleration:
      activate: true
      algorithm: "MaxStep"
      accel_factor_max: {ALPHA_MAX}
    response_weighting:
      activate: true
      index: {WEIGHTING_INDEX}
    smoothing:
      activate: false
    background_normalization_optimization:
      activate: true
      range: {{"bkg": [{BKG_RANGE[0]}, {BKG_RANGE[1]}]}}
    stopping_criteria:
      statistics: "log-likelihood"
      threshold: 0.0
    save_results:
      activate: false
""")
    (directory / FILES["meta"]).write_text(json.dumps(dict(
        nside=nside, init_value=p["init_value"], n_sky=N_SKY, n_bkg=N_BKG, seed=SEED,
        total_counts=float(p["counts"].sum()))))


def read_files(directory: Path) -> dict:
    """Read the files written by :func:`write_files` back into numpy arrays."""
    import h5py

    meta = json.loads((directory / FILES["meta"]).read_text())
    with h5py.File(directory / FILES["event"], "r") as f:
        c = f["hist/contents"]
        counts = np.zeros(tuple(c["shape"][()]))
        counts[tuple(c["coords"][()])] = c["data"][()]
    with h5py.File(directory / FILES["bkg"], "r") as f:
        bkg = f["hist/contents"][()]
    with h5py.File(directory / FILES["ccm"], "r") as f:
        coords = f["hist/contents/coords"][()]
        values = f["hist/contents/data"][()]
    with h5py.File(directory / FILES["response"], "r") as f:
        dset = f["DRM/COUNTS"]
        response = _aligned_empty(dset.shape)  # handed to make_dataset without a copy
        dset.read_direct(response)
        ea = f["DRM/EFF_AREA"][()]
        if not np.all(ea == 1.0):
            response *= ea[None, :, None, None, None]
    return dict(nside=meta["nside"], counts=counts, response=response, bkg=bkg,
                ccm_coords=coords, ccm_values=values, init_value=meta["init_value"])


# --------------------------------------------------------------------------- workers


def worker_generate(nside: int, directory: Path, iterations: int) -> dict:
    t0 = time.perf_counter()
    p = make_problem(nside)
    t1 = time.perf_counter()
    write_files(p, directory, iterations + 1)
    t2 = time.perf_counter()
    return dict(generate_s=t1 - t0, write_s=t2 - t1, total_counts=float(p["counts"].sum()),
                nonzero_bins=int(np.count_nonzero(p["counts"])), data_bins=int(p["counts"].size),
                response_nonzero=float(np.count_nonzero(p["response"]) / p["response"].size),
                peak_rss_gb=peak_rss_gb())


def worker_ours(nside: int, directory: Path | None, iterations: int, float32: bool,
                acceleration: str) -> dict:
    import jax
    import jax.numpy as jnp

    import probdeconv  # noqa: F401  (switches on x64)
    from probdeconv import forward as fm
    from probdeconv.algorithms import em

    t0 = time.perf_counter()
    p = read_files(directory) if directory is not None else make_problem(nside)
    npix = 12 * p["nside"] ** 2
    dtype = "float32" if float32 else "float64"
    ds = fm.make_dataset(p["counts"], p["response"], [p["bkg"]],
                         ccm=(p["ccm_coords"], p["ccm_values"]), n_model_pixels=npix,
                         dtype=dtype, share_response=True)
    init_value = p["init_value"]
    del p  # drop the numpy copies (the response above all)
    datasets = (ds,)
    opts = em.EMOptions(weighting=True, acceleration=acceleration, optimize_bkg=True)
    params = em.make_params(datasets, opts, weighting_index=WEIGHTING_INDEX,
                            alpha_max=ALPHA_MAX, bkg_range=np.array([BKG_RANGE]))
    state = em.init(jnp.full((npix, 1), init_value, dtype=dtype), jnp.ones(1, dtype=dtype),
                    datasets, params)
    jax.block_until_ready(state)
    t_setup = time.perf_counter() - t0
    rss_setup = current_rss_gb()

    step = em.build_step(opts)
    t = time.perf_counter()
    compiled = step.lower(state, datasets, params).compile()  # trace + XLA compile
    t_compile = time.perf_counter() - t
    logliks, alphas, times = [], [], []
    t = time.perf_counter()
    state, info = compiled(state, datasets, params)  # first (warm-up) iteration
    jax.block_until_ready((state, info))
    t_first = time.perf_counter() - t
    logliks.append(float(info.loglik.sum()))
    alphas.append(float(info.alpha))
    cpu = []
    for _ in range(iterations):
        t, c = time.perf_counter(), time.process_time()
        state, info = compiled(state, datasets, params)
        jax.block_until_ready((state, info))
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        logliks.append(float(info.loglik.sum()))
        alphas.append(float(info.alpha))
    median = float(np.median(times)) if times else float("nan")
    return dict(setup_s=t_setup, first_step_s=t_first, compile_s=t_compile,
                per_iter_s=median, iter_times_s=times, loglik=logliks, alpha=alphas,
                cpu_per_iter_s=float(np.median(cpu)) if cpu else float("nan"),
                bkg_norm=float(state.bkg_norm[0]), rss_after_setup_gb=rss_setup,
                peak_rss_gb=peak_rss_gb(), dtype=dtype, jax=jax.__version__,
                acceleration=acceleration,
                source="files" if directory is not None else "memory")


def worker_cosipy(directory: Path, iterations: int) -> dict:
    import logging
    import warnings

    t0 = time.perf_counter()
    import cosipy
    from cosipy.image_deconvolution import (
        CoordsysConversionMatrix,
        DataIF_COSI_DC2,
        ImageDeconvolution,
    )
    from cosipy.response import FullDetectorResponse
    from histpy import Histogram

    # cosipy logs every step at INFO, and its MaxStep accelerator warns on 0/0 (harmless)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    np.seterr(invalid="ignore", divide="ignore")
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    event = Histogram.open(directory / FILES["event"])
    bkg = Histogram.open(directory / FILES["bkg"])
    ccm = CoordsysConversionMatrix.open(directory / FILES["ccm"])
    rsp = FullDetectorResponse.open(directory / FILES["response"])
    data = DataIF_COSI_DC2.load(name="bench", event_binned_data=event,
                                dict_bkg_binned_data={"bkg": bkg}, rsp=rsp,
                                coordsys_conv_matrix=ccm)
    rsp.close()
    imdec = ImageDeconvolution()
    imdec.set_dataset([data])
    imdec.read_parameterfile(directory / FILES["parameters"])
    imdec.initialize()  # model from the parameter file, RLadvanced algorithm
    algo = imdec._deconvolution  # run_deconvolution() = initialization() + iteration()s
    algo.initialization()
    t_setup = time.perf_counter() - t0
    rss_setup = current_rss_gb()

    logliks, alphas, times, cpu = [], [], [], []
    for it in range(iterations + 1):
        t, c = time.perf_counter(), time.process_time()
        algo.iteration()  # the stopping flag is ignored: fixed number of iterations
        dt = time.perf_counter() - t
        if it == 0:
            t_first = dt  # includes the initial E-step
        else:
            times.append(dt)
            cpu.append(time.process_time() - c)
        res = algo.results[-1]
        logliks.append(float(np.sum(res["log-likelihood"])))
        alphas.append(float(res.get("accel_factor", 1.0)))
    return dict(import_s=t_import, setup_s=t_setup, first_step_s=t_first,
                per_iter_s=float(np.median(times)) if times else float("nan"),
                iter_times_s=times, loglik=logliks, alpha=alphas,
                cpu_per_iter_s=float(np.median(cpu)) if cpu else float("nan"),
                bkg_norm=float(algo.dict_bkg_norm["bkg"]), rss_after_setup_gb=rss_setup,
                peak_rss_gb=peak_rss_gb(), cosipy=cosipy.__version__)


# --------------------------------------------------------------------------- driver


def _cpu_busy_s() -> float:
    """CPU seconds spent non-idle by the whole machine since boot (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit_s: float) -> None:
    """Wait (at most ``limit_s``) until other processes leave the CPUs ≥ 90 % idle."""
    t_end = time.monotonic() + limit_s
    ncpu = os.cpu_count() or 1
    while time.monotonic() < t_end:
        b0, t0 = _cpu_busy_s(), time.monotonic()
        time.sleep(2.0)
        if (_cpu_busy_s() - b0) / ((time.monotonic() - t0) * ncpu) < 0.1:
            return
    print(f"    (the machine did not become idle within {limit_s:.0f} s; timing anyway)")


def run_worker(python: str, args: list[str], env: dict | None = None,
               wait_idle_s: float = 0.0) -> dict | None:
    """Run this script as a worker in a fresh process; stream its output; return its result.

    The result gains ``foreign_cpu``: the average number of cores that *other* processes
    kept busy while the worker ran (0 on a quiet machine), to judge the timings.
    """
    if wait_idle_s > 0:
        wait_idle(wait_idle_s)
    cmd = [python, os.path.abspath(__file__), *args]
    r0, b0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_busy_s(), time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    result = None
    for line in proc.stdout:
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
        elif line.strip():
            print("    | " + line.rstrip(), flush=True)
    if proc.wait() != 0:
        print(f"    worker {' '.join(args[:2])} failed with exit status {proc.returncode}")
        return None
    r1, b1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_busy_s(), time.monotonic()
    own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if result is not None:
        result["foreign_cpu"] = max(0.0, (b1 - b0 - own) / (t1 - t0))
    return result


def cosipy_available(python: str) -> bool:
    r = subprocess.run([python, "-c", "import cosipy"], capture_output=True)
    return r.returncode == 0


def _fmt_traj(values: list[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def report(name: str, r: dict) -> None:
    print(f"  {name}:")
    if "import_s" in r:
        print(f"    import {r['import_s']:.2f} s")
    print(f"    setup {r['setup_s']:.2f} s (RSS after setup {r['rss_after_setup_gb']:.2f} GB)")
    if "compile_s" in r:
        print(f"    compile {r['compile_s']:.2f} s (trace + XLA), first (warm-up) iteration "
              f"{r['first_step_s']:.2f} s")
    else:
        print(f"    first iteration {r['first_step_s']:.2f} s (includes the initial E-step)")
    times = " ".join(f"{t:.3f}" for t in r["iter_times_s"])
    fastest = min(r["iter_times_s"], default=float("nan"))
    print(f"    time per iteration: median {r['per_iter_s']:.3f} s, min {fastest:.3f} s "
          f"over {len(r['iter_times_s'])}   [{times}]")
    print(f"    CPU time per iteration (all threads, median): {r['cpu_per_iter_s']:.3f} s")
    print(f"    log-likelihood: {_fmt_traj(r['loglik'])}")
    print(f"    alpha: {' '.join(f'{a:.3f}' for a in r['alpha'])}   bkg norm {r['bkg_norm']:.6f}")
    print(f"    peak RSS {r['peak_rss_gb']:.2f} GB")
    print(f"    other processes kept {r['foreign_cpu']:.2f} cores busy meanwhile")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nside", type=int, nargs="+", default=[8], choices=[8, 16],
                    help="model and PsiChi NSIDE (default 8; several allowed)")
    ap.add_argument("--iterations", type=int, default=10,
                    help="timed iterations after the first (warm-up) one (default 10)")
    ap.add_argument("--float32", action="store_true", help="run probdeconv in float32")
    ap.add_argument("--acceleration", default="MaxStep", choices=["MaxStep", "classic"],
                    help="probdeconv accelerator (default MaxStep, probdeconv's form of "
                         "cosipy 0.4.x's accelerator; classic = cosipy 0.4.x's default "
                         "MaxStep computed as cosipy does)")
    ap.add_argument("--write", type=Path, metavar="DIR",
                    help="write the problem as histpy HDF5 files under DIR/nside<N>/")
    ap.add_argument("--cosipy-python", default=None, metavar="PYTHON",
                    help="interpreter with cosipy for the comparison (default: this one)")
    ap.add_argument("--cosipy-iterations", type=int, default=None,
                    help="timed cosipy iterations (default: --iterations)")
    ap.add_argument("--no-cosipy", action="store_true", help="skip the cosipy comparison")
    ap.add_argument("--cosipy-max-nside", type=int, default=8, metavar="N",
                    help="run cosipy only up to this NSIDE (default 8: at 16 it needs "
                         "~10 GB and minutes per iteration)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="before each timed case wait up to S s for the CPUs to be idle")
    ap.add_argument("--worker", choices=["generate", "ours", "cosipy"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:
        nside = args.nside[0]
        if args.worker == "generate":
            res = worker_generate(nside, args.dir, args.iterations)
        elif args.worker == "ours":
            res = worker_ours(nside, args.dir, args.iterations, args.float32, args.acceleration)
        else:
            res = worker_cosipy(args.dir, args.iterations)
        print(RESULT_TAG + json.dumps(res), flush=True)
        return 0

    cosipy_python = args.cosipy_python or sys.executable
    run_cosipy = not args.no_cosipy and cosipy_available(cosipy_python)
    if not args.no_cosipy and not run_cosipy:
        print(f"cosipy is not importable by {cosipy_python}; probdeconv only.")
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cosipy_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; "
          f"numpy {np.__version__}")

    n_cos = args.cosipy_iterations if args.cosipy_iterations is not None else args.iterations
    summary = []
    for nside in args.nside:
        npix = 12 * nside**2
        cos_here = run_cosipy and nside <= args.cosipy_max_nside
        print(f"\n=== NSIDE {nside}: response {npix} x 1 x 1 x {N_PHI} x {npix} "
              f"({npix * N_PHI * npix * 8 / 1e6:.0f} MB float64), data {N_SCATT} x "
              f"{N_PHI * npix} bins ===", flush=True)
        tmp = None
        directory = None
        if args.write is not None or cos_here:
            if args.write is not None:
                directory = args.write / f"nside{nside}"
            else:
                tmp = tempfile.mkdtemp(prefix=f"bench_rl_sc_nside{nside}_")
                directory = Path(tmp)
            g = run_worker(sys.executable, ["--worker", "generate", "--nside", str(nside),
                                            "--dir", str(directory),
                                            "--iterations", str(n_cos)], env)
            if g is None:
                return 1
            print(f"  files in {directory}: generated in {g['generate_s']:.1f} s, written in "
                  f"{g['write_s']:.1f} s; {g['total_counts']:.0f} counts in "
                  f"{g['nonzero_bins']} of {g['data_bins']} bins; response "
                  f"{100 * g['response_nonzero']:.1f} % non-zero", flush=True)
        wargs = ["--worker", "ours", "--nside", str(nside), "--iterations", str(args.iterations)]
        if directory is not None:
            wargs += ["--dir", str(directory)]
        if args.float32:
            wargs.append("--float32")
        wargs += ["--acceleration", args.acceleration]
        ours = run_worker(sys.executable, wargs, env, args.wait_idle)
        if ours is not None:
            report(f"probdeconv (jax {ours['jax']}, {ours['dtype']}, {ours['acceleration']}, "
                   f"problem from {ours['source']})", ours)
        theirs = None
        if run_cosipy and not cos_here:
            print(f"  cosipy skipped at NSIDE {nside} (--cosipy-max-nside "
                  f"{args.cosipy_max_nside})")
        if cos_here:
            theirs = run_worker(cosipy_python, ["--worker", "cosipy", "--nside", str(nside),
                                                "--dir", str(directory),
                                                "--iterations", str(n_cos)], cosipy_env,
                                args.wait_idle)
            if theirs is not None:
                report(f"cosipy {theirs['cosipy']} RLadvanced (MaxStep)", theirs)
        summary.append((nside, ours, theirs))
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    print("\nsummary (wall = median wall time per iteration, cpu = median CPU time of all "
          "threads; peak = ru_maxrss of the case's process; load = cores kept busy by others)")
    for nside, ours, theirs in summary:
        if ours is None:
            continue
        print(f"  NSIDE {nside} probdeconv: wall {ours['per_iter_s']:.3f} s, cpu "
              f"{ours['cpu_per_iter_s']:.3f} s, peak {ours['peak_rss_gb']:.2f} GB, load "
              f"{ours['foreign_cpu']:.2f}")
        if theirs is not None:
            print(f"  NSIDE {nside} cosipy:     wall {theirs['per_iter_s']:.3f} s, cpu "
                  f"{theirs['cpu_per_iter_s']:.3f} s, peak {theirs['peak_rss_gb']:.2f} GB, load "
                  f"{theirs['foreign_cpu']:.2f}")
            print(f"  NSIDE {nside} cosipy / probdeconv: wall "
                  f"{theirs['per_iter_s'] / ours['per_iter_s']:.2f}x, cpu "
                  f"{theirs['cpu_per_iter_s'] / ours['cpu_per_iter_s']:.2f}x, peak memory "
                  f"{theirs['peak_rss_gb'] / ours['peak_rss_gb']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
