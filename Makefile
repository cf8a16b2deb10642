# crm-intel: `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.installed-spark
DEMO_CUSTOMERS ?= 5000
DEMO_SEED ?= 42
DEV_PORT ?= 3000
export CRM_INTEL_WAREHOUSE ?= data/warehouse.duckdb
export CRM_INTEL_INBOX ?= data/inbox
EXPORTS ?= data/exports

.PHONY: venv demo test lint bench dev lock clean

venv: $(STAMP)

# Installs exactly the pinned lock (requirements.lock), then the project itself without deps.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: venv
	rm -rf $(CRM_INTEL_INBOX)
	$(BIN)/crm-intel demo-data --out $(CRM_INTEL_INBOX) --customers $(DEMO_CUSTOMERS) --seed $(DEMO_SEED)
	$(BIN)/crm-intel run --inbox $(CRM_INTEL_INBOX) --warehouse $(CRM_INTEL_WAREHOUSE)
	$(BIN)/crm-intel report --out $(EXPORTS)/report.html
	$(BIN)/crm-intel finance export --out $(EXPORTS)/risk.xlsx
	@echo "open $(EXPORTS)/report.html in a browser (pictures) and $(EXPORTS)/risk.xlsx in a spreadsheet (finance)"

# The tests also run the warehouse's SQL on local Spark: the `spark` extra (requirements-spark.lock,
# the same pins plus Spark, its Java runtime and SQLGlot) goes on top of the environment.
$(SPARK_STAMP): $(STAMP) requirements-spark.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements-spark.lock
	touch $(SPARK_STAMP)

test: $(SPARK_STAMP)
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: venv
	$(BIN)/python -m bench

# Dagster UI and daemon on the same definitions; state under data/.dagster. The nightly
# schedule, the inbox sensor and the failure alerts are on from the start.
dev: venv
	mkdir -p data/.dagster
	cp dagster.yaml data/.dagster/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/data/.dagster $(BIN)/dagster dev -m pipelines.definitions -p $(DEV_PORT)

# Re-resolve the pinned lock from pyproject.toml (needs network to PyPI).
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra notebooks --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra notebooks --extra spark --python-version 3.11 -c requirements.lock -o requirements-spark.lock

clean:
	rm -rf $(VENV) data/warehouse.duckdb data/published data/exports
