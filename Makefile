# Two commands do everything on a fresh machine (as root):
#   make demo   - pycni's main job: the seed article's Case 1 and Case 2, end to end
#   make test   - lint, type checks and the whole test suite (what CI runs)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint unit integration e2e bench bench-fabric clean

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/pycni demo

lint: setup
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q tests

unit: setup
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/pytest -q tests/integration

e2e: setup
	$(BIN)/pytest -q tests/e2e

bench: setup
	$(BIN)/python benchmarks/cni_bench.py --json benchmarks/last-run.json

bench-fabric: setup
	$(BIN)/python benchmarks/fabric_bench.py --nodes 30 --json benchmarks/last-fabric-run.json

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
