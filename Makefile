# anfang: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= cloud,edge,imaging,dev

.PHONY: help venv test lint typecheck pytest demo bench schemas clean

help:
	@echo "make demo     run the whole system locally (sets up .venv)"
	@echo "make test     lint, type-check and run every test (sets up .venv)"
	@echo "make bench    run the benchmarks, write bench/results.json"
	@echo "make schemas  regenerate schemas/ from the models"

venv: $(STAMP)

# Reinstall when the project metadata changes; the install is editable, so code edits need nothing.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

demo: $(STAMP)
	@echo "anfang: the local demo is not built yet; it arrives with the local-stack issue."
	@echo "The environment is ready in $(VENV); run 'make test' to check it."

bench: $(STAMP)
	mkdir -p bench
	$(BIN)/pytest -q tests/bench --benchmark-only --benchmark-json=bench/results.json -p no:randomly
	$(BIN)/python -m tests.bench.report bench/results.json

schemas: $(STAMP)
	$(BIN)/python -m anfang.schemas schemas

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
