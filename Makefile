# FIML Stream: everything a fresh machine needs comes from here.
#   make demo   set up, then `fiml up`: broker, topics, ingestion, arbitration, gateway and the
#               dashboard on http://127.0.0.1:8000/ (Ctrl-C stops everything)
#   make test   set up, fetch the broker, run every test (unit, integration, e2e)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The compiled arbitration core (native/arbcore, Rust through PyO3), built into the venv by
# maturin whenever its sources change; FIML_ARB_ENGINE=python runs the Python reference instead.
CORE   := $(VENV)/.arbcore-stamp
CORE_SRC := native/arbcore/Cargo.toml native/arbcore/Cargo.lock native/arbcore/pyproject.toml native/arbcore/build.rs \
            $(wildcard native/arbcore/src/*.rs)
JARS   := .fiml/kafka-4.1.1/lib/.complete
# The dashboard's chart library, from npm (gateway/static/package.json); no build step.
CHARTS := gateway/static/node_modules/lightweight-charts/package.json

.PHONY: setup broker chromium haproxy test test-unit lint demo bench bench-full soak stop clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11 or newer is needed: install it and run make again (PYTHON=python3.11 make ...)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(CHARTS): gateway/static/package.json
	@command -v npm >/dev/null || { echo "npm is needed for the dashboard's chart library: install Node.js (apt-get install nodejs npm)."; exit 1; }
	cd gateway/static && npm install --no-audit --no-fund --loglevel=error
	touch $(CHARTS)

# Without cargo, FIML_ARB_ENGINE=python skips the build (the stamp is not made: a later make
# with cargo builds it); otherwise one sentence says what is missing.
$(CORE): $(CORE_SRC) | $(STAMP)
	@if ! command -v cargo >/dev/null; then \
	  if [ "$$FIML_ARB_ENGINE" = python ]; then echo "No cargo: the compiled arbitration core is not built (FIML_ARB_ENGINE=python runs the Python reference)."; exit 0; fi; \
	  echo "The compiled arbitration core needs Rust's cargo: install it from https://rustup.rs and run make again (or set FIML_ARB_ENGINE=python to use the Python reference)."; exit 1; \
	fi; \
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --locked -m native/arbcore/Cargo.toml && touch $(CORE)

setup: $(STAMP) $(CHARTS) $(CORE)

# The browser test drives Debian's Chromium (browsers cannot be downloaded here).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The failover test puts Debian's HAProxy in front of two gateways (tests/e2e/test_failover.py).
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy)

$(JARS): infra/kafka/pom.xml | $(STAMP)
	$(BIN)/python -c 'from infra.broker import BrokerConfig, fetch_jars; fetch_jars(BrokerConfig().lib_dir)' || \
	  (echo "Fetching the Kafka jars failed; see the message above." && exit 1)

broker: $(JARS)

test: setup broker chromium haproxy
	$(BIN)/python -m pytest

test-unit: setup
	$(BIN)/python -m pytest tests/unit

lint: setup
	$(BIN)/ruff check agents gateway schemas infra fiml_stream tests examples bench native/arbcore/tests
	$(BIN)/ruff format --check agents gateway schemas infra fiml_stream tests examples bench native/arbcore/tests
	$(BIN)/mypy

# Benchmarks on the real local broker; results in bench/results/ (see docs/PERFORMANCE.md).
bench: setup broker
	$(BIN)/python -m bench.run

bench-full: setup broker
	$(BIN)/python -m bench.run --full

# Ten minutes of the pipeline under load with 1,000 clients: RSS growth and p99 over time.
soak: setup broker
	$(BIN)/python -m bench.soak --duration 600 --clients 1000

demo: setup broker
	$(BIN)/fiml up

stop:
	-$(BIN)/fiml kafka stop

clean: stop
	rm -rf $(VENV) .fiml .pytest_cache .mypy_cache .ruff_cache gateway/static/node_modules
