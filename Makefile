# Uptake: `make demo` to see it work, `make test` to prove it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9
# pytest-xdist workers: 8 on 2 cores. Much of the suite waits on timers: 5 left a third of
# the CPU idle; fresh clones ran pytest in 561-582 s with 7 and 537-543 s with 8 (each test
# slower, more of them at once), and in 360-380 s once the shared fixtures were shared. TEST_WORKERS=0 runs it serially. Each worker picks server
# ports from a range of its own (tests/conftest.py). UPTAKE_TEST_CPU=<file> writes each
# test's CPU seconds, worker and times, to see where the time goes. --no-loadscope-reorder:
# xdist hands out the work in tests/conftest.py's order (whole-system runs and shared-fixture
# groups first), not biggest group first (which started `uptake demo` three minutes in).
TEST_WORKERS ?= 8
# The suite starts some hundred Python processes (services, CLIs, workers): with
# PYTHONDONTWRITEBYTECODE set (as on CI machines), each compiled every module it imported
# from source again (a service's imports: 2.5 s of CPU instead of 1). Tests and
# benchmarks write the bytecode caches (__pycache__, git-ignored) whatever the shell says.
CACHE_BYTECODE := PYTHONDONTWRITEBYTECODE=

.PHONY: install tools demo run test lint typecheck bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

install: $(UV) ## create .venv and install the locked dependencies
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --quiet

# Debian tools the checks use: docker-compose (validates docker-compose.yml), wrk (bench),
# chromium (the console's browser tests drive it with Playwright; never `playwright install`)
tools:
	@command -v docker-compose >/dev/null && command -v wrk >/dev/null && command -v chromium >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose wrk chromium >/dev/null; }

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
	$(CACHE_BYTECODE) $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=25

bench: install tools ## benchmarks: prints figures and ratios (not a test)
	$(CACHE_BYTECODE) $(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
