"""Simulated COSI-like data sets, written in the formats of real data.

A Compton telescope built from Compton kinematics (cones of half-angle φ around the
source direction, Klein–Nishina weighted, blurred by the angular resolution measure),
a rocking zenith-pointing survey binned into spacecraft attitudes, a sky (point
sources, a 511 keV bulge and disk, isotropic flux), a background template and Poisson
counts.  The expected counts come from :mod:`probdeconv.forward`.

Examples
--------
>>> from probdeconv.simulate import simulate, load_simulation
>>> sim = simulate(sky="bulge511", nside=8, seed=0, out="sim/")      # doctest: +SKIP
>>> sim.paths["response"], sim.event.axes.labels.tolist()             # doctest: +SKIP
>>> data = load_simulation("sim/").dataif("511keV")                   # doctest: +SKIP
"""

from .config import DAY, SimulationConfig
from .drift import chunk_edges, drift_factor, survey_bins
from .files import read_yaml, write_full_detector_response, write_yaml
from .instrument import (
    build_response,
    effective_area,
    energy_dispersion,
    klein_nishina,
    klein_nishina_total,
    phi_bin_fractions,
    response_axes,
    ring_profiles,
)
from .simulation import FILE_NAMES, Simulation, background_template, load_simulation, simulate
from .skymodels import (
    PRESETS,
    GaussianSource,
    IsotropicSource,
    PointSource,
    SkyComponent,
    component_images,
    components_from_config,
    preset,
    sky_image,
)
from .survey import (
    Attitudes,
    ScAttBins,
    bin_attitudes,
    coordsys_conversion_matrix,
    survey_attitudes,
)

__all__ = [
    "DAY",
    "FILE_NAMES",
    "PRESETS",
    "Attitudes",
    "GaussianSource",
    "IsotropicSource",
    "PointSource",
    "ScAttBins",
    "Simulation",
    "SimulationConfig",
    "SkyComponent",
    "background_template",
    "bin_attitudes",
    "chunk_edges",
    "build_response",
    "component_images",
    "components_from_config",
    "coordsys_conversion_matrix",
    "drift_factor",
    "effective_area",
    "energy_dispersion",
    "klein_nishina",
    "klein_nishina_total",
    "load_simulation",
    "phi_bin_fractions",
    "preset",
    "read_yaml",
    "response_axes",
    "ring_profiles",
    "simulate",
    "sky_image",
    "survey_attitudes",
    "survey_bins",
    "write_full_detector_response",
    "write_yaml",
]
