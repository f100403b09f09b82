# Two commands do everything on a fresh machine (Python 3.11, nothing installed):
#   make demo   set up .venv and run the main job on the embedded phantom
#   make test   set up .venv and pass the tests and the CI regression gate
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Tests and the gate write MLflow runs here, never into the user's ./mlflow.db.
CI_DIR := .ci-work

.PHONY: venv demo test test-fast gate bench lint clean

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

test: venv
	$(BIN)/python -m pytest -m "not gpu" -q
	$(MAKE) gate

test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

gate: venv
	rm -rf $(CI_DIR); mkdir -p $(CI_DIR)
	$(BIN)/lumbar-bench --no-progress check baselines/ci.json \
		--tracking-uri sqlite:///$(CI_DIR)/mlflow.db --cache-dir $(CI_DIR)/cache

# The first run on a machine has nothing to compare with and only saves (benchmarks/conftest.py);
# results/benchmarks.md is rewritten even when a comparison fails, then the failure is reported.
bench: venv
	$(BIN)/python -m pytest benchmarks -q --benchmark-autosave --benchmark-compare --benchmark-compare-fail=min:75% \
		--benchmark-columns=mean,stddev,rounds; status=$$?; \
	$(BIN)/python benchmarks/report.py && exit $$status

lint: venv
	$(BIN)/ruff check lumbar_bench tests benchmarks
	$(BIN)/ruff format --check lumbar_bench tests benchmarks

clean:
	rm -rf $(VENV) $(CI_DIR) .pytest_cache .ruff_cache .benchmarks mlflow.db
