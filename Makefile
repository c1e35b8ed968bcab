# Two commands do everything on a fresh machine (as root):
#   make demo   - pycni's main job: the seed article's Cases 1 and 2, its Flannel and its Calico set-ups, end to end
#   make test   - lint, type checks and the whole test suite (what CI runs)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo pictures test lint unit integration e2e bench bench-fabric bench-calico bench-policy conformance reliability campaign-sigkill campaign-corruption campaign-fuzz campaign-properties campaign-concurrency campaign-soak campaign-restarts clean

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/pycni demo

# The README's pictures: the demo draws its Flannel and Calico clusters (pycni inspect --svg) before it tears them down.
pictures: setup
	PYCNI_DEMO_PICTURES=$(CURDIR)/docs/pictures $(BIN)/pycni demo

lint: setup
	$(BIN)/ruff check src tests examples benchmarks scripts
	$(BIN)/ruff format --check src tests examples benchmarks scripts
	$(BIN)/mypy

# The suite waits on kernels, etcd and BIRD more than it computes: four workers share the two cores,
# one test file per worker (a file's clusters and daemons are set up once). Tests marked serial
# (machine-wide state, timing) run alone afterwards. PYCNI_TEST_CPU=DIR records each test's CPU seconds.
# Files go to the workers slowest first (tests/file_durations.json, from scripts/file_durations.py).
PYTEST_WORKERS ?= 4

test: lint
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not serial" --durations=30 tests
	$(BIN)/pytest -q -m serial --durations=10 tests

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

bench-calico: setup
	$(BIN)/python benchmarks/calico_bench.py --nodes 30 --json benchmarks/last-calico-run.json

bench-policy: setup
	$(BIN)/python benchmarks/policy_bench.py --json benchmarks/last-policy-run.json

# The netpol e2e conformance matrix on real pods, every scenario on Calico and on Canal
# (make test runs every scenario on Calico and a sample on Canal).
conformance: setup
	PYCNI_NETPOL=all $(BIN)/pytest -q tests/integration/test_netpol_conformance.py

# The fault campaigns of RELIABILITY.md, in full (make test runs each with a small count).
# Each writes its report to reliability/last-<name>.json; all of them take about 2 hours here.
reliability: campaign-sigkill campaign-corruption campaign-fuzz campaign-concurrency campaign-soak campaign-restarts

campaign-sigkill: setup
	$(BIN)/python -m tests.campaigns.sigkill --kills 200 --seed 1 --json reliability/last-sigkill.json

campaign-corruption: setup
	$(BIN)/python -m tests.campaigns.corruption --rounds 3 --seed 9 --json reliability/last-corruption.json

campaign-fuzz: setup
	$(BIN)/python tests/campaigns/fuzz_plugins.py --count 1500 --seed 20261203 --jobs 2 --json reliability/last-fuzz.json

# The property tests with 2000 examples each (about an hour); make test runs 25.
campaign-properties: setup
	HYPOTHESIS_PROFILE=campaign $(BIN)/pytest -q tests/unit/test_spec_properties.py tests/unit/test_ipam_properties.py

campaign-concurrency: setup
	$(BIN)/python -m tests.campaigns.concurrency --adds 200 --pairs 50 --json reliability/last-concurrency.json

campaign-soak: setup
	$(BIN)/python -m tests.campaigns.soak --cycles 10000 --json reliability/last-soak.json

campaign-restarts: setup
	PYCNI_RESTARTS=20 $(BIN)/pytest -q -s tests/integration/test_daemon_restart.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
