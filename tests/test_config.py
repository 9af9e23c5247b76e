"""Tests of probdeconv.config.parameters: colon-path parameters, overrides, files and validation."""

from __future__ import annotations

import copy
import datetime
import logging
import math
from pathlib import Path

import pytest
import yaml

from probdeconv.config import (
    KNOWN_ALGORITHMS,
    MissingParameterError,
    Parameters,
    validate_algorithm_parameters,
    validate_run_parameters,
)
from probdeconv.errors import FileFormatError, ParameterError

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "cosipy-testdata"
PARFILE = TESTDATA / "image_deconvolution" / "imagedeconvolution_parfile_test.yml"
ALGOS = {name: name for name in KNOWN_ALGORITHMS}
CLASSES = ["AllSkyImage"]

RUN = {
    "author": "someone",
    "model_definition": {
        "class": "AllSkyImage",
        "property": {"nside": 4, "energy_edges": {"value": [100, 200.0, 500], "unit": "keV"}},
        "initialization": {"algorithm": "flat", "parameter": {"value": [1e-4, 2e-4]}},
    },
    "deconvolution": {"algorithm": "RL", "parameter": {"iteration_max": 5}},
}


def run_with(path: str, value):
    """A copy of RUN with one colon-path value replaced."""
    p = Parameters(RUN)
    p[path] = value
    return p


def error_of(func, *args, **kwargs) -> str:
    with pytest.raises(ParameterError) as info:
        func(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------ Parameters
def test_colon_path_get_set_contains():
    p = Parameters({"a": {"b": {"c": 1}}, "x": [1, 2]})
    assert p["a:b:c"] == 1
    assert p[" a : b : c "] == 1
    assert isinstance(p["a:b"], Parameters) and p["a:b"]["c"] == 1
    assert p.get("a:b:c") == 1
    assert p.get("a:zz:c") is None and p.get("a:b:c:d", 7) == 7
    assert "a:b:c" in p and "a:b:zz" not in p and "a:b:c:d" not in p and 3 not in p
    p["a:b:c"] = 2
    p["a:new:deep"] = "v"  # missing intermediates are created
    assert p.to_dict() == {"a": {"b": {"c": 2}, "new": {"deep": "v"}}, "x": [1, 2]}


def test_missing_key_is_key_error_naming_the_path():
    p = Parameters({"a": {"b": 1}})
    with pytest.raises(KeyError) as info:
        p["a:zz"]
    assert isinstance(info.value, MissingParameterError)
    msg = str(info.value)
    assert msg.startswith("a:zz:") and "'zz'" in msg and "valid keys at a: b" in msg
    with pytest.raises(ParameterError, match=r"a:b:c: .*holds 1"):
        p["a:b:c"]


def test_bad_keys_and_set_through_scalar():
    p = Parameters({"a": 1})
    for key in ("", "a::b", 3):
        with pytest.raises(ParameterError, match="expected names joined by ':'"):
            p[key]
    with pytest.raises(ParameterError, match=r"^a: got 1 \(int\); expected a mapping"):
        p["a:b"] = 2


def test_returned_subtrees_are_copies():
    p = Parameters({"a": {"b": {"c": [1, 2]}}})
    sub = p["a:b"]
    sub["c"] = 0
    lst = p["a:b:c"]
    lst.append(3)
    assert p["a:b:c"] == [1, 2]
    src = {"k": {"v": 1}}
    q = Parameters(src)
    src["k"]["v"] = 2
    assert q["k:v"] == 1
    assert q.to_dict() is not q.to_dict()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deconvolution:parameter:iteration_max = 30", 30),
        ("deconvolution:parameter:iteration_max=2.5e-1", 0.25),
        ("deconvolution:parameter:iteration_max = [1, 2.0, x]", [1, 2.0, "x"]),
        ("deconvolution:parameter:iteration_max = true", True),
        ("deconvolution:parameter:iteration_max = False", False),
        ("deconvolution:parameter:iteration_max = hello world", "hello world"),
        ("deconvolution:parameter:iteration_max = '30'", "30"),
        ("deconvolution:parameter:iteration_max = a=b", "a=b"),
        ("deconvolution:parameter:iteration_max = .inf", math.inf),
        ("deconvolution:parameter:iteration_max = {value: 1, unit: deg}",
         {"value": 1, "unit": "deg"}),
        ("deconvolution:parameter:iteration_max =", None),
    ],
)
def test_override_parses_yaml(text, expected):
    p = Parameters(RUN)
    p.override(text)
    got = p["deconvolution:parameter:iteration_max"]
    got = got.to_dict() if isinstance(got, Parameters) else got
    assert got == expected and type(got) is type(expected)


