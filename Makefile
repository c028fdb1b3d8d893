# `make demo` and `make test` set up their own virtual environment first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch==2.13.0 first: it is the CPU build on this machine's disk; the project's
# range (<2.14) then keeps pip from pulling a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[all,dev]"
	# pytorch-fid's reference Frechet distance, for a test; without its torchvision dependency
	$(BIN)/pip install -q --no-deps pytorch-fid==0.3.0
	touch $(STAMP)

demo: setup
	$(BIN)/edgegen run lm-tiny --out runs/lm-tiny

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python benchmarks/recipes.py
	$(BIN)/python benchmarks/harness.py

clean:
	rm -rf $(VENV) runs build dist *.egg-info
