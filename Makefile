# probdeconv developer commands.  `make test` and `make demo` create .venv when missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Find a Python >= 3.12: PYTHON if given, then python3.13/python3.12 on PATH, then pyenv.
PYTHON ?= $(shell for c in python3.13 python3.12 python3 $$HOME/.pyenv/versions/3.13*/bin/python3 $$HOME/.pyenv/versions/3.12*/bin/python3 /root/.pyenv/versions/3.1[23]*/bin/python3; do \
	  p=$$(command -v $$c 2>/dev/null) || continue; \
	  $$p -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null && { echo $$p; break; }; \
	done)

.PHONY: test demo lint bench venv clean

$(VENV)/.installed: pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "error: no Python >= 3.12 found (set PYTHON=/path/to/python3.12)" >&2; exit 2; fi
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not benchmark"

demo: $(VENV)/.installed
	$(PY) examples/demo_511.py results/demo511

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check probdeconv tests benchmarks examples

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_rl_spacecraft.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
