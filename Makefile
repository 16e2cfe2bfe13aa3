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

# Two pytest workers, each test file whole on one of them (module fixtures are built once);
# much of the suite waits on servers and subprocesses, so two overlap well on 2 cores.
# Files are handed out in collection order, which tests/conftest.py starts with the
# slowest files (SLOW_FILES_FIRST), so that both workers finish together.
TEST_WORKERS ?= 2

test: install-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

clean:
	rm -rf runs build *.egg-info
