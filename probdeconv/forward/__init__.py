"""The forward model: the one place where expected counts and their adjoint are computed.

Every engine of probdeconv (Richardson-Lucy, MAP-EM, gradient MAP, samplers) calls the
functions of this module; nothing else re-derives the expectation or the likelihood.

Notation (see ``docs``/spec §1).  A *dataset* holds

- ``counts``      ``d[t, i]``       data space, ``t`` a time / attitude bin (one bin in the
  galactic frame) and ``i`` the flattened ``(Em, Phi, PsiChi)`` bin,
- ``response``    ``R[(v, e), i]``  the response with its source-direction axis ``v``
  (``NuLambda``) and initial-energy axis ``e`` (``Ei``) flattened together,
- ``backgrounds`` ``B[k, t, i]``    background templates, ``k`` a local row whose global
  background index is ``bkg_index[k]``,
- optionally a sparse coordinate-conversion matrix ``C[t, l, v]`` (COO: ``ccm_tv`` =
  ``t * V + v``, ``ccm_l`` = ``l``, ``ccm_values``) for the spacecraft frame.

The sky ``λ[l, e]`` is a flux per steradian; ``ΔΩ`` (``pixel_area``) the model pixel
solid angle.  Then, with ``ε`` = ``almost_zero``:

- galactic frame: ``E[0, i] = ΔΩ Σ_{l,e} λ[l,e] R[(l,e), i] + ε + Σ_k b_k B[k,0,i]``
- spacecraft frame: ``M[t,v,e] = Σ_l C[t,l,v] λ[l,e]``;
  ``E[t, i] = ΔΩ Σ_{v,e} M[t,v,e] R[(v,e), i] + ε + Σ_k b_k B[k,t,i]``

``backproject`` is the exact transpose of the sky part of ``expected_counts``
(``⟨A λ, H⟩ = ⟨λ, Aᵀ H⟩``), ``exposure`` is ``Aᵀ 1`` and ``log_likelihood`` is the
Poisson log-likelihood without the ``log d!`` term, ``Σ d log E − Σ E``.

*Reduced expectation.*  The log-likelihood and the EM ratio ``d / E`` depend on ``E``
only through its values at the observed bins (``d > 0``, typically 10–20 % of a COSI
data space) and its total ``Σ E``.  ``make_dataset`` records those bins (``obs_index``,
rounded up with a few empty bins; ``obs_counts``, ``obs_backgrounds``) and the totals of
the response rows and background templates; ``reduced_sky`` maps an image to
``[(A λ)[obs], Σ (A λ)]`` (a linear map, so accelerators may combine reduced vectors like
images), and ``reduced_expectation``, ``reduced_log_likelihood``, ``reduced_backproject``
and ``reduced_background_product`` work on it.  The iterative algorithms carry this
reduced sky instead of the dense ``[t, i]`` array: the same numbers with ~7× fewer
logarithms, divisions and bytes.  Replace the counts of a dataset with :func:`with_counts`
(never ``dataclasses.replace``), which keeps the observed-bin view in step with them.

All functions are pure and jit-able; arrays enter as pytree leaves, never as constants
closed over by compiled code.
"""

from . import blocks as _blocks
from . import dataset as _dataset
from . import model as _model
from . import precision as _precision
from .blocks import *  # noqa: F403  (the names in blocks.__all__)
from .dataset import *  # noqa: F403  (the names in dataset.__all__)
from .model import *  # noqa: F403  (the names in model.__all__)
from .precision import *  # noqa: F403  (the names in precision.__all__)

__all__ = [*_blocks.__all__, *_dataset.__all__, *_model.__all__, *_precision.__all__]
