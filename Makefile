# `make demo` and `make test` work on a fresh clone: they create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch that lies on the machine's disk; install it before the extras so that
# their torch ranges are already satisfied and pip never pulls a CUDA build.
TORCH  := torch==2.13.0
# DeepSpeed (an optional extra) is installed with DS_BUILD_OPS=0: it compiles nothing then, and
# builds its CPU shared-memory comm op at first use (a minute or more) into TORCH_EXTENSIONS_DIR.
# That cache lives in the venv; the set-up below builds it once, so tests and the demo find it.
export TORCH_EXTENSIONS_DIR := $(abspath $(VENV))/torch-extensions
DS_INSTALL      := DS_BUILD_OPS=0 $(PIP) install -q
DS_BUILD_COMMOP := $(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"

.PHONY: demo test test-fast lint typecheck bench clean

$(VENV)/.stamp-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(PIP) install -q $(TORCH)
	$(DS_INSTALL) -e '.[test,deepspeed]'
	$(DS_BUILD_COMMOP)
	touch $@

$(VENV)/.stamp-demo: $(VENV)/.stamp-base
	$(PIP) install -q $(TORCH)
	$(DS_INSTALL) -e '.[demo,deepspeed]'
	$(DS_BUILD_COMMOP)
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