def test_override_several_nested_and_errors():
    p = Parameters()
    p.override("a:b = 1", ["a:c = [1, 2]", ("d:e:f = x",)])
    assert p.to_dict() == {"a": {"b": 1, "c": [1, 2]}, "d": {"e": {"f": "x"}}}
    msg = error_of(p.override, "deconvolution:parameter:iteration_max 30")
    assert "'deconvolution:parameter:iteration_max 30'" in msg and "key:path = value" in msg
    assert "a:b" in error_of(p.override, "a:b = [1, 2")
    assert "expected 'key:path = value'" in error_of(p.override, 5)


def test_constructor_accepts_mappings_and_rejects_others():
    assert Parameters().to_dict() == {} and Parameters(None) == {}
    assert Parameters(Parameters({"a": 1})) == {"a": 1}
    with pytest.raises(ParameterError, match=r"got \[1, 2\] \(list\); expected a mapping"):
        Parameters([1, 2])
    assert "Parameters({'a': 1})" == repr(Parameters({"a": 1}))


def test_yayc_configurator_accepted(tmp_path):
    yayc = pytest.importorskip("yayc")
    conf = yayc.Configurator({"deconvolution": {"parameter": {"iteration_max": 3}}})
    p = Parameters(conf)
    assert p["deconvolution:parameter:iteration_max"] == 3
    p["deconvolution:parameter:iteration_max"] = 4  # a copy: the Configurator is unchanged
    assert conf["deconvolution:parameter:iteration_max"] == 3
    assert Parameters(yayc.Configurator()) == {}
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(RUN))
    opened = yayc.Configurator.open(path)
    assert Parameters(opened).path == path
    v = validate_run_parameters(opened, model_classes=CLASSES, algorithms=ALGOS)
    assert v["deconvolution:parameter:acceleration:alpha_max"] == 1.0


# ----------------------------------------------------------------------------------- files
def test_open_missing_file(tmp_path):
    missing = tmp_path / "nope.yml"
    with pytest.raises(FileFormatError, match="nope.yml: parameter file not found"):
        Parameters.open(missing)
    with pytest.raises(FileFormatError, match="not found"):
        Parameters.open(tmp_path)  # a directory


def test_open_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(FileFormatError) as info:
        Parameters.open(path)
    msg = str(info.value)
    assert "bad.yml" in msg and "invalid YAML at line" in msg
    assert int(msg.split("at line ")[1].split(",")[0]) in (2, 3)


def test_open_top_level_not_mapping_and_empty(tmp_path):
    path = tmp_path / "list.yml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(FileFormatError, match=r"top level is \[1, 2\] \(list\)"):
        Parameters.open(path)
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    assert Parameters.open(empty) == {}


def test_dump_round_trip_is_atomic(tmp_path, monkeypatch):
    p = Parameters(RUN)
    p["date"] = datetime.date(2024, 7, 6)
    p["deconvolution:parameter:prior:theta"] = math.inf
    path = p.dump(tmp_path / "out.yml")
    back = Parameters.open(path)
    assert back == p and back.path == path
    assert [f.name for f in tmp_path.iterdir()] == ["out.yml"]

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("probdeconv.config.parameters.os.replace", fail)
    p["author"] = "other"
    with pytest.raises(OSError, match="disk full"):
        p.dump(path)
    assert Parameters.open(path)["author"] == "someone"  # old file intact
    assert [f.name for f in tmp_path.iterdir()] == ["out.yml"]  # temporary removed


