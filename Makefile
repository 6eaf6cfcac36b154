# Two entry points, each doing its own set-up in .venv: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data

.PHONY: install demo test clean

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

clean:
	rm -rf $(VENV) build *.egg-info
