"""probdeconv: Bayesian and MAP all-sky image reconstruction for Compton telescopes.

Importing probdeconv switches JAX to 64-bit floats (``jax_enable_x64``): likelihood sums
are float64 by default; float32 is an explicit option (``dtype="float32"``).

It also keeps compiled iterations on disk for the next run (JAX's persistent compilation
cache in ``~/.cache/probdeconv/jax``; ``PROBDECONV_JAX_CACHE=off`` or another directory:
see :mod:`probdeconv.compile_cache`).

cosipy's prior modules keep their names after the import change: ``probdeconv.prior_base``,
``probdeconv.prior_tsv`` and ``probdeconv.prior_entropy`` are registered here as names of
:mod:`probdeconv.shell.priors` (``from probdeconv.prior_tsv import PriorTSV`` works), so
that no alias modules sit at the top level of the package.
"""

import sys as _sys

from .startup import guard_startup_interrupt

guard_startup_interrupt()  # the `probdeconv` command: Ctrl-C while importing -> one line

import jax as _jax  # noqa: E402

_jax.config.update("jax_enable_x64", True)

# numpyro before arviz: arviz_base loads numpyro lazily, and a lazily loaded numpyro loses
# the attribute numpyro.distributions.distribution that numpyro.factor needs
import numpyro as _numpyro  # noqa: E402, F401

from . import compile_cache as _compile_cache  # noqa: E402

_compile_cache.configure_compilation_cache()  # PROBDECONV_JAX_CACHE=off: no disk cache

from histpy import Axes, Axis, HealpixAxis, Histogram  # noqa: E402  (histpy's own classes)

from .config.parameters import Parameters  # noqa: E402
from .errors import (  # noqa: E402
    AxisMismatchError,
    DataError,
    FileFormatError,
    ModelTypeError,
    ParameterError,
    ProbdeconvError,
)
from .forward.problem import Problem  # noqa: E402
from .results.compare import compare  # noqa: E402
from .results.posterior import Posterior  # noqa: E402
from .results.sampling import sample  # noqa: E402
from .shell import priors as _shell_priors  # noqa: E402
from .shell.algorithm_base import DeconvolutionAlgorithmBase  # noqa: E402
from .shell.allsky_image import AllSkyImageModel, ModelBase  # noqa: E402
from .shell.data_collection import DataInterfaceCollection  # noqa: E402
from .shell.dataif import DataIF_COSI_DC2, ImageDeconvolutionDataInterfaceBase  # noqa: E402
from .shell.image_deconvolution import ImageDeconvolution  # noqa: E402
from .shell.map_richardson_lucy import MAP_RichardsonLucy  # noqa: E402
from .shell.priors import PriorBase, PriorEntropy, PriorTSV  # noqa: E402
from .shell.problem import problem_from_dataif  # noqa: E402
from .shell.response import CoordsysConversionMatrix, FullDetectorResponse  # noqa: E402
from .shell.richardson_lucy import (  # noqa: E402
    RichardsonLucy,
    RichardsonLucyAdvanced,
    RichardsonLucyBasic,
    RichardsonLucySimple,
)
from .spacecraft import SpacecraftAttitudeExposureTable, SpacecraftFile  # noqa: E402
from .version import __version__  # noqa: E402

for _name in ("prior_base", "prior_tsv", "prior_entropy"):  # cosipy's module names
    _sys.modules[f"{__name__}.{_name}"] = _shell_priors

__all__ = [
    "__version__",
    "AllSkyImageModel",
    "Axes",
    "Axis",
    "AxisMismatchError",
    "CoordsysConversionMatrix",
    "DataError",
    "DataIF_COSI_DC2",
    "DataInterfaceCollection",
    "DeconvolutionAlgorithmBase",
    "FileFormatError",
    "FullDetectorResponse",
    "HealpixAxis",
    "Histogram",
    "ImageDeconvolution",
    "ImageDeconvolutionDataInterfaceBase",
    "MAP_RichardsonLucy",
    "ModelBase",
    "ModelTypeError",
    "Parameters",
    "ParameterError",
    "Posterior",
    "PriorBase",
    "PriorEntropy",
    "PriorTSV",
    "Problem",
    "ProbdeconvError",
    "RichardsonLucy",
    "RichardsonLucyAdvanced",
    "RichardsonLucyBasic",
    "RichardsonLucySimple",
    "SpacecraftAttitudeExposureTable",
    "SpacecraftFile",
    "compare",
    "problem_from_dataif",
    "sample",
]
