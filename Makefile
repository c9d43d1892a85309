# Two entry points: `make demo` and `make test`. Both install into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.atlas-installed
PYTEST_ARGS ?=

.PHONY: install test demo clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned first so `.[test]` resolves to the local CPU build rather than CUDA wheels.
# SciWorld and TextWorldExpress run on the JVM: install a JRE when the machine has none.
$(STAMP): setup.py | $(PY)
	@command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq default-jre-headless)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash launch/demo.sh

clean:
	rm -rf $(VENV) build *.egg-info
