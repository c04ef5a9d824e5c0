# Uptake: `make demo` to see it work, `make test` to prove it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9

.PHONY: install tools demo run test lint typecheck bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

install: $(UV) ## create .venv and install the locked dependencies
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --quiet

# Debian tools the checks use: docker-compose (validates docker-compose.yml), wrk (bench)
tools:
	@command -v docker-compose >/dev/null && command -v wrk >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose wrk >/dev/null; }

demo: install ## the whole system with ~90 days of simulated usage
	$(BIN)/uptake demo

run: install ## the whole system, no demo data
	$(BIN)/uptake run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install tools lint typecheck ## lint, types, and the whole suite
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install tools ## benchmarks: prints figures and ratios (not a test)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
