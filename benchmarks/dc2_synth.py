"""Synthetic COSI DC2-shape problems at full size, built fast and without healpy.

Shared by ``bench_full_size.py`` (CPU, this machine) and ``gpu_dc2.py`` (one GPU).  Needs
numpy, scipy and JAX only (the GPU image has no healpy or astropy), so the sky pixels are
``12 NSIDE²`` quasi-uniform directions (a Fibonacci sphere: HEALPix's count and pixel area,
not its layout), which is all a timing needs.

Shapes (``nside`` = model, ``NuLambda`` and ``PsiChi`` resolution):

- galactic 511 keV (DC2): response ``[NuLambda, Ei 1, Em 1, Phi 60, PsiChi]`` in cm² s,
  data ``[Em, Phi, PsiChi]``;
- spacecraft frame: response ``[NuLambda, 1, 1, 60, PsiChi]`` in cm², 278 ScAtt bins, a
  CCM ``[ScAtt, lb, NuLambda]`` with 4 inverse-distance weights per row (× dwell time);
- continuum: ``Ei`` = ``Em`` = 10 log bins (100–5000 keV), Phi 30, galactic frame, the
  response stored as its ``Em <= Ei`` blocks (:class:`probdeconv.forward.TriangularResponse`)
  or dense.

Response: for each source direction and Phi bin a Gaussian ring (σ 4°, cut at 3σ) of
PsiChi directions at angular distance Phi, normalised, times P(Phi) ∝ sin Φ e^(−Φ/50°)
(total 0.5), times an effective area; continuum: times an energy redistribution (photopeak
0.5 on ``Em = Ei``, 0.5 spread evenly over the lower ``Em`` bins).  Sky: a Gaussian blob
(σ 20°) at (1, 0, 0) plus four point sources, 4·10⁵ expected source counts; background
2·10⁶ counts; Poisson counts from a fixed seed.  The rings are computed by JAX in blocks on
the default device and written into one 64-byte-aligned host array of the target dtype
(``make_dataset(..., share_response=True)`` then keeps it without a copy).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from probdeconv.forward import TriangularResponse, aligned_empty

N_SCATT = 278
N_SKY = 4.0e5
N_BKG = 2.0e6
TOTAL_TIME = 7.9e6  # s
RING_SIGMA_DEG = 4.0
SEED = 20261130
CONTINUUM_EDGES = np.geomspace(100.0, 5000.0, 11)  # keV
BLOCK_BYTES = 256e6


def directions(npix: int) -> np.ndarray:
    """``npix`` quasi-uniform unit vectors ``[npix, 3]`` (Fibonacci sphere)."""
    k = np.arange(npix) + 0.5
    z = 1.0 - 2.0 * k / npix
    phi = np.pi * (1.0 + 5.0**0.5) * k
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _phi_centres(n_phi: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.linspace(0.0, 180.0, n_phi + 1)
    c = 0.5 * (edges[1:] + edges[:-1])
    p = np.sin(np.radians(c)) * np.exp(-c / 50.0)
    return c, 0.5 * p / p.sum()


@jax.jit
def _rings(vv, vp, phi_c, p_phi, area):
    """``area[v] P(Φ) ring[v, Φ, ψ]``: ``[nb, n_phi, n_psi]`` for source directions ``vv``."""
    ang = jnp.degrees(jnp.arccos(jnp.clip(vv @ vp.T, -1.0, 1.0)))  # [nb, psi]
    x = (ang[:, None, :] - phi_c[None, :, None]) / RING_SIGMA_DEG  # [nb, phi, psi]
    ring = jnp.where(jnp.abs(x) < 3.0, jnp.exp(-0.5 * x * x), 0.0)
    norm = ring.sum(axis=2, keepdims=True)
    ring = ring / jnp.where(norm > 0, norm, 1.0)
    return area[:, None, None] * p_phi[None, :, None] * ring


def ring_response(vec: np.ndarray, n_phi: int, area: np.ndarray, dtype, out=None,
                  weights: np.ndarray | None = None):
    """Rings for every source direction, ``[npix, n_phi * npix]`` in ``dtype`` (aligned host
    array), and ``weights @ rings`` (``weights [t, npix]``: expected sky counts per data bin
    computed block by block, float64) when ``weights`` is given."""
    npix = vec.shape[0]
    q = n_phi * npix
    out = aligned_empty((npix, q), dtype) if out is None else out
    nb = int(max(1, min(npix, BLOCK_BYTES // (q * 8))))
    phi_c, p_phi = _phi_centres(n_phi)
    vp = jnp.asarray(vec)
    acc = None if weights is None else np.zeros((weights.shape[0], q))
    for v0 in range(0, npix, nb):
        v1 = min(npix, v0 + nb)
        idx = np.minimum(np.arange(v0, v0 + nb), npix - 1)  # fixed block shape: one compile
        blk = _rings(vp[idx], vp, jnp.asarray(phi_c), jnp.asarray(p_phi),
                     jnp.asarray(area[idx])).reshape(nb, q)
        blk = np.asarray(blk)[: v1 - v0]
        out[v0:v1] = blk
        if acc is not None:
            acc += weights[:, v0:v1] @ blk
    return out, acc


def sky_map(vec: np.ndarray) -> np.ndarray:
    """Blob at (1, 0, 0) plus four point sources (per sr, arbitrary scale), ``[npix]``."""
    npix = vec.shape[0]
    gc = np.degrees(np.arccos(np.clip(vec[:, 0], -1, 1)))
    sky = np.exp(-0.5 * (gc / 20.0) ** 2)
    for d, flux in [((-0.99, -0.08, -0.1), 0.35), ((-0.1, -0.99, -0.05), 0.25),
                    ((0.8, 0.45, 0.17), 0.15), ((0.43, -0.75, -0.5), 0.10)]:
        sky[int(np.argmax(vec @ np.asarray(d)))] += flux * npix / (4 * np.pi)
    return sky


def _background(vec: np.ndarray, n_phi: int) -> np.ndarray:
    """``[Phi, PsiChi]`` smooth background shape (total 1)."""
    phi_c, _ = _phi_centres(n_phi)
    zen = np.degrees(np.arccos(np.clip(vec[:, 2], -1, 1)))
    g = 1.0 + 3.0 * np.exp(-0.5 * ((zen - 110.0) / 15.0) ** 2)
    b = (np.sin(np.radians(phi_c)) * np.exp(-phi_c / 70.0))[:, None] * g[None, :]
    return b / b.sum()


def galactic_problem(nside: int, dtype="float64", n_phi: int = 60, seed: int = SEED) -> dict:
    """DC2 511 keV galactic-frame problem; response ``[npix, 1, 1, n_phi, npix]``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + nside)
    npix = 12 * nside**2
    vec = directions(npix)
    pixarea = 4 * np.pi / npix
    area = np.full(npix, 60.0 * TOTAL_TIME)  # cm2 s, all-sky survey: flat exposure
    sky = sky_map(vec)
    r, sky_counts = ring_response(vec, n_phi, area, dtype, weights=pixarea * sky[None])
    scale = N_SKY / sky_counts.sum()
    bkg = N_BKG * _background(vec, n_phi)
    counts = rng.poisson(scale * sky_counts.reshape(bkg.shape) + bkg).astype(np.float64)
    return dict(kind="galactic", nside=nside, counts=counts[None], bkg=bkg[None],
                response=r.reshape(npix, 1, 1, n_phi, npix), ccm=None, n_model_pixels=npix,
                init_value=float(N_SKY / (pixarea * area.sum() * 0.5)), truth=sky * scale,
                generate_s=time.perf_counter() - t0)