def test_dump_errors(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        Parameters({"a": 1}).dump(tmp_path / "no" / "out.yml")
    with pytest.raises(ParameterError, match="cannot be written as YAML"):
        Parameters({"a": object()}).dump(tmp_path / "out.yml")


# ------------------------------------------------------------------------------ validation
def test_defaults_filled_for_rl():
    v = validate_run_parameters(Parameters(RUN), model_classes=CLASSES, algorithms=ALGOS)
    assert isinstance(v, Parameters) and v["author"] == "someone"
    prop = v["model_definition:property"]
    assert prop["coordinate"] == "galactic" and prop["scheme"] == "ring"
    assert prop["unit"] == "cm-2 s-1 sr-1"
    assert prop["energy_edges:value"] == [100.0, 200.0, 500.0]
    par = v["deconvolution:parameter"].to_dict()
    assert par == {
        "iteration_max": 5,
        "minimum_flux": {"value": 0.0, "unit": "cm-2 s-1 sr-1"},
        "background_normalization_optimization": {"activate": False, "range": None},
        "save_results": {"activate": False, "directory": "./results", "only_final_result": False},
        "response_weighting": {"activate": False, "index": 0.5},
        "acceleration": {"activate": False, "alpha_max": 1.0, "algorithm": "classic"},
        "smoothing": {"activate": False},
        "stopping_criteria": {"statistics": "log-likelihood", "threshold": 1.0e-2,
                              "relative": False},
    }
    assert RUN["deconvolution"]["parameter"] == {"iteration_max": 5}  # input untouched


def test_defaults_per_algorithm():
    m = validate_algorithm_parameters("MAP_RL", None)
    assert m["stopping_criteria"] == {"statistics": "log-posterior", "threshold": 0.01,
                                      "relative": False}
    assert m["prior"] == {} and "smoothing" not in m
    s = validate_algorithm_parameters("RLsimple", {})
    assert set(s) == {"iteration_max", "minimum_flux", "background_normalization_optimization",
                      "save_results"}
    r = validate_algorithm_parameters("RL", Parameters({"iteration_max": 3}))
    assert r["iteration_max"] == 3


def test_rlsimple_accepts_stopping_criteria_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="probdeconv.config.parameters"):
        s = validate_algorithm_parameters("RLsimple", {"stopping_criteria": {"threshold": 1}})
    assert s["stopping_criteria"] == {"threshold": 1}
    assert "ignored by RLsimple" in caplog.text


@pytest.mark.parametrize(
    ("algorithm", "parameter", "path", "needle"),
    [
        ("RL", {"iteraton_max": 1}, "deconvolution:parameter:iteraton_max",
         "did you mean 'iteration_max'? Expected one of the valid keys at "
         "deconvolution:parameter: iteration_max, minimum_flux"),
        ("RL", {"acceleration": {"alpha": 2}}, "deconvolution:parameter:acceleration:alpha",
         "did you mean 'alpha_max'"),
        ("RL", {"smoothing": {"activate": True, "FWHM": {"value": 1, "unit": "deg",
                                                          "units": 0}}},
         "deconvolution:parameter:smoothing:FWHM:units", "value, unit"),
        ("MAP_RL", {"prior": {"L1": {"coefficient": 1}}}, "deconvolution:parameter:prior:L1",
         "TSV, entropy, gamma"),
    ],
)
def test_misspelt_keys_at_several_depths(algorithm, parameter, path, needle):
    msg = error_of(validate_algorithm_parameters, algorithm, parameter)
    assert msg.startswith(f"{path}: unknown key") and needle in msg


@pytest.mark.parametrize(
    ("algorithm", "parameter", "path"),
    [
        ("RL", {"foo": 1}, "deconvolution:parameter:foo"),
        ("RL", {"smoothing": {"activate": True, "FWHM": {"value": 1, "unit": "deg", "x": 0}}},
         "deconvolution:parameter:smoothing:FWHM:x"),
        ("RLsimple", {"acceleration": {"activate": True}}, "deconvolution:parameter:acceleration"),
        ("RLsimple", {"response_weighting": {"activate": True}},
         "deconvolution:parameter:response_weighting"),
        ("RL", {"prior": {}}, "deconvolution:parameter:prior"),
        ("MAP_RL", {"smoothing": {}}, "deconvolution:parameter:smoothing"),
        ("RLbasic", {"background_normalization_optimization": {"activate": True}},
         "deconvolution:parameter:background_normalization_optimization"),
    ],
)
def test_keys_cosipy_ignores_are_dropped_with_a_warning(algorithm, parameter, path, caplog):
    """cosipy reads parameters with .get() and ignores the rest: so does probdeconv, loudly."""
    with caplog.at_level(logging.WARNING, logger="probdeconv.config"):
        out = validate_algorithm_parameters(algorithm, parameter)
    assert f"{path}: not used here" in caplog.text
    section, _, key = path.removeprefix("deconvolution:parameter:").rpartition(":")
    assert key not in (Parameters(out)[section] if section else out)


