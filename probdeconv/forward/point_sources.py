"""Point sources beside the image: their expected counts per unit flux, as linear components.

A point source ``s`` at a fixed direction with flux ``f[s, e]`` (ph cm-2 s-1) in the ``Ei``
bin ``e`` adds ``f[s, e] T[s, e, t, i]`` to the expected counts.  Its template ``T`` is the
response at the source direction, interpolated over the response's ``NuLambda`` pixels
with the weights ``W[s, t, v]`` (the caller's HEALPix interpolation weights, times the
dwell time in the spacecraft frame):

- galactic frame (one time bin, response in cm2 s): ``T[s, e, 0, i] = Σ_v W[s, 0, v]
  R[(v, e), i]`` with ``W`` the four interpolation weights of the direction (sum 1);
- spacecraft frame (response in cm2, ``W`` in s): ``T[s, e, t, i] = Σ_v W[s, t, v]
  R[(v, e), i]`` with ``W[s, t, ·]`` the dwell time of bin ``t`` spread over the four
  local pixels around the source's direction in spacecraft coordinates.

A source exactly at a pixel centre of the galactic response has ``W = (1, 0, 0, 0)`` there,
and its template is the expected counts of a one-pixel image of intensity ``f / ΔΩ``.

The templates enter a :class:`~probdeconv.forward.dataset.Dataset` as further linear
components after its backgrounds (:func:`add_components`): the forward model, the EM
update (``f ← f Σ_i T_i d_i/E_i / Σ_i T_i``, the multiplicative EM update with the
source's own exposure ``Σ_i T_i``) and the NumPyro model then treat a source flux exactly
like a background normalisation, with its own global index, range and name.

Examples
--------
>>> import numpy as np
>>> from probdeconv.forward import make_dataset
>>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)))
>>> w = np.zeros((1, 1, 12)); w[0, 0, 5] = 1.0
>>> point_source_templates(ds, w).shape  # [source, Ei, t, i]
(1, 1, 1, 72)
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..errors import DataError
from .dataset import Dataset

__all__ = ["point_source_templates", "add_components"]


def point_source_templates(ds: Dataset, weights: np.ndarray) -> jnp.ndarray:
    """Expected counts per unit flux of each source in each ``Ei`` bin, ``[S, Ei, t, i]``.

    Parameters
    ----------
    ds
        The dataset whose response is interpolated.
    weights
        ``[S, t, NuLambda]`` interpolation weights of each source (times the dwell time,
        in s, in the spacecraft frame); ``t`` is 1 in the galactic frame.

    Raises
    ------
    DataError
        Weights of the wrong shape, negative or not finite.
    """
    w = np.asarray(weights, dtype=np.float64)
    n_v, n_e = ds.n_local_pixels, ds.n_energies
    if w.ndim != 3 or w.shape[1:] != (ds.n_time, n_v):
        raise DataError(f"point-source weights have shape {w.shape}; expected (sources, "
                        f"{ds.n_time}, {n_v}): [source, time bin, NuLambda pixel].")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise DataError("point-source weights must be finite and >= 0.")
    r = ds.response.reshape(n_v, n_e, -1)  # [v, Ei, i]
    # [S, t, v] x [v, Ei, i] -> [S, t, Ei, i] -> [S, Ei, t, i]
    t = jnp.einsum("stv,vei->stei", jnp.asarray(w, dtype=r.dtype), r)
    return jnp.transpose(t, (0, 2, 1, 3))


def add_components(ds: Dataset, templates, first_index: int) -> Dataset:
    """The dataset with ``templates`` ``[n, t, i]`` appended to its linear components
    (after its backgrounds), with global indices ``first_index .. first_index + n − 1``.

    The observed-bin view and the template totals are extended to match.

    Examples
    --------
    >>> import numpy as np
    >>> from probdeconv.forward import make_dataset
    >>> ds = make_dataset(np.ones((2, 3, 12)), np.ones((12, 1, 2, 3, 12)), [np.ones((2, 3, 12))])
    >>> new = add_components(ds, np.full((2, 1, 72), 0.5), first_index=1)
    >>> new.bkg_index, new.backgrounds.shape, new.bkg_totals.tolist()
    ((0, 1, 2), (3, 1, 72), [72.0, 36.0, 36.0])
    """
    dtype = ds.counts.dtype
    t = jnp.asarray(templates, dtype=dtype)
    if t.ndim != 3 or t.shape[1:] != ds.counts.shape:
        raise DataError(f"component templates have shape {t.shape}; expected (n, "
                        f"{ds.counts.shape[0]}, {ds.counts.shape[1]}) like the counts.")
    n = t.shape[0]
    index = tuple(ds.bkg_index) + tuple(range(int(first_index), int(first_index) + n))
    if len(set(index)) != len(index):
        raise DataError(f"component indices {index} repeat; give the new components indices "
                        "after the existing ones.")
    fields = dict(backgrounds=jnp.concatenate([ds.backgrounds, t]), bkg_index=index,
                  bkg_totals=jnp.concatenate([ds.bkg_totals, jnp.sum(t, axis=(1, 2))]))
    if not ds.observes_all:
        obs = t.reshape(n, -1)[:, ds.obs_index]
        fields["obs_backgrounds"] = jnp.concatenate([ds.obs_backgrounds, obs])
    return dataclasses.replace(ds, **fields)
