# One venv, built from scratch when pyproject.toml changes.
# torch: the CPU wheel by default. A GPU user picks a CUDA build, e.g.
#   make install TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
SWEEP ?= sweeps/quickstart.yaml

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install quickstart lint test bench clean mutate

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[dev]'
	# Build the C++ step loops now (cached per machine) rather than inside the first training trial.
	$(BIN)/python -c "from elm_core.step_kernels import cpu_kernel; cpu_kernel()"
	touch $(STAMP)

quickstart: install
	$(BIN)/orchestrator submit $(SWEEP)

# The habits CI keeps: ruff, the import contracts of DESIGN.md's arrows (pyproject [tool.importlinter]), mypy.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

# Mutation testing of the core modules ([tool.mutmut] in pyproject); slow, so not part of `test` or CI.
mutate: install
	nice -n 10 $(BIN)/mutmut run --max-children 1
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) build *.egg-info
