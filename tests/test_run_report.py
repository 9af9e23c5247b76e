"""What a run report states at its top, and the files it writes (HEALPix FITS conventions)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from astropy.io import fits

from probdeconv.cli.main import main
from probdeconv.report.checks import WarningCollector, format_checks
from probdeconv.report.sky import flux_range
from probdeconv.shell.run_checks import run_checks

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
STOP = {"statistic": "log-likelihood", "threshold": 0.5, "relative": False}


def _history(values, bkg=None):
    return [{"iteration": i, "log-likelihood": [v],
             **({"background_normalization": {"bkg": bkg}} if bkg is not None else {})}
            for i, v in enumerate(values, start=1)]


def test_a_falling_statistic_is_counted_and_located():
    checks = run_checks(_history([10.0, 20.0, 15.0, 30.0, 29.0, 29.1]), iteration_max=6,
                        stopping=STOP)
    fell = checks[0]
    assert not fell.ok
    assert "fell 2 time(s) in 6 iterations (largest fall 5 at iteration 3; iterations 3, 5)" \
        in fell.text


def test_the_iteration_limit_before_the_stopping_rule_is_a_warning():
    limit = run_checks(_history([1.0, 5.0, 7.0]), iteration_max=3, stopping=STOP)[1]
    assert not limit.ok and "iteration limit (3) before the stopping rule" in limit.text
    assert "changed the log-likelihood by 2" in limit.text
    ruled = run_checks(_history([1.0, 5.0, 5.2]), iteration_max=10, stopping=STOP)[1]
    assert ruled.ok and "Stopped by the stopping rule" in ruled.text
    # met exactly at the limit: no warning
    assert run_checks(_history([1.0, 5.0, 5.2]), iteration_max=3, stopping=STOP)[1].ok


def test_relative_rule_and_no_rule():
    rel = {"statistic": "log-posterior", "threshold": 1e-6, "relative": True}
    h = [{"iteration": i, "log-likelihood": [v], "log-posterior": v}
         for i, v in enumerate([-1e6, -9.9e5, -9.89999e5], start=1)]
    assert not run_checks(h, iteration_max=3, stopping=rel)[1].ok  # 1e-5 relative: not met
    none = run_checks(_history([1.0, 2.0]), iteration_max=2, stopping=None)[1]
    assert not none.ok and "No stopping rule" in none.text


def test_a_background_on_its_bound_and_inside_it():
    on = run_checks(_history([1.0, 2.0], bkg=9.99998), bkg_range={"bkg": [0.01, 10.0]})
    assert not on[-1].ok and "on the upper bound 10" in on[-1].text
    inside = run_checks(_history([1.0, 2.0], bkg=1.02), bkg_range={"bkg": [0.01, 10.0]})
    assert inside[-1].ok and "inside its range" in inside[-1].text


def test_format_puts_warnings_first_and_logged_ones_once():
    checks = run_checks(_history([1.0, 0.5]), iteration_max=5, stopping=STOP)
    lines = format_checks(checks, [checks[0].text, "dataset 'd' has no background model"])
    assert lines[0] == "## Checks"
    assert lines[2].startswith("- **Warning:** The log-likelihood fell 1 time(s)")
    assert lines[3] == "- **Warning:** (log) dataset 'd' has no background model"
    assert sum(checks[0].text in line for line in lines) == 1


def test_the_colour_range_starts_at_zero():
    assert flux_range(np.array([4.56e-215, 0.018]))[0] == 0.0
    lo, hi = flux_range(np.array([4.56e-215, 1e-7, 0.018]), log=True)
    assert lo >= 0.018 * 1e-4 and hi == 0.018


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["--quiet", "simulate", "--nside", "2", "--seed", "1", "--out", str(out),
                 "--overwrite"]) == 0
    return out


def test_run_report_and_fits_maps(sim, tmp_path):
    out = tmp_path / "run"
    assert main(["--quiet", "run", str(ROOT / "models" / "rl.yml"), "--data", str(sim),
                 "--out", str(out), "--set", "deconvolution:parameter:iteration_max=3"]) == 0
    text = (out / "report.md").read_text()
    assert text.startswith("# probdeconv run: RL\n\n## Checks\n\n- **Warning:** Stopped at the "
                           "iteration limit (3)")
    assert "- OK: The log-likelihood never decreased in 3 iterations." in text
    assert "Stopped at the iteration limit (3)" in (out / "run.log").read_text()
    meta = yaml.safe_load((out / "run.yml").read_text())
    assert meta["iteration_max"] == 3 and meta["stopping_rule"]["threshold"] == 0.5
    with fits.open(out / "image_E0.fits") as hdul:
        h = hdul[1].header
        assert (h["TTYPE1"], h["TUNIT1"], h["BUNIT"]) == ("FLUX", "cm-2 s-1 sr-1",
                                                          "cm-2 s-1 sr-1")
        assert (h["E_MIN"], h["E_MAX"], h["EUNIT"]) == (509.0, 513.0, "keV")
        assert (h["METHOD"], h["NITER"], h["ORDERING"], h["COORDSYS"]) == ("RL", 3, "RING",
                                                                           "G")
        assert h["CREATOR"].startswith("probdeconv ") and h["DATE"][:2] == "20"
    post = tmp_path / "post"
    assert main(["--quiet", "sample", str(ROOT / "models" / "laplace.yml"), "--data",
                 str(sim), "--out", str(post), "--set", "sampling:num_samples=50"]) == 0
    with fits.open(post / "posterior_E0.fits") as hdul:
        p = hdul[1].header
        assert p["BUNIT"] == h["BUNIT"] and p["TUNIT1"] == h["TUNIT1"]  # one spelling
        assert (p["TTYPE1"], p["E_MIN"], p["METHOD"]) == ("MEAN", 509.0, "laplace")
        assert "TUNIT5" not in p  # SIGNIFICANCE is a ratio


def test_logged_warnings_reach_the_top_of_the_report(sim, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.yml").write_text(yaml.safe_dump(
        {"name": "nobkg", "event": str(sim / "event.h5"), "response": str(sim / "response.h5"),
         "ccm": str(sim / "ccm.h5")}))
    out = tmp_path / "run"
    assert main(["--quiet", "run", str(ROOT / "models" / "rl.yml"), "--data", str(data),
                 "--out", str(out), "--set", "deconvolution:parameter:iteration_max=2"]) == 0
    checks = (out / "report.md").read_text().split("## Summary")[0]
    assert "- **Warning:** (log) dataset 'nobkg' has no background model" in checks
    assert "has no background model" in (out / "run.log").read_text()


def test_warning_collector_keeps_each_message_once():
    log = __import__("logging").getLogger("probdeconv.test")
    with WarningCollector.attached() as warned:
        log.warning("same")
        log.warning("same")
        log.info("not kept")
    assert warned.messages == ["same"]
