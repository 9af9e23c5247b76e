"""benchmarks/gpu_dc2.py (the prepared GPU measurement of issue 11) runs on the CPU at a
tiny size and writes every case it promises."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_dc2  # noqa: E402


def test_gpu_script_runs_small_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu_dc2.main(["--nside", "2", "--n-scatt", "4", "--warmup", "1",
                         "--iterations", "2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["cases"]) == {"galactic/full", "galactic/mixed", "spacecraft/full",
                               "spacecraft/mixed"}
    for name, c in r["cases"].items():
        assert c["per_iter_ms"] > 0 and c["queued_per_iter_ms"] > 0, name
        assert c["goal_ms"] == (5.0 if name.startswith("galactic") else 50.0)
        assert c["response_dtype"] == ("float32" if name.endswith("mixed") else "float64")
    for frame in ("galactic", "spacecraft"):
        d = r["cases"][f"{frame}/mixed"]["vs_float64"]
        assert d["rel_loglik_diff"] < 1e-6 and d["max_rel_image_diff"] < 1e-4, (frame, d)
