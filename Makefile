# Every target creates (or reuses) the virtual env in .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The exact versions CI tested (`make lock` regenerates it); `make venv CONSTRAINTS=` resolves the ranges afresh.
CONSTRAINTS ?= constraints.txt
LOCK_VENV ?= .venv-lock
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv lock train test test-all test-slurm test-report-page bench report clean

help:  ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml setup.py src/data/jpeg_roi.c $(CONSTRAINTS)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	touch $@

venv: $(VENV)/.installed  ## Create the virtual env and install the project (+ dev tools) at the versions of constraints.txt

lock:  ## Regenerate constraints.txt: the newest versions pyproject.toml allows, in a fresh venv, kept only if the fast tests pass there
	rm -rf $(LOCK_VENV)
	python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	$(LOCK_VENV)/bin/python -m pytest -m "not slow" -q -p no:cacheprovider $(ARGS)
	echo "# The exact versions of a venv whose fast tests passed (make venv and CI install with them); make lock regenerates it." > constraints.txt.tmp
	$(LOCK_VENV)/bin/python -c "import platform; print('# Python', platform.python_version(), platform.machine())" >> constraints.txt.tmp
	$(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' >> constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf $(LOCK_VENV)

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

bench: venv  ## Run the benchmarks (parity, data pipeline, default run, start-up, memory, metrics, streaming, sweep); prints JSON
	$(PY) -m bench.parity $(ARGS)
	$(PY) -m bench.data
	$(PY) -m bench.default_run
	$(PY) -m bench.startup
	$(PY) -m bench.memory
	$(PY) -m bench.metrics
	$(PY) -m bench.stream
	$(PY) -m bench.sweep

report: venv  ## table.md, table.csv, the figures and report.html of the sweeps under outputs/sweeps, or ARGS="outputs/sweeps/table2_svhn"
	$(PY) -m src.report $(or $(ARGS),outputs/sweeps)

clean:  ## Remove run outputs (keeps the virtual env)
	rm -rf outputs/runs outputs/sweeps outputs/debug lightning_logs
