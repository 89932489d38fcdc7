# Each target is idempotent: it creates .venv when missing and (re)installs the package only when
# setup.cfg or pyproject.toml changed since the last install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test test-fast tensorboard benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python scripts/train.py $(ARGS)

# The contract: every test, the slow ones (real subprocess runs: DDP, signals, resume) included,
# spread over one worker per core (pytest-xdist).
test: $(STAMP)
	$(BIN)/python -m pytest -n auto $(ARGS)

# For development: the same suite without the slow tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n auto -m "not slow" $(ARGS)

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir logs --host 127.0.0.1 --samples_per_plugin images=100

benchmark: $(STAMP)
	$(BIN)/python -m benchmarks.training $(ARGS)

clean:
	rm -rf logs lightning_logs benchmark_results .pytest_cache *.egg-info
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