@pytest.mark.parametrize(
    ("parameter", "path", "needle"),
    [
        ({"iteration_max": 2.5}, "iteration_max", "got 2.5 (float); expected an integer >= 1"),
        ({"iteration_max": 0}, "iteration_max", "expected an integer >= 1"),
        ({"iteration_max": True}, "iteration_max", "got True (bool)"),
        ({"iteration_max": "10"}, "iteration_max", "got '10' (str)"),
        ({"acceleration": True}, "acceleration", "expected a mapping with keys activate"),
        ({"acceleration": {"activate": "yes"}}, "acceleration:activate", "a boolean"),
        ({"acceleration": {"activate": 1}}, "acceleration:activate", "a boolean"),
        ({"acceleration": {"alpha_max": 0.5}}, "acceleration:alpha_max", "number >= 1"),
        ({"acceleration": {"algorithm": "Fast"}}, "acceleration:algorithm",
         "valid choices: classic, MaxStep, LineSearch, SQUAREM"),
        ({"minimum_flux": {"value": "none"}}, "minimum_flux:value", "a finite number >= 0"),
        ({"minimum_flux": {"value": "-1e-4"}}, "minimum_flux:value", "a finite number >= 0"),
        ({"minimum_flux": {"value": float("nan")}}, "minimum_flux:value", "finite number"),
        ({"minimum_flux": {"unit": "furlongs"}}, "minimum_flux:unit", "astropy unit string"),
        ({"smoothing": {"activate": True}}, "smoothing:FWHM", "missing"),
        ({"smoothing": {"activate": True, "FWHM": {"value": 1, "unit": "keV"}}},
         "smoothing:FWHM:unit", "angle unit"),
        ({"smoothing": {"activate": True, "FWHM": {"unit": "deg"}}}, "smoothing:FWHM:value",
         "missing required key"),
        ({"stopping_criteria": {"statistics": "log-posterior"}}, "stopping_criteria:statistics",
         "valid choices: log-likelihood"),
        ({"response_weighting": {"index": [1]}}, "response_weighting:index", "a finite number"),
        ({"background_normalization_optimization": {"range": {"albedo": [2, 1]}}},
         "background_normalization_optimization:range:albedo", "lower <= upper"),
        ({"background_normalization_optimization": {"range": {"albedo": 1}}},
         "background_normalization_optimization:range:albedo", "[lower, upper]"),
        ({"background_normalization_optimization": {"range": [0, 1]}},
         "background_normalization_optimization:range", "mapping of background name"),
        ({"save_results": {"directory": 3}}, "save_results:directory", "non-empty string"),
    ],
)
def test_wrong_types_name_path_value_and_expectation(parameter, path, needle):
    msg = error_of(validate_algorithm_parameters, "RL", parameter)
    assert msg.startswith(f"deconvolution:parameter:{path}: "), msg
    assert needle in msg


def test_accepted_value_forms():
    p = validate_algorithm_parameters("RL", {
        "minimum_flux": {"value": 0},  # int where a float is expected
        "acceleration": {"activate": True, "alpha_max": 10, "algorithm": "SQUAREM"},
        "smoothing": {"activate": True, "FWHM": {"value": 2, "unit": "arcmin"}},
        "background_normalization_optimization": {"activate": True,
                                                  "range": {"albedo": [0.9, 1], "cr": [0, ".inf"]}},
    })
    assert p["minimum_flux"]["value"] == 0.0 and type(p["minimum_flux"]["value"]) is float
    assert p["acceleration"]["alpha_max"] == 10.0
    assert p["smoothing"]["FWHM"] == {"value": 2.0, "unit": "arcmin"}
    assert p["background_normalization_optimization"]["range"] == {
        "albedo": [0.9, 1.0], "cr": [0.0, math.inf]}


def test_map_rl_priors_loose_with_inf():
    prior = {"TSV": {"coefficient": 1},
             "entropy": {"coefficient": 0.1, "reference": {"value": 1e-4}},
             "gamma": {"model": {"theta": {"value": "inf", "unit": "cm-2 s-1 sr-1"},
                                 "k": {"value": 1}},
                       "background": {"theta": {"value": math.inf}, "k": {"value": 2}}}}
    original = copy.deepcopy(prior)
    stop = {"statistics": "log-likelihood"}
    p = validate_algorithm_parameters("MAP_RL", {"prior": prior, "stopping_criteria": stop})
    assert p["prior"]["gamma"]["model"]["theta"]["value"] == math.inf
    assert p["prior"]["gamma"]["background"]["k"]["value"] == 2.0
    assert p["prior"]["TSV"] == {"coefficient": 1.0}
    assert p["stopping_criteria"]["statistics"] == "log-likelihood"
    assert prior == original
    msg = error_of(validate_algorithm_parameters, "MAP_RL",
                   {"prior": {"gamma": {"model": {"theta": {"value": "huge"}}}}})
    assert msg.startswith("deconvolution:parameter:prior:gamma:model:theta:value: got 'huge'")
    msg = error_of(validate_algorithm_parameters, "MAP_RL",
                   {"prior": {"gamma": {"model": {"theta": {"value": 1, "unit": "bogus"}}}}})
    assert "prior:gamma:model:theta:unit: got 'bogus'" in msg
    msg = error_of(validate_algorithm_parameters, "MAP_RL", {"prior": {"TSV": 1.0}})
    assert msg.startswith("deconvolution:parameter:prior:TSV: got 1.0 (float)")


