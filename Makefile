# fmi: set-up, tests, checks. Everything installs into .venv (torch pinned to the CPU wheel).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fmi-installed
MODEL ?= auto


.PHONY: install assets browser test test-fast lint typecheck check recall analyses compare capacity bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,gemma]"
	$(BIN)/python -m fmi.assets
	touch $(STAMP)

install: $(STAMP)

assets: $(STAMP)
	$(BIN)/python -m fmi.assets

# Debian's Chromium, for the test that opens every report headless with the network cut off.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check fmi tests

typecheck: $(STAMP)
	$(BIN)/mypy fmi

check: lint typecheck test

recall: $(STAMP)
	$(BIN)/fmi recall --model $(MODEL) --json reports/$(MODEL)/recall.json

analyses: $(STAMP)
	$(BIN)/fmi analyses --model $(MODEL)

compare: $(STAMP)
	$(BIN)/fmi compare --model $(MODEL)

capacity: $(STAMP)
	$(BIN)/fmi capacity --model $(MODEL) --json reports/$(MODEL)/capacity.json

bench: $(STAMP)
	$(BIN)/fmi bench --model $(MODEL) --json reports/$(MODEL)/bench.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
