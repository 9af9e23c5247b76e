"""The README's Python code blocks that use cosipy's test files run as written.

Each ```python block of README.md that names a file of cosipy's test data is run in a
fresh directory, with the file names rewritten to ``../shared/cosipy-testdata`` paths and
``models/`` to this checkout's; skipped with a reason when the test data are absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import TESTDATA

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks(text: str) -> list[str]:
    """The code of every fenced ```python block."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def cosipy_test_files() -> list[str]:
    """Names of cosipy's test files (the directory listing, or the ones the README names)."""
    if TESTDATA.is_dir():
        return sorted(p.name for p in TESTDATA.iterdir() if p.is_file())
    return ["test_event_histogram_galacticCDS.hdf5", "test_precomputed_response.h5"]


BLOCKS = [b for b in python_blocks(README.read_text(encoding="utf-8"))
          if any(name in b for name in cosipy_test_files())]


def test_the_readme_has_blocks_that_use_the_test_files():
    assert BLOCKS, "README.md: no python block names a file of cosipy's test data"


def rewrite(code: str) -> str:
    """Point the block's file names at the test data and ``models/`` at this checkout."""
    for name in cosipy_test_files():
        code = re.sub(rf"(['\"]){re.escape(name)}\1", repr(str(TESTDATA / name)), code)
    return re.sub(r"(['\"])models/", lambda m: m.group(1) + str(ROOT / "models") + "/", code)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, testdata, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = rewrite(BLOCKS[index])
    namespace: dict = {"__name__": f"readme_block_{index}"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)  # noqa: S102
