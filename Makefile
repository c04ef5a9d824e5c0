# Uptake: `make demo` to see it work, `make test` to prove it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9

.PHONY: install demo run test lint typecheck unit bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

install: $(UV) ## create .venv and install the locked dependencies
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --quiet

demo: install ## the whole system with ~90 days of simulated usage
	$(BIN)/uptake demo

run: install ## the whole system, no demo data
	$(BIN)/uptake run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install lint typecheck ## lint, types, and the whole suite
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install ## benchmarks: prints figures and ratios (not a test)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
