# fmi: set-up, tests, checks. Everything installs into .venv (torch pinned to the CPU wheel).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fmi-installed
MODEL ?= auto


.PHONY: install lock assets browser test test-fast lint typecheck docs check mutation recall analyses compare capacity edit bench notebooks clean

# constraints.txt holds the exact version of every other package (make lock rewrites it), so a
# fresh clone computes with the same code as the README's runs.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,gemma,docs,ray]"
	$(BIN)/python -m fmi.models.assets
	touch $(STAMP)

install: $(STAMP)

# Rewrite constraints.txt from the installed environment (after a deliberate upgrade).
lock: $(STAMP)
	{ echo "# Exact versions a fresh 'make install' gets (pip -c). Regenerate: make lock"; \
	  echo "# torch is pinned in the Makefile (2.13.0, the CPU wheel)."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(torch|fmi)==|^#|^-e'; } > constraints.txt

assets: $(STAMP)
	$(BIN)/python -m fmi.models.assets

# Debian's Chromium, for the test that opens every report headless with the network cut off.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check fmi analyses tests scripts notebooks

typecheck: $(STAMP)
	$(BIN)/mypy fmi analyses

# The documentation site (mkdocs.yml): the pages in docs/ and the API reference generated from
# the docstrings, into site/. --strict: any warning (a broken link or anchor, an unresolved
# cross-reference) fails the build. NO_MKDOCS_2_WARNING silences Material's end-of-life notice.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

check: lint typecheck docs test

# Mutation testing of the metric, interval, fit-rule, retrieval and value functions against the
# fast unit tests (not part of make test). Prints the score. The last full run took 56 min on 2
# cores, with two torch threads per child; children now run one each (not re-timed in full).
mutation: $(STAMP)
	rm -rf mutants
	$(BIN)/python scripts/mutation.py

recall: $(STAMP)
	$(BIN)/fmi recall --model $(MODEL) --json reports/$(MODEL)/recall.json

analyses: $(STAMP)
	$(BIN)/fmi analyses --model $(MODEL)

compare: $(STAMP)
	$(BIN)/fmi compare --model $(MODEL)

edit: $(STAMP)
	$(BIN)/fmi edit --model $(MODEL) --json reports/$(MODEL)/edit-known-cf.json

capacity: $(STAMP)
	$(BIN)/fmi capacity --model $(MODEL) --json reports/$(MODEL)/capacity.json

bench: $(STAMP)
	$(BIN)/fmi bench --model $(MODEL) --json reports/$(MODEL)/bench.json

# The tutorial notebooks executed on MODEL (their FMI_MODEL; auto resolves as fmi.load_model
# does), the executed copies under reports/$(MODEL)/notebooks/; notebooks/ keeps no outputs.
notebooks: $(STAMP)
	$(BIN)/python scripts/run_notebooks.py --model $(MODEL) --out reports/$(MODEL)/notebooks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache site
