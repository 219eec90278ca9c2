# rewardsync developer targets. `make test` is what CI runs (.ci/run calls it).
PY     := .venv/bin/python
PYTEST := $(PY) -m pytest

.PHONY: demo setup contracts fmt lint typecheck test test-unit test-contracts test-pg test-e2e \
        test-faults test-slow soak bench all clean

setup:            ## one command on a fresh machine: .venv, anvil/solc/OpenZeppelin, PostgreSQL
	@bash scripts/setup.sh

demo: setup       ## a local chain, PostgreSQL and the daemon, live (Ctrl-C ends)
	.venv/bin/indexer demo

contracts: setup  ## compile contracts/ into abis/
	$(PY) scripts/compile_contracts.py

fmt: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: setup
	.venv/bin/mypy --strict indexer

test: setup lint typecheck  ## the default suite (no `slow` soaks), what CI runs
	$(PYTEST) -m "not slow" -q

test-unit: setup
	$(PYTEST) tests/unit -q

test-contracts: setup
	$(PYTEST) tests/contracts -q

test-pg: setup
	$(PYTEST) tests/integration -q

test-e2e: setup
	$(PYTEST) tests/e2e -q

test-faults: setup
	$(PYTEST) tests/faults -q -m "not slow"

test-slow: setup  ## long soaks (random kill loops), nightly or by hand
	$(PYTEST) -m slow -q

DURATION ?= 600
SEED ?= 20
soak: setup       ## everything at once: `make soak DURATION=3600 SEED=7` (nightly); JSON summary
	SOAK_SECONDS=$(DURATION) SOAK_SEED=$(SEED) $(PYTEST) tests/faults/test_soak_pusher.py -q -s

bench: setup
	$(PY) -m bench

all: test

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache .hypothesis
