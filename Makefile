# Two entry points, each doing its own set-up in .venv: `make demo` (the main job) and `make test`.
# `make test-transformers4` runs the same suite in .venv-transformers4, against transformers 4.57.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
VENV4 := .venv-transformers4

.PHONY: install demo test test-transformers4 clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned to the CPU build on this machine's disk; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	VANILLA_TRANSFORMER_DATA=$(DATA) $(BIN)/vanilla-transformer demo $(ARGS)

test: install
	VANILLA_TRANSFORMER_DATA=$(DATA) $(BIN)/python -m pytest -q

$(VENV4)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV4)
	$(VENV4)/bin/pip install --quiet --upgrade pip
	$(VENV4)/bin/pip install --quiet torch==2.13.0
	$(VENV4)/bin/pip install --quiet "transformers==4.57.*" -e ".[dev]"
	touch $@

test-transformers4: $(VENV4)/.installed
	VANILLA_TRANSFORMER_DATA=$(DATA) $(VENV4)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) $(VENV4) build *.egg-info
