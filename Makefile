# make train: set up .venv and run the quickstart (no download, CPU, minutes)
# make test:  set up .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install train test lint bench clean

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

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/datamodule_throughput.py

clean:
	rm -rf outputs multirun .pytest_cache
