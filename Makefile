# Quick start: `make demo` (install + end-to-end demo), `make test` (the test suite CI runs).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-quality test-wide test-policy test-load serve clean

install: $(STAMP)

# pinned by constraints.txt so that every machine gets the versions the tests ran with
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	# optimized bytecode for the service, which runs with PYTHONOPTIMIZE=1 (serving/launch.py says why)
	$(BIN)/python -O -m compileall -q -j 0 $(VENV)/lib > /dev/null
	touch $(STAMP)

demo: install
	$(BIN)/churn demo

test: install
	$(BIN)/pytest -m "not slow"

test-slow: install
	$(BIN)/pytest -m slow

# the quality bar on the demo's default data (20,000 customers through ingest and training): about 4 minutes
test-quality: install
	$(BIN)/pytest -m slow tests/model/test_behaviour.py

# a wide warehouse export (50,000 x 60, a 750-value category, id-like, free-text and constant columns) from ingest to scores: about 4 minutes
test-wide: install
	$(BIN)/pytest -m slow tests/e2e/test_wide_snapshot.py

# the policy benchmark end to end at 3,000 customers (two scenarios, two campaigns) and its JSON: under a minute
test-policy: install
	$(BIN)/pytest -m slow tests/model/test_policy_benchmark.py

# the service under load (concurrency 16, 60 s), 20,000 made-up paths, schemathesis --checks all on its OpenAPI spec: about 4 minutes
test-load: install
	$(BIN)/pytest -m load

serve: install
	$(BIN)/churn serve

clean:
	rm -rf data mlruns/mlflow.db mlruns/artifacts .pytest_cache