def _rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def spacecraft_problem(nside: int, dtype="float64", n_phi: int = 60, n_scatt: int = N_SCATT,
                       seed: int = SEED) -> dict:
    """Spacecraft-frame problem: local response, ``n_scatt`` attitudes, CCM."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + 1000 + nside)
    npix = 12 * nside**2
    vec = directions(npix)
    pixarea = 4 * np.pi / npix
    att = _rotations(n_scatt, rng)  # [t, 3 gal, 3 sc]
    dwell = rng.gamma(2.0, 1.0, n_scatt)
    dwell *= TOTAL_TIME / dwell.sum()
    v_sc = np.einsum("tji,lj->tli", att, vec).reshape(-1, 3)  # [(t, l), 3]
    dist, pix = cKDTree(vec).query(v_sc, k=4)
    w = 1.0 / np.maximum(dist, 1e-9)
    w /= w.sum(axis=1, keepdims=True)
    t_idx = np.repeat(np.arange(n_scatt), npix)[:, None].repeat(4, 1)
    l_idx = np.tile(np.arange(npix), n_scatt)[:, None].repeat(4, 1)
    coords = np.stack([t_idx.ravel(), l_idx.ravel(), pix.ravel()]).astype(np.int64)
    values = (w * dwell[t_idx]).ravel()
    del v_sc, dist, pix, w, t_idx, l_idx
    zen = np.degrees(np.arccos(np.clip(vec[:, 2], -1, 1)))
    area = 100.0 * (0.02 + 0.98 * np.exp(-(zen / 60.0) ** 2))  # cm2
    sky = sky_map(vec)
    rot = np.bincount(coords[0] * npix + coords[2], weights=values * sky[coords[1]],
                      minlength=n_scatt * npix).reshape(n_scatt, npix)  # [t, v]
    r, sky_counts = ring_response(vec, n_phi, area, dtype, weights=pixarea * rot)
    scale = N_SKY / sky_counts.sum()
    b = _background(vec, n_phi)
    tb = dwell * (0.8 + 0.4 * rng.random(n_scatt))
    bkg = N_BKG * (tb / tb.sum())[:, None, None] * b[None]
    counts = rng.poisson(scale * sky_counts.reshape(bkg.shape) + bkg).astype(np.float64)
    r_sum = r.sum(axis=1, dtype=np.float64)
    exposure = pixarea * np.bincount(coords[1], weights=values * r_sum[coords[2]],
                                     minlength=npix)
    return dict(kind="spacecraft", nside=nside, counts=counts[:, None], bkg=bkg[:, None],
                response=r.reshape(npix, 1, 1, n_phi, npix), ccm=(coords, values),
                n_model_pixels=npix, init_value=float(N_SKY / exposure.sum()),
                truth=sky * scale, generate_s=time.perf_counter() - t0)


def continuum_coefficients(n_e: int) -> np.ndarray:
    """``c[e, j]``: effective-area × redistribution weight of ``Ei`` bin ``e`` into ``Em``
    bin ``j`` (0 for ``j > e``)."""
    c = np.zeros((n_e, n_e))
    for e in range(n_e):
        c[e, e] = 0.5
        if e:
            c[e, :e] = 0.5 / e
    area = 80.0 * (CONTINUUM_EDGES[:-1] / 500.0) ** -0.3 * TOTAL_TIME
    return area[:n_e, None] * c


def continuum_problem(nside: int, dtype="float64", triangular: bool = True, n_e: int = 10,
                      n_phi: int = 30, seed: int = SEED) -> dict:
    """Galactic continuum problem ``[NuLambda, Ei n_e, Em n_e, n_phi, PsiChi]``: the response
    as a :class:`~probdeconv.forward.TriangularResponse` or dense."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + 2000 + nside)
    npix = 12 * nside**2
    vec = directions(npix)
    pixarea = 4 * np.pi / npix
    q = n_phi * npix
    ring, _ = ring_response(vec, n_phi, np.ones(npix), np.float64)  # [v, q]
    coef = continuum_coefficients(n_e)  # [e, j]
    spectrum = (CONTINUUM_EDGES[:-1] / 100.0)[:n_e] ** -1.0
    sky = sky_map(vec)[:, None] * spectrum[None, :]  # [v, e]
    sky_counts = np.zeros((n_e, q))
    full_shape = (npix, n_e, n_e, n_phi, npix)
    blocks, dense = [], None
    if not triangular:
        dense = aligned_empty(full_shape, dtype)
        dense[:] = 0
    for j in range(n_e):
        w = coef[j:, j]  # [e >= j]
        blk = (ring[:, None, :] * w[None, :, None]).astype(dtype)  # [v, e >= j, q]
        sky_counts[j] = pixarea * np.einsum("ve,veq->q", sky[:, j:], blk)
        if triangular:  # straight to a JAX array: no second host copy of the blocks
            blocks.append(jnp.asarray(blk.reshape(npix * (n_e - j), q)))
        else:
            dense[:, j:, j] = blk.reshape(npix, n_e - j, n_phi, npix)
        del blk
    del ring
    response = (TriangularResponse(tuple(blocks), tuple(range(n_e)), full_shape)
                if triangular else dense)
    del blocks
    scale = N_SKY / sky_counts.sum()
    bkg = N_BKG * _background(vec, n_phi)[None] * (spectrum / spectrum.sum())[:, None, None]
    counts = rng.poisson(scale * sky_counts.reshape(bkg.shape) + bkg).astype(np.float64)
    exposure = 0.5 * pixarea * coef.sum(axis=1)  # per unit flux per pixel (rings sum to 0.5)
    return dict(kind="continuum", nside=nside, counts=counts, bkg=bkg, response=response,
                ccm=None, n_model_pixels=npix, n_energies=n_e,
                init_value=float(N_SKY / (npix * exposure.sum())), truth=sky * scale,
                generate_s=time.perf_counter() - t0)
