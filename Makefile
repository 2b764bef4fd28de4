# Every target creates (or reuses) the virtual env in .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv train test test-all test-slurm test-report-page bench report clean

help:  ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed  ## Create the virtual env and install the project (+ dev tools)

train: venv  ## Train HAL with the defaults (digits, case1), or with ARGS="dataset=svhn case=case4"
	$(PY) -m src.train $(ARGS)

test: venv  ## Run the fast test suite (CI runs it, then make test-slurm ARGS="-m slurm_ci")
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-all: venv  ## Run every test, the slow ones included
	$(PY) -m pytest -q $(ARGS)

test-slurm: venv  ## The SLURM suite on a one-node cluster it starts here (apt-installs SLURM if missing; needs root; 15-45 min)
	$(PY) -m pytest -m slurm -q tests/test_slurm.py tests/test_slurm_tune.py $(ARGS)

test-report-page: venv  ## report.html rendered in headless Chromium: figures load, tables there, no network (apt-installs Chromium if missing; needs root)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PY) -m pytest -q tests/report/test_report_page.py $(ARGS)

bench: venv  ## Run the benchmarks (parity, data pipeline, default run, memory, metrics, streaming, sweep); prints JSON
	$(PY) -m bench.parity $(ARGS)
	$(PY) -m bench.data
	$(PY) -m bench.default_run
	$(PY) -m bench.memory
	$(PY) -m bench.metrics
	$(PY) -m bench.stream
	$(PY) -m bench.sweep

report: venv  ## table.md, table.csv, the figures and report.html of the sweeps under outputs/sweeps, or ARGS="outputs/sweeps/table2_svhn"
	$(PY) -m src.report $(or $(ARGS),outputs/sweeps)

clean:  ## Remove run outputs (keeps the virtual env)
	rm -rf outputs/runs outputs/sweeps outputs/debug lightning_logs
