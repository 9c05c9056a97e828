# The two commands: `make run` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup run test test-slow lint typecheck soak bench bench-quick clean down

setup:
	@bash scripts/setup-venv.sh

run: setup
	@$(PY) -m meshctl run

down: setup
	@$(PY) -m meshctl down

# Two pytest workers (one per core of the 2-core CI box); a worker takes whole files, so each
# module's mesh fixture starts once. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

test: setup lint
	@$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

lint: setup typecheck
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/lint-imports --no-cache

# mypy on the shared contracts and the control plane (config: [tool.mypy] in pyproject.toml).
typecheck: setup
	@$(VENV)/bin/mypy data_plane/contracts control_plane

# Slow suites: outside the default test run, one command each.
test-slow: setup
	@$(PY) -m pytest -q -p no:cacheprovider -m slow --deselect tests/integration/test_soak.py

soak: setup
	@$(PY) -m pytest -q -m slow tests -k soak

bench: setup
	@$(PY) -m bench.run_all

bench-quick: setup
	@$(PY) -m bench.run_all --quick

clean:
	rm -rf .mesh .pytest_cache build *.egg-info
