# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment from pyproject.toml first, when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo serve test test-fast lint schema schema-check clean

$(BIN)/billing-gateway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/billing-gateway  ## the gateway over its sandbox upstreams, GraphiQL at :8000
	$(BIN)/billing-gateway demo

serve: $(BIN)/billing-gateway  ## the gateway against the upstreams configured by GATEWAY_*
	$(BIN)/billing-gateway serve

test: $(BIN)/billing-gateway  ## the whole test suite
	$(BIN)/pytest

test-fast: $(BIN)/billing-gateway  ## the inner loop: every test but the slow ones
	$(BIN)/pytest -m "not slow"

lint: $(BIN)/billing-gateway  ## ruff and mypy --strict, as CI runs them
	$(BIN)/ruff check gateway tests bench scripts
	$(BIN)/ruff format --check gateway tests bench scripts
	$(BIN)/mypy --strict gateway tests

schema: $(BIN)/billing-gateway  ## regenerate schema.graphql from the code
	$(BIN)/billing-gateway export-schema --output schema.graphql

schema-check: $(BIN)/billing-gateway  ## fail on undeclared breaking changes since schema.released.graphql
	$(BIN)/billing-gateway check-schema

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
