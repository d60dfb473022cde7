# `make demo` and `make test` work on a fresh clone: they create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch that lies on the machine's disk; install it before the extras so that
# their torch ranges are already satisfied and pip never pulls a CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test test-fast lint typecheck bench clean

$(VENV)/.stamp-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e . numpy  # numpy: the demo (examples/core_tour.py) shares an array
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test]'
	touch $@

demo: $(VENV)/.stamp-base
	$(PY) examples/core_tour.py

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check ember tests benchmarks examples

typecheck: $(VENV)/.stamp-test
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest -q

test-fast: $(VENV)/.stamp-test
	$(PY) -m pytest -q -m "not slow" -x

bench: $(VENV)/.stamp-test
	$(PY) benchmarks/core.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
