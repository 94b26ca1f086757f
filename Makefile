# scalinglab: two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
# Default test run: everything except tests marked slow (see pyproject.toml).
PYTEST_ARGS ?= -m "not slow"

# Accelerator extras (`make venv-tpu`, `make venv-cuda`) are recorded in .venv/.extras, and every
# sync installs all recorded extras, so a later `make venv` keeps them.
SYNC = "$(UV)" sync --frozen --python 3.11 $$(sed 's/^/--extra /' $(VENV)/.extras 2>/dev/null)

.PHONY: venv venv-tpu venv-cuda venv-ray demo demo-synthetic test test-all bench lint tensorboard readme clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@test -x "$(UV)" || $(PYTHON) -m pip install --quiet --user uv==0.13.9
	$(SYNC)
	@touch $@

# libtpu (TPU VMs, and `scalinglab aot` on any host) / CUDA 12 jax plugin / Ray (`--executor ray`), pinned in uv.lock.
venv-tpu venv-cuda venv-ray: venv
	@grep -qx $(@:venv-%=%) $(VENV)/.extras 2>/dev/null || echo $(@:venv-%=%) >> $(VENV)/.extras
	$(SYNC)
	@touch $(VENV)/.installed

demo: venv
	$(BIN)/scalinglab demo

demo-synthetic: venv
	$(BIN)/scalinglab demo --synthetic

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: venv
	$(BIN)/python -m pytest

# Benchmarks compare against reference implementations (PyTorch, scipy loops);
# torch is an optional extra installed only here, from the machine's CPU wheel via pip.
bench: venv
	$(BIN)/python -c "import torch" 2>/dev/null || $(PYTHON) -m pip --python $(BIN)/python install --quiet "torch==2.13.0"
	$(BIN)/scalinglab bench

# Lint and format check (ruff, pinned in the dev group; config in pyproject.toml [tool.ruff]).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# TensorBoard on the runs' tb/ event files, from the optional `tensorboard` extra: make tensorboard [LOGDIR=runs]
LOGDIR ?= runs
tensorboard: venv
	"$(UV)" run --frozen --python 3.11 --extra tensorboard tensorboard --logdir $(LOGDIR)

# README.md is assembled from docs/readme/*.md (each part owns its section).
README_PARTS := intro models data corpus train scaling critical_batch ladder executors accelerators reliability
readme:
	cat $(foreach p,$(README_PARTS),docs/readme/$(p).md) > README.md

clean:
	rm -rf $(VENV) .pytest_cache
