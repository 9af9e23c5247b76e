"""Every example in the package's docstrings runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import probdeconv

MODULES = sorted(m.name for m in pkgutil.walk_packages(probdeconv.__path__, "probdeconv.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=False, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed " \
        f"(run: python -m pytest --doctest-modules {module.__file__})"
