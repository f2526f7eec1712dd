# paperwire: two commands. `make demo` runs the pipeline end to end; `make test` runs the tests.
# Each sets itself up on a fresh machine (virtual env, installs, the services it needs).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo demo-serve test venv lint clean browser screenshots screenshot chaos chaos-short fuzz bench

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/paperwire demo

# The demo, then its emails' links (unsubscribe, more / less like this) served until Ctrl-C;
# the next `make demo` shows what the clicks changed.
demo-serve: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/paperwire demo --serve

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# Fault injection, long mode: >= 500 papers x >= 200 profiles, >= 200 faults; its last line is
# "faults=N expected=M lost=L duplicated=D" (make test runs the short mode, tests/chaos/test_chaos.py).
# The short chaos run as a test, on its own (make test runs it with the rest).
chaos-short: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/chaos/test_chaos.py

chaos: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m tests.chaos.driver --mode long $(CHAOS_ARGS)

# Fuzzing, long mode: 2,500 hypothesis examples per target, over 10,000 in all (make test runs 200 each).
fuzz: $(STAMP)
	PAPERWIRE_FUZZ=long $(BIN)/python -m pytest -q -p no:cacheprovider --hypothesis-show-statistics tests/fuzz

# Headless Chromium for the screenshot tests (Debian's package; nothing is downloaded by a test).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the screenshot tests will fail"

# The Airflow grid picture in the README comes from the dashboard test.
screenshots: $(STAMP) browser
	PAPERWIRE_SCREENSHOT_DIR=docs HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/integration/test_dashboard.py

# The digest picture in the README: the sample feed -> `paperwire match` -> `paperwire alerts render`
# (no services needed), then headless Chromium at desktop (640 px) and phone (380 px) widths.
SHOT := .state/screenshot
screenshot: $(STAMP) browser
	@command -v chromium >/dev/null || { echo "chromium is required (apt-get install -y chromium)"; exit 1; }
	rm -rf $(SHOT) && mkdir -p $(SHOT)
	$(BIN)/paperwire feeds parse demo/sample-arxiv.xml > $(SHOT)/papers.jsonl
	HF_HUB_OFFLINE=1 $(BIN)/paperwire match --profiles profiles --papers $(SHOT)/papers.jsonl > $(SHOT)/matches.jsonl
	$(BIN)/paperwire alerts render --profile profiles/rosalind.yaml --matches $(SHOT)/matches.jsonl \
	  --papers $(SHOT)/papers.jsonl --out $(SHOT)/out
	for size in 640,1400:docs/email-digest.png 380,1400:docs/email-digest-phone.png; do \
	  profile=$$(mktemp -d) && \
	  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	    --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
	    --user-data-dir=$$profile --window-size=$${size%%:*} --screenshot=$${size#*:} \
	    "file://$(CURDIR)/$(SHOT)/out/rosalind.html" 2>/dev/null; \
	  status=$$?; rm -rf $$profile; test $$status -eq 0 || exit $$status; \
	done
	@echo "wrote docs/email-digest.png and docs/email-digest-phone.png from $(SHOT)/out/rosalind.eml"

# Benchmarks of issue 6: bench/results/<timestamp>.json, and the same JSON as the last line printed.
bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.run $(BENCH_ARGS)

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
