# The two commands of the README, plus the pieces they are made of.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

.PHONY: demo test install lint clean system-packages vendor-charts

## demo: install, then run the whole pipeline once on the embedded stack and print results
demo: $(BIN)/.installed
	$(BIN)/sigflow demo --once

## test: install, then run every test against real Apache Kafka and the ClickHouse engine
test: install lint
	$(BIN)/python -m pytest

install: $(BIN)/.installed system-packages

## system-packages: Debian tools the browser test and `sigflow bench api` need (idempotent)
system-packages:
	bash deploy/system-packages.sh

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis

## vendor-charts: re-fetch the dashboard's charting library from npm (see the script)
vendor-charts:
	bash api/static/vendor/fetch-lightweight-charts.sh
