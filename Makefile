# learnscore — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
# The test broker gets its own ports and state folder so it never meets a demo broker.
TEST_ENV := LEARNSCORE__STATE_DIR=.state-test LEARNSCORE__BROKER__PORT=19092 \
            LEARNSCORE__BROKER__CONTROLLER_PORT=19093 LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:19092 \
            LEARNSCORE__MLFLOW__UI_PORT=15000
PYTEST_ARGS ?=
# The tests start dozens of short-lived JVMs (Spark drivers, the Thrift server); on 2 cores their
# C2 compiler threads take CPU the tests need (the SASL_SSL pipeline test: 121 s, 108 s with C1
# only). The product's own runs (demo, stream, bench) keep the JVM's default JIT.
TEST_JVM := JAVA_TOOL_OPTIONS=-XX:TieredStopAtLevel=1
# Two test processes (a file stays on one): most long tests wait on brokers, streams and
# subprocesses, so two halve the wall time on 2 cores. PYTEST_WORKERS=0 runs them in one.
PYTEST_WORKERS ?= 2

.PHONY: install jars demo test soak check lint test-fast bench stack-up stack-down clean help

help:
	@echo "make demo    install, resolve jars, run the live demo (learnscore demo)"
	@echo "make test    install, resolve jars, start a test broker, run the tests (all but soak), stop it"
	@echo "make soak    the long soak runs (a 4,000-learner drift loop), same broker set-up"
	@echo "make check   the fast tier: ruff, import contracts, doctests, unit tests (no broker)"
	@echo "make bench   run the benchmarks; figures go to bench/results/"
	@echo "make clean   stop the local stack and remove all local state"

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "error: java not found; install Java 17+"; exit 1; }
	@command -v mvn >/dev/null || { echo "error: mvn not found; install Maven 3.8+"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

jars: install
	$(BIN)/learnscore jars

demo: jars
	$(BIN)/learnscore demo $(DEMO_ARGS)

stack-up: jars
	$(BIN)/learnscore stack up

stack-down:
	-$(BIN)/learnscore stack down

test: jars
	$(TEST_ENV) $(BIN)/learnscore stack up
	set -o pipefail; trap '$(TEST_ENV) $(BIN)/learnscore stack down' EXIT; \
	  $(TEST_ENV) $(TEST_JVM) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	    --durations=30 -m "not soak" $(PYTEST_ARGS)

# Soak runs: long versions of stories `make test` already checks (tests marked soak).
soak: jars
	$(TEST_ENV) $(BIN)/learnscore stack up
	set -o pipefail; trap '$(TEST_ENV) $(BIN)/learnscore stack down' EXIT; \
	  $(TEST_ENV) $(TEST_JVM) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=30 -m soak $(PYTEST_ARGS)

# The fast tier: lint, the import contracts (.ci/lint_imports.py), every >>> example, and the
# tests that need no broker, Spark job or MLflow store (a unit test asking for the broker fails).
PRODUCT_DIRS := learnscore core schemas model registry streaming batch serving monitoring bi simulator bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/python .ci/lint_imports.py
	$(BIN)/python -m pytest -q --doctest-modules $(PRODUCT_DIRS)

check: lint
	LEARNSCORE_TEST_TIER=unit $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not integration and not slow" $(PYTEST_ARGS)

test-fast: jars
	$(TEST_ENV) $(BIN)/learnscore stack up
	trap '$(TEST_ENV) $(BIN)/learnscore stack down' EXIT; \
	  $(TEST_ENV) $(TEST_JVM) $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The stream and serve benchmarks need the broker: started here, stopped afterwards.
bench: jars
	$(BIN)/learnscore stack up
	trap '$(BIN)/learnscore stack down' EXIT; $(BIN)/learnscore bench all

clean:
	-test -x $(BIN)/learnscore && $(BIN)/learnscore stack down
	-test -x $(BIN)/learnscore && $(TEST_ENV) $(BIN)/learnscore stack down
	rm -rf .state .state-test test-artifacts spark-warehouse metastore_db derby.log
