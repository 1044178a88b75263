# Everything a newcomer needs: `make run` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck check bench bench-quick soak clean

help:
	@echo "make run          start mana-ai on its embedded database (http://127.0.0.1:3067)"
	@echo "make test         run the whole test suite (embedded Postgres, fake LLM; no network)"
	@echo "make check        lint + typecheck + tests (the CI gate)"
	@echo "make bench        run the benchmarks, write bench/results.json and bench/*.png"
	@echo "make bench-quick  a short benchmark run for development"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mana-ai serve

SYSDEPS := $(VENV)/.system-deps

$(SYSDEPS): scripts/system-deps.sh
	bash scripts/system-deps.sh
	touch $(SYSDEPS)

test: $(STAMP) $(SYSDEPS)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
