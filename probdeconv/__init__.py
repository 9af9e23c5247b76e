"""probdeconv: Bayesian and MAP all-sky image reconstruction for Compton telescopes.

Importing probdeconv switches JAX to 64-bit floats (``jax_enable_x64``): likelihood sums
are float64 by default; float32 is an explicit option (``dtype="float32"``).
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from histpy import Axes, Axis, HealpixAxis, Histogram  # noqa: E402  (histpy's own classes)

from .config.parameters import Parameters  # noqa: E402
from .errors import (  # noqa: E402
    AxisMismatchError,
    DataError,
    FileFormatError,
    ParameterError,
    ProbdeconvError,
)
from .forward.problem import Problem  # noqa: E402
from .results.posterior import Posterior  # noqa: E402
from .results.sampling import sample  # noqa: E402
from .shell.algorithm_base import DeconvolutionAlgorithmBase  # noqa: E402
from .shell.allsky_image import AllSkyImageModel, ModelBase  # noqa: E402
from .shell.dataif import DataIF_COSI_DC2, ImageDeconvolutionDataInterfaceBase  # noqa: E402
from .shell.image_deconvolution import ImageDeconvolution  # noqa: E402
from .shell.map_richardson_lucy import MAP_RichardsonLucy  # noqa: E402
from .shell.problem import problem_from_dataif  # noqa: E402
from .shell.response import CoordsysConversionMatrix, FullDetectorResponse  # noqa: E402
from .shell.richardson_lucy import RichardsonLucy, RichardsonLucySimple  # noqa: E402
from .spacecraft import SpacecraftAttitudeExposureTable, SpacecraftFile  # noqa: E402

from .version import __version__  # noqa: E402

__all__ = [
    "AllSkyImageModel",
    "Axes",
    "Axis",
    "AxisMismatchError",
    "CoordsysConversionMatrix",
    "DataError",
    "DataIF_COSI_DC2",
    "DeconvolutionAlgorithmBase",
    "FileFormatError",
    "FullDetectorResponse",
    "HealpixAxis",
    "Histogram",
    "ImageDeconvolution",
    "ImageDeconvolutionDataInterfaceBase",
    "MAP_RichardsonLucy",
    "ModelBase",
    "Parameters",
    "ParameterError",
    "Posterior",
    "Problem",
    "ProbdeconvError",
    "RichardsonLucy",
    "RichardsonLucySimple",
    "SpacecraftAttitudeExposureTable",
    "SpacecraftFile",
    "problem_from_dataif",
    "sample",
]