def test_unknown_algorithm_and_class_list_choices():
    msg = error_of(validate_run_parameters, run_with("deconvolution:algorithm", "EM"),
                   model_classes=CLASSES, algorithms=ALGOS)
    assert msg.startswith("deconvolution:algorithm: got 'EM' (str)")
    assert "valid choices: RL, RLsimple, MAP_RL" in msg
    msg = error_of(validate_run_parameters, run_with("model_definition:class", "Galaxy"),
                   model_classes=["AllSkyImage", "Other"], algorithms=ALGOS)
    assert msg.startswith("model_definition:class: got 'Galaxy'")
    assert "valid choices: AllSkyImage, Other" in msg
    msg = error_of(validate_algorithm_parameters, "RichardsonLucy", {})
    assert "valid choices: RL, RLsimple, MAP_RL" in msg


def test_algorithm_mapping_chooses_schema():
    algos = {"RichardsonLucy": "RL", "Custom": "my.module:Custom"}
    p = run_with("deconvolution:algorithm", "RichardsonLucy")
    v = validate_run_parameters(p, model_classes=CLASSES, algorithms=algos)
    assert v["deconvolution:parameter:acceleration:alpha_max"] == 1.0
    p = run_with("deconvolution:algorithm", "Custom")
    p["deconvolution:parameter"] = {"anything": [1]}
    v = validate_run_parameters(p, model_classes=CLASSES, algorithms=algos)
    assert v["deconvolution:parameter"] == {"anything": [1]}
    msg = error_of(validate_run_parameters, run_with("deconvolution:algorithm", "RL"),
                   model_classes=CLASSES, algorithms=algos)
    assert "valid choices: RichardsonLucy, Custom" in msg


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        ("model_definition:property:nside", 3, "power of 2"),
        ("model_definition:property:nside", 0, "integer >= 1"),
        ("model_definition:property:scheme", "NEST", "valid choices: ring, nested"),
        ("model_definition:property:energy_edges:value", [100], "at least two"),
        ("model_definition:property:energy_edges:value", [200, 100, 300], "strictly increasing"),
        ("model_definition:property:energy_edges:unit", "cm", "energy unit"),
        ("model_definition:property:unit", "not a unit", "astropy unit"),
        ("model_definition:initialization:parameter:value", [1.0], "2 numbers, one per energy bin"),
        ("model_definition:initialization:parameter:value", [1.0, -1.0], ">= 0"),
        ("model_definition:initialization:algorithm", "backprojection", "valid choices: flat"),
        ("model_definition:property:nsides", 1, "did you mean 'nside'"),
        ("deconvolution:paramter", 1, "valid keys at deconvolution: algorithm, parameter"),
        ("deconvolution:parameter", [1], "expected a mapping"),
    ],
)
def test_model_and_deconvolution_errors(path, value, needle):
    msg = error_of(validate_run_parameters, run_with(path, value),
                   model_classes=CLASSES, algorithms=ALGOS)
    assert msg.startswith(path), msg
    assert needle in msg


def test_missing_sections_and_required_keys():
    p = Parameters(RUN).to_dict()
    del p["deconvolution"]
    assert error_of(validate_run_parameters, p, model_classes=CLASSES,
                    algorithms=ALGOS).startswith("deconvolution: missing required")
    p = Parameters(RUN).to_dict()
    del p["model_definition"]["property"]["nside"]
    msg = error_of(validate_run_parameters, p, model_classes=CLASSES, algorithms=ALGOS)
    assert msg.startswith("model_definition:property:nside: missing required key")
    assert "power of 2" in msg


def test_cosipy_parfile_loads_and_validates_unchanged():
    if not PARFILE.is_file():
        pytest.skip(f"cosipy test data not available at {PARFILE} (needs /work/shared)")
    raw = yaml.safe_load(PARFILE.read_text())
    p = Parameters.open(PARFILE)
    assert p.to_dict() == raw
    v = validate_run_parameters(p, model_classes=CLASSES, algorithms=ALGOS)
    assert v["deconvolution:algorithm"] == "RLsimple"
    assert v["deconvolution:parameter:iteration_max"] == 2
    assert v["deconvolution:parameter:background_normalization_optimization"] == {
        "activate": True, "range": None}
    assert len(v["model_definition:initialization:parameter:value"]) == 10
    assert v["author"] == raw["author"] and v["date"] == raw["date"]
    assert p.to_dict() == raw  # validation does not modify its input
