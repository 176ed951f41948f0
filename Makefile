# make train: set up .venv and run the quickstart (no download, CPU, minutes)
# make test:  set up .venv and run the test suite
# make parity: FID / KID / features against torch-fidelity (its own environment, .venv-parity)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install train test parity lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -e ".[dev]" -c constraints.txt
	touch $@

install: $(VENV)/.installed

train: install
	$(BIN)/python train.py experiment=quickstart

test: install
	$(BIN)/python -m pytest

# make parity: our FID/KID/features against torch-fidelity's, in a separate environment
# (torch 2.14.1 + torchvision + torch-fidelity: torchvision cannot be imported next to the CPU
# torch of .venv). The first run installs it (about 5 minutes, 5.5 GB).
PARITY := .venv-parity
$(PARITY)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PARITY)
	$(PARITY)/bin/pip install torch==2.14.1 torchvision==0.29.1 torch-fidelity==0.4.0
	$(PARITY)/bin/pip install -e ".[dev]"
	touch $@

parity: $(PARITY)/.installed
	$(PARITY)/bin/python -m pytest -m parity tests/test_parity.py -rs -s

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/datamodule_throughput.py

clean:
	rm -rf outputs multirun .pytest_cache
