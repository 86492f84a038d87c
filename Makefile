# Two entry points, each from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# The CPU build of torch; without a torch installed first, a bare requirement pulls the CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: demo test install install-test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)

install: $(VENV)/bin/python
	$(PY) -m pip install -q .

install-test: $(VENV)/bin/python
	$(PY) -m pip install -q ".[test]"

demo: install
	$(VENV)/bin/fastprune demo

test: install-test
	$(VENV)/bin/pytest tests

bench: install-test
	$(VENV)/bin/pytest benchmarks --benchmark-only

clean:
	rm -rf build dist *.egg-info fastprune/_C*.so $(VENV)
