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
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test]'
	touch $@

$(VENV)/.stamp-demo: $(VENV)/.stamp-base
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[demo]'
	touch $@

$(VENV)/.stamp-bench: $(VENV)/.stamp-test
	$(PIP) install -q -e '.[test,bench]'
	touch $@

# The whole job: data -> train -> batch inference -> serve -> rl (see examples/llm_lifecycle.py).
demo: $(VENV)/.stamp-demo
	$(PY) examples/llm_lifecycle.py $(DEMO_ARGS)

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check ember tests benchmarks examples

typecheck: $(VENV)/.stamp-test
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest -q

test-fast: $(VENV)/.stamp-test
	$(PY) -m pytest -q -m "not slow" -x

# Every benchmarks/*.py, ember and Ray side by side; writes benchmarks/REPORT.md.
bench: $(VENV)/.stamp-bench
	$(PY) benchmarks/report.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
