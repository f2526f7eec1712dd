# paperwire: two commands. `make demo` runs the pipeline end to end; `make test` runs the tests.
# Each sets itself up on a fresh machine (virtual env, installs, the services it needs).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test venv lint clean browser screenshots

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/paperwire demo

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# Headless Chromium for the screenshot tests (Debian's package; nothing is downloaded by a test).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the screenshot tests will fail"

# The Airflow grid picture in the README comes from the dashboard test.
screenshots: $(STAMP) browser
	PAPERWIRE_SCREENSHOT_DIR=docs HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/integration/test_dashboard.py

venv: $(STAMP)

# torch is pinned to the CPU wheel first, so nothing pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check .

clean:
	rm -rf .state .pytest_cache
