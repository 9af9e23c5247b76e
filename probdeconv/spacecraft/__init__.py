"""Spacecraft geometry: orientation files, attitude exposure tables and CCMs.

From the orientation to the coordinate-conversion matrix, with no cosipy installed::

    from probdeconv.spacecraft import SpacecraftFile, SpacecraftAttitudeExposureTable
    from probdeconv import CoordsysConversionMatrix, FullDetectorResponse

    ori = SpacecraftFile.parse_from_file("20280301_first_10sec.ori")
    table = SpacecraftAttitudeExposureTable.from_orientation(ori, nside=1, scheme="ring")
    table.save_as_fits("exposure_table.fits")
    with FullDetectorResponse.open("response.h5") as rsp:
        ccm = CoordsysConversionMatrix.spacecraft_attitude_binning_ccm(
            rsp, table, use_averaged_pointing=True)
    ccm.write("ccm.hdf5")
"""

from .ccm import spacecraft_attitude_binning_ccm, time_binning_ccm
from .exposure_table import ExposureTableColumns, SpacecraftAttitudeExposureTable
from .geometry import EARTH_RADIUS_KM, attitude_matrices
from .orientation import SpacecraftFile

__all__ = [
    "EARTH_RADIUS_KM",
    "ExposureTableColumns",
    "SpacecraftAttitudeExposureTable",
    "SpacecraftFile",
    "attitude_matrices",
    "spacecraft_attitude_binning_ccm",
    "time_binning_ccm",
]
