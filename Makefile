# Two commands matter: `make demo` and `make test`. The first run of either builds everything (scripts/setup_env.sh:
# .venv with pinned torch and ComfyUI requirements, a ComfyUI 0.3.75 tree in .runtime/); later runs skip that in seconds.
# COMFYUI_DIR=/path/to/ComfyUI VENV=.venv-other runs everything against another ComfyUI tree in its own environment.
VENV ?= .venv
export SODA_VENV := $(VENV)
PYTHON := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
MYPY := $(VENV)/bin/mypy

.PHONY: setup test demo lint format bench clean

setup:
	bash scripts/setup_env.sh

test: setup
	$(RUFF) check .
	$(RUFF) format --check .
	$(MYPY) soda_core
	$(PYTHON) -m pytest

demo: setup
	$(PYTHON) scripts/demo.py

lint: setup
	$(RUFF) check .
	$(RUFF) format --check .

format: setup
	$(RUFF) format .
	$(RUFF) check --fix .

bench: setup
	$(PYTHON) benchmarks/run.py
	$(PYTHON) benchmarks/overhead.py

clean:
	rm -rf outputs .runtime/demo-base
