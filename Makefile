# Two commands matter: `make demo` and `make test`. The first run of either builds everything (scripts/setup_env.sh:
# .venv with pinned torch and ComfyUI requirements, a ComfyUI 0.3.75 tree in .runtime/); later runs skip that in seconds.
# COMFYUI_DIR=/path/to/ComfyUI VENV=.venv-other runs everything against another ComfyUI tree in its own environment.
VENV ?= .venv
export SODA_VENV := $(VENV)
PYTHON := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
MYPY := $(VENV)/bin/mypy

.PHONY: setup test soak demo lint format bench clean

setup:
	bash scripts/setup_env.sh

test: setup
	$(RUFF) check .
	$(RUFF) format --check .
	$(MYPY) soda_core
	$(PYTHON) -m pytest

# The long soak (tests/e2e/test_soak.py with SODA_SOAK=long): 100 mixed prompts through the real server, each
# re-run alone on a fresh server and compared bit for bit, resident memory within 10 %. `make test` runs its short
# form (27 prompts, memory recorded) and its quick part (tests/e2e/test_soak_quick.py).
soak: setup
	SODA_SOAK=long $(PYTHON) -m pytest tests/e2e/test_soak.py -q

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
