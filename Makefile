# All targets create and use ./.venv, so a fresh clone needs nothing but python3 (3.11+).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install proto proto-check docs docs-check lint typecheck test test-unit test-integration test-e2e demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

proto: install
	$(BIN)/python scripts/gen_proto.py

proto-check: install
	$(BIN)/python scripts/gen_proto.py --check

docs: install
	$(BIN)/python scripts/gen_config_docs.py

docs-check: install
	$(BIN)/python scripts/gen_config_docs.py --check

lint: install
	$(BIN)/ruff check src tests bench scripts examples
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy

test: install proto-check docs-check lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

test-integration: install
	$(BIN)/python -m pytest -q tests/integration

test-e2e: install
	$(BIN)/python -m pytest -q tests/e2e

demo: install
	$(BIN)/python examples/demo.py

bench: install
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) dtf-data .pytest_cache .mypy_cache .ruff_cache
