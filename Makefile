# Panopticon: `make run` (the whole system on the local Kafka + OpenSearch, with traffic) and `make test`.
# The local stack needs Java >= 17 and Maven (devtools/stack.py fetches Kafka and OpenSearch from Maven Central once).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench lint clean install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m panopticon.devtools.run

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

test-fast: $(STAMP)  # the tests that start no server (no local stack): about half a minute
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration" tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check panopticon/*.py common engine api bridge devtools ingest tests benchmarks
	$(BIN)/mypy panopticon

clean:
	rm -rf $(VENV) .stack build *.egg-info
