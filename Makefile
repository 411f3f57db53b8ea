# Two commands on a fresh machine (see README): `make demo` and `make test`.
# Each creates the virtual environment and installs what it needs by itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# invisible-watermark's own encoder for the watermark tests; --no-deps: it declares torch,
	# which only its unused rivaGan method needs (tipline.provenance.watermark.reference_codec)
	$(BIN)/python -m pip install --quiet --no-deps 'invisible-watermark==0.2.0'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tipline demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

# The browser tests drive Debian's Chromium; install it when it is missing (never a download
# by playwright itself).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get install -y --no-install-recommends chromium >/dev/null || \
	  (apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null)

# Azurite, Microsoft's Azure Storage emulator, from the npm registry: the az:// scan tests.
AZURITE := .tools/node_modules/.bin/azurite-blob

$(AZURITE):
	npm install --prefix .tools --no-audit --no-fund --silent azurite@3

test: lint $(CHROMIUM) $(AZURITE)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/hashing.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
