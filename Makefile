# Two entry points for a fresh machine: `make demo` and `make test`. Both create the
# virtual environment themselves (Python 3.11, as TensorFlow 2.21 and the pins require).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   ?= work-demo

.PHONY: demo test lint venv clean bench system-deps

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(wildcard runtime/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' $(if $(wildcard runtime/pyproject.toml),-e ./runtime)
	touch $@

system-deps:
	bash scripts/system-deps.sh

demo: venv system-deps
	$(BIN)/python -m splitter.demo --workdir $(DEMO)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint system-deps
	$(BIN)/pytest

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
