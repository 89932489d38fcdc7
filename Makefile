# Each target is idempotent: it creates .venv when missing and (re)installs the package only when
# setup.cfg or pyproject.toml changed since the last install. `make train` installs what training
# needs; `make test` adds the dev extra (test tools, linters, the tune and export extras).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# The torch the project is tested with (CI pins the same); the CPU indexes serve it as 2.13.0+cpu.
TORCH_VERSION ?= 2.13.0
LINT_PATHS := linreg_pl tests scripts benchmarks

.PHONY: train test test-fast lint tensorboard benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch goes in before the package: for the bare `torch` requirement pip takes the default index's
# build, on Linux the CUDA one (6.2 GB with its libraries, where the CPU build is 1.7 GB). Without
# nvidia-smi (no NVIDIA GPU) the CPU build of TORCH_VERSION comes from PyTorch's CPU index when it
# answers, and from the default index otherwise (an offline mirror that holds the CPU build; pinned,
# since a newer release there may be the CUDA one). A torch already installed (CI's) stays.
$(VENV)/.torch: | $(BIN)/python
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "torch $$($(BIN)/python -c 'import torch; print(torch.__version__)') already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		echo "NVIDIA GPU: torch from the default index"; \
	elif $(BIN)/python -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=10)" \
			2>/dev/null; then \
		echo "no NVIDIA GPU: CPU build of torch $(TORCH_VERSION) from $(TORCH_CPU_INDEX)"; \
		$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION) --index-url $(TORCH_CPU_INDEX); \
	else \
		echo "no NVIDIA GPU, $(TORCH_CPU_INDEX) unreachable: torch $(TORCH_VERSION) from the default index"; \
		$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION); \
	fi
	touch $@

$(VENV)/.installed-train: $(VENV)/.torch setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.torch setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

train: $(VENV)/.installed-train
	$(BIN)/python scripts/train.py $(ARGS)

# The contract: every test, the slow ones (real processes: DDP, signals, kill and resume; full training
# runs of several seconds) included,
# spread over one worker per core (pytest-xdist).
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n auto $(ARGS)

# For development: the same suite without the slow tests (setup.cfg's marker), about 2 minutes.
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n auto -m "not slow" $(ARGS)

# What CI checks before the tests (pre-commit also checks the formatting: ruff format --check).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check $(LINT_PATHS)

tensorboard: $(VENV)/.installed-train
	$(BIN)/tensorboard --logdir logs --host 127.0.0.1 --samples_per_plugin images=100

benchmark: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.training $(ARGS)

clean:
	rm -rf logs lightning_logs benchmark_results .pytest_cache *.egg-info
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
