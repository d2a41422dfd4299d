# Two commands do all set-up on a fresh machine with Python 3 and make:
#   make demo   run an example DAG (DAG=<name>, default openai_batch_chat) against the local emulator
#               (or against AIRFLOW_CONN_OPENAI_DEFAULT when set)
#   make test   lint, type-check and run every test (newest Airflow 3, then the unit tests on Airflow 3.1 and 3.2),
#               the docs build (mkdocs build --strict) included; its browser test needs Debian's chromium
#               (.ci/run installs it)
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
FLOOR_VENV := .venv-floor
AIRFLOW32_VENV := .venv-3.2
BENCH_VENV := .venv-bench
MUTATION_VENV := .venv-mutation
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: venv lint typecheck unit e2e test test-floor test-3.2 demo wheel bench mutate emulator constraints clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --python $(PYTHON)
	touch $@

venv: $(VENV)/.synced

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest -m "not e2e" -p no:cacheprovider

e2e: venv
	$(PY) -m pytest -m e2e -p no:cacheprovider

$(FLOOR_VENV)/.synced: $(UV) constraints/airflow-3.1.txt pyproject.toml
	$(UV) venv --allow-existing --python $(PYTHON) $(FLOOR_VENV)
	$(UV) pip sync --python $(FLOOR_VENV)/bin/python constraints/airflow-3.1.txt
	$(UV) pip install --python $(FLOOR_VENV)/bin/python --no-deps -e .
	touch $@

# The floor we declare (apache-airflow>=3.1) is a floor we test: every unit test that touches Airflow.
# tests/emulator is left out: the emulator never imports Airflow, and its SDK test needs a newer openai
# than resolves beside Airflow 3.1.0's dependencies.
test-floor: $(FLOOR_VENV)/.synced
	$(FLOOR_VENV)/bin/python -m pytest -m "not e2e and not slow" -p no:cacheprovider --ignore=tests/emulator

$(AIRFLOW32_VENV)/.synced: $(UV) constraints/airflow-3.2.txt pyproject.toml
	$(UV) venv --allow-existing --python $(PYTHON) $(AIRFLOW32_VENV)
	$(UV) pip sync --python $(AIRFLOW32_VENV)/bin/python constraints/airflow-3.2.txt
	$(UV) pip install --python $(AIRFLOW32_VENV)/bin/python --no-deps -e .
	touch $@

# Airflow 3.2, declared by apache-airflow>=3.1,<4, is tested too: the same unit tests as the floor, on the newest
# 3.2 resolved as of its release (an unconstrained install pulls fastapi/pydantic releases that break its API server).
test-3.2: $(AIRFLOW32_VENV)/.synced
	$(AIRFLOW32_VENV)/bin/python -m pytest -m "not e2e and not slow" -p no:cacheprovider --ignore=tests/emulator

test: lint typecheck
	$(PY) -m pytest -p no:cacheprovider
	$(MAKE) test-floor
	$(MAKE) test-3.2

# make demo DAG=openai_batch_mapped runs another example; a wrong name lists the choices.
DAG ?= openai_batch_chat
demo: venv
	$(PY) -m example_dags.demo $(DAG)

# The installable package (README: Install): dist/airflow_provider_openai_batch-<version>-py3-none-any.whl
wheel: $(UV)
	$(UV) build --wheel --out-dir dist

$(BENCH_VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) venv --allow-existing --python $(PYTHON) $(BENCH_VENV)
	UV_PROJECT_ENVIRONMENT=$(BENCH_VENV) $(UV) sync --locked --group bench --python $(PYTHON)
	touch $@

bench: $(BENCH_VENV)/.synced
	$(BENCH_VENV)/bin/python -m benchmarks.run

$(MUTATION_VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) venv --allow-existing --python $(PYTHON) $(MUTATION_VENV)
	UV_PROJECT_ENVIRONMENT=$(MUTATION_VENV) $(UV) sync --locked --group mutation --python $(PYTHON)
	touch $@

# Mutation testing of the modules that decide (mutation/plan.toml); slow, so not part of make test.
# MODULE=outcome runs one plan entry; MUTATE_JOBS=N runs N mutants at a time (default 2).
mutate: $(MUTATION_VENV)/.synced
	$(MUTATION_VENV)/bin/python -m mutation.run $(if $(MODULE),--module $(MODULE))

emulator: venv
	$(PY) -m airflow_provider_openai_batch.emulator --host 127.0.0.1 --port 8787

constraints: $(UV)
	$(UV) lock
	# Resolved as of the 3.1.0 release, as Airflow's own constraints files are.
	$(UV) pip compile --universal --python-version 3.10 --exclude-newer 2025-10-01 -q constraints/airflow-3.1.in -o constraints/airflow-3.1.txt
	# Resolved as of the 3.2.2 release (2026-05-29), the newest 3.2.
	$(UV) pip compile --universal --python-version 3.10 --exclude-newer 2026-05-30 -q constraints/airflow-3.2.in -o constraints/airflow-3.2.txt

clean:
	rm -rf $(VENV) $(FLOOR_VENV) $(AIRFLOW32_VENV) $(BENCH_VENV) $(MUTATION_VENV) .mutation $(TOOLS) .mypy_cache .ruff_cache
