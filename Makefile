# hub: `make demo` and `make test` are the two commands a new user needs (README.md).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HUB_HOME ?= $(CURDIR)/.hub
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: install demo test test-deps dev lint bench clean

# torch first, from the CPU wheel on this machine: installed later as a dependency, pip would pull
# gigabytes of CUDA wheels instead.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/hub demo

test: install lint test-deps
	$(BIN)/pytest -q

# What the suite needs beyond the venv: Debian's Chromium for tests/e2e/test_reports_chromium.py
# (installed when missing and we are root, as on CI; HUB_CHROMIUM names another binary) and the
# docker-compose validator venv for tests/integration/test_deploy.py.
test-deps: compose-validator
	@command -v $${HUB_CHROMIUM:-chromium} >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "tests need Chromium: sudo apt-get install -y chromium (or set HUB_CHROMIUM)" >&2; exit 1; fi; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

dev: install
	mkdir -p $(HUB_HOME)/dagster
	cp dagster.yaml $(HUB_HOME)/dagster/dagster.yaml
	DAGSTER_HOME=$(HUB_HOME)/dagster $(BIN)/dagster dev -w workspace.yaml

bench: install
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(HUB_HOME) .pytest_cache

# -- the production shape (README, "Going to production") ------------------------------------------
COMPOSE_VALIDATOR := build/compose-validator
PROD_HOME := $(HUB_HOME)/dagster-production

.PHONY: compose-validator compose-config docker-lock prod-home dev-production worker

# docker-compose v1 in a venv of its own, only to validate docker/compose.yaml (there is no Docker
# engine here). Its PyYAML 5.4.1 builds from source and needs Cython < 3; the project venv keeps
# PyYAML 6. tests/integration/test_deploy.py builds it on demand; .ci/run builds it first.
$(COMPOSE_VALIDATOR)/bin/docker-compose:
	rm -rf $(COMPOSE_VALIDATOR)
	$(PYTHON) -m venv $(COMPOSE_VALIDATOR)
	printf 'cython<3\n' > $(COMPOSE_VALIDATOR)/constraints.txt
	PIP_CONSTRAINT=$(CURDIR)/$(COMPOSE_VALIDATOR)/constraints.txt \
	  $(COMPOSE_VALIDATOR)/bin/pip install --quiet docker-compose==1.29.2
	$(COMPOSE_VALIDATOR)/bin/docker-compose version >/dev/null

compose-validator: $(COMPOSE_VALIDATOR)/bin/docker-compose

compose-config: compose-validator
	HUB_POSTGRES_PASSWORD=validate HUB_S3_ACCESS_KEY=validate HUB_S3_SECRET_KEY=validate \
	  $(COMPOSE_VALIDATOR)/bin/docker-compose -f docker/compose.yaml config --quiet

# Re-pin docker/requirements.txt after a dependency in pyproject.toml changes.
docker-lock: install
	$(BIN)/python docker/lock.py

# A DAGSTER_HOME holding the production instance (PostgreSQL: set DAGSTER_PG_* first).
prod-home:
	mkdir -p $(PROD_HOME)
	cp deploy/dagster/dagster.yaml $(PROD_HOME)/dagster.yaml
	@echo "export DAGSTER_HOME=$(PROD_HOME)"

dev-production: install prod-home
	DAGSTER_HOME=$(PROD_HOME) $(BIN)/dagster dev -w workspace.yaml

worker: install prod-home
	DAGSTER_HOME=$(PROD_HOME) $(BIN)/hub worker
