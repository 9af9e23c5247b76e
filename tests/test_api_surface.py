"""The classes and members of the reference API (spec: cosipy-image-deconvolution-api.txt)."""

from __future__ import annotations

import pytest

import probdeconv

REFERENCE = {
    "ImageDeconvolution": [
        "dataset", "initial_model", "initialize", "mask", "model_initialization",
        "override_parameter", "parameter", "read_parameterfile",
        "register_deconvolution_algorithm", "results", "run_deconvolution", "set_dataset",
        "set_mask", "model_classes", "deconvolution_algorithm_classes"],
    "ImageDeconvolutionDataInterfaceBase": [
        "bkg_model", "keys_bkg_models", "summed_bkg_model", "calc_expectation",
        "calc_T_product", "calc_bkg_model_product", "calc_log_likelihood", "event",
        "exposure_map", "model_axes", "data_axes"],
    "DataIF_COSI_DC2": ["calc_T_product", "calc_bkg_model_product", "calc_expectation",
                        "calc_log_likelihood", "load"],
    "ModelBase": ["mask_pixels", "instantiate_from_parameters", "set_values_from_parameters"],
    "AllSkyImageModel": ["instantiate_from_parameters", "open", "set_values_from_extendedmodel",
                         "set_values_from_parameters", "smoothing", "mask_pixels"],
    "DeconvolutionAlgorithmBase": [
        "calc_expectation_list", "calc_loglikelihood_list", "calc_summed_T_product",
        "calc_summed_bkg_model", "calc_summed_bkg_model_product", "calc_summed_exposure_map",
        "initialization", "pre_processing", "Estep", "Mstep", "post_processing",
        "register_result", "check_stopping_criteria", "finalization", "iteration"],
    "RichardsonLucy": ["calc_alpha", "check_stopping_criteria", "finalization",
                       "initialization", "post_processing", "pre_processing",
                       "register_result", "iteration", "Estep", "Mstep"],
    "RichardsonLucySimple": ["check_stopping_criteria", "finalization", "initialization",
                             "post_processing", "pre_processing", "register_result",
                             "iteration", "Estep", "Mstep"],
    "SpacecraftAttitudeExposureTable": ["analyze_orientation", "calc_pointing_trajectory_map",
                                        "from_fits", "from_orientation", "save_as_fits"],
    "CoordsysConversionMatrix": ["open", "spacecraft_attitude_binning_ccm", "time_binning_ccm"],
}


@pytest.mark.parametrize("cls", sorted(REFERENCE))
def test_reference_members_exist(cls):
    obj = getattr(probdeconv, cls, None)
    assert obj is not None, f"probdeconv.{cls} is missing (the reference API exports it)"
    missing = [m for m in REFERENCE[cls] if not hasattr(obj, m)]
    assert not missing, f"probdeconv.{cls} lacks {missing}"
