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

# The other Pythons we claim (README, "Install"): each runs the fast, torch-free test subset.
OTHER_PYTHONS ?= 3.10 3.12 3.13
FAST_CORE_TESTS := tests/core tests/data/test_dataset.py tests/data/test_read.py \
                   tests/serve/test_serve.py tests/serve/test_proxy.py tests/serve/test_fastapi.py \
                   tests/data/test_options.py tests/data/test_write.py tests/data/test_aggregate.py \
                   tests/data/test_admission.py tests/data/test_observe.py \
                   tests/dashboard/test_server.py tests/dashboard/test_cli.py \
                   tests/dashboard/test_series.py \
                   tests/test_errors.py tests/test_import.py tests/test_exported_members.py

.PHONY: demo test test-fast test-pythons test-python lint typecheck bench clean

$(VENV)/.stamp-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# the distribution's old name: an old .venv may still hold it beside ember-scale
	@$(PIP) uninstall -q -y ember >/dev/null 2>&1 || true
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(PIP) install -q $(TORCH)
	$(DS_INSTALL) -e '.[test,deepspeed]'
	$(DS_BUILD_COMMOP)
	touch $@

# The demo uses no DeepSpeed: it skips that extra and its op build (minutes on a fresh machine).
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

# Two test processes (pytest-xdist), whole files each: most tests wait on the processes they
# start, so on 2 cores two at a time take about 12 minutes where one at a time took 22. The
# few tests marked `alone` (a dead runtime's segments on purpose) run after them, by themselves.
# TEST_WORKERS=0 runs everything in this one process.
TEST_WORKERS ?= 2
test: lint typecheck
ifeq ($(TEST_WORKERS),0)
	$(PY) -m pytest -q
else
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not alone"
	$(PY) -m pytest -q -m alone
endif

test-fast: $(VENV)/.stamp-test
	$(PY) -m pytest -q -m "not slow" -x

# `make test-python V=3.12`: a venv of that Python (pyenv's, else one on PATH) with the
# torch-free extras, then the fast subset of the core, data and serve tests. Torch's CPU build
# lies on this machine for Python 3.11 only (PyPI's is a multi-GB CUDA build), so train and rl
# are tested on 3.11 alone.
test-python:
	@py=$$(ls -d $$HOME/.pyenv/versions/$(V).*/bin/python 2>/dev/null | tail -1); \
	py=$${py:-$$(command -v python$(V) 2>/dev/null)}; \
	if [ -z "$$py" ]; then echo "test-python: no Python $(V) on this machine, skipped"; exit 0; fi; \
	if [ ! -f .venv-$(V)/.stamp ] || [ pyproject.toml -nt .venv-$(V)/.stamp ]; then \
	  $$py -m venv .venv-$(V) && .venv-$(V)/bin/python -m pip install -q --upgrade pip && \
	  .venv-$(V)/bin/python -m pip install -q -e '.[test-core]' && touch .venv-$(V)/.stamp; \
	fi; \
	echo "== Python $(V): $$(.venv-$(V)/bin/python --version)"; \
	.venv-$(V)/bin/python -m pytest -q -m "not slow" -p no:cacheprovider $(FAST_CORE_TESTS)

test-pythons:
	@for v in $(OTHER_PYTHONS); do $(MAKE) --no-print-directory test-python V=$$v || exit 1; done

# Every benchmarks/*.py, ember and Ray side by side; writes benchmarks/REPORT.md.
bench: $(VENV)/.stamp-bench
	$(PY) benchmarks/report.py

clean:
	rm -rf $(VENV) .venv-3.* .pytest_cache .mypy_cache .ruff_cache
