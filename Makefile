# Two commands do everything on a fresh machine (Python 3.11, nothing installed):
#   make demo   set up .venv and run the main job on the embedded phantom
#   make test   set up .venv and pass the tests, the CI regression gate among them
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The gate keeps the default phantom here between runs (its MLflow store is fresh each time),
# never in the user's cache or ./mlflow.db.
CI_DIR := .ci-work

.PHONY: venv demo test test-fast gate bench bench-full-size lint clean tracking-server

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

demo: venv
	$(BIN)/lumbar-bench run --approach prior
	$(BIN)/lumbar-bench run --approach resnet18
	$(BIN)/lumbar-bench leaderboard --subset full

# The CI gate runs inside the tests (tests/gate/test_gate.py): each ci configuration trains once, and the
# smoke, stage-reuse and break tests read the gate's runs. Its table closes the pytest output.
test: venv
	$(BIN)/python -m pytest -m "not gpu" -q --durations=10

test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

# The gate alone, from the command line (make test runs it too). Only the phantom is kept from last time.
gate: venv
	mkdir -p $(CI_DIR)/cache; find $(CI_DIR)/cache -mindepth 1 -maxdepth 1 ! -name 'phantom-*' -exec rm -rf {} +
	rm -f $(CI_DIR)/mlflow.db; rm -rf $(CI_DIR)/mlartifacts
	$(BIN)/lumbar-bench --no-progress check baselines/ci.json \
		--tracking-uri sqlite:///$(CI_DIR)/mlflow.db --cache-dir $(CI_DIR)/cache

# The first run on a machine has nothing to compare with and only saves (benchmarks/conftest.py);
# results/benchmarks.md is rewritten even when a comparison fails, then the failure is reported.
bench: venv
	$(BIN)/python -m pytest benchmarks -q --benchmark-autosave --benchmark-compare --benchmark-compare-fail=min:75% \
		--benchmark-columns=mean,stddev,rounds; status=$$?; \
	$(BIN)/python benchmarks/report.py && exit $$status

# The ingest benchmark at a realistic size (the real training set: 1975 studies at 512 px; the
# defaults of `make bench` are 40 at 384). Saved apart (.benchmarks/full-size), so `make bench`
# never compares with it; the report lists the largest saved run.
STUDIES ?= 1975
SIZE    ?= 512
bench-full-size: venv
	$(BIN)/python -m pytest benchmarks/test_bench_ingest.py -q -k workers --benchmark-autosave \
		--benchmark-storage .benchmarks/full-size --ingest-studies $(STUDIES) --ingest-size $(SIZE); \
	status=$$?; $(BIN)/python benchmarks/report.py && exit $$status

# A shared MLflow server for several processes, machines or people: PostgreSQL + mlflow server on
# 127.0.0.1, data in .tracking-server/ (kept between starts). Prints the --tracking-uri; Ctrl-C stops it.
tracking-server: venv
	scripts/tracking-server

lint: venv
	$(BIN)/ruff check lumbar_bench tests benchmarks scripts
	$(BIN)/ruff format --check lumbar_bench tests benchmarks scripts

clean:
	rm -rf $(VENV) $(CI_DIR) .pytest_cache .ruff_cache .benchmarks mlflow.db
