PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test install install-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(PY) -m mdl_tf.demo --model_dir runs/demo

# Three pytest workers, each test file whole on one of them (module fixtures are built
# once). On 2 cores a third worker fills the time the others spend single-threaded (graph
# tracing, subprocess start-up, servers): 8 min 24 s against 9 min 26 s with two
# (BUILD.md, "Tests"). Files are handed out in collection order, which tests/conftest.py
# starts with the slowest files (SLOW_FILES_FIRST), so that the workers finish together.
TEST_WORKERS ?= 3

test: install-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

clean:
	rm -rf runs build *.egg-info
