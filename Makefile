# FIML Stream: everything a fresh machine needs comes from here.
#   make demo   start the local broker and the pipeline
#   make test   set up, fetch the broker, run every test (unit, integration, e2e)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JARS   := .fiml/kafka-4.1.1/lib/.complete

.PHONY: setup broker test test-unit lint demo stop clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11 or newer is needed: install it and run make again (PYTHON=python3.11 make ...)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

$(JARS): infra/kafka/pom.xml | $(STAMP)
	$(BIN)/python -c 'from infra.broker import BrokerConfig, fetch_jars; fetch_jars(BrokerConfig().lib_dir)' || \
	  (echo "Fetching the Kafka jars failed; see the message above." && exit 1)

broker: $(JARS)

test: setup broker
	$(BIN)/python -m pytest

test-unit: setup
	$(BIN)/python -m pytest tests/unit

lint: setup
	$(BIN)/ruff check agents gateway schemas infra tests
	$(BIN)/mypy

demo: setup broker
	$(BIN)/fiml kafka start
	$(BIN)/fiml topics create
	$(BIN)/fiml kafka status

stop:
	-$(BIN)/fiml kafka stop

clean: stop
	rm -rf $(VENV) .fiml .pytest_cache .mypy_cache .ruff_cache
