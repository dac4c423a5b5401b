# novaflow's two entry points: `make demo` runs the whole job on the local stand-in,
# `make test` runs the linters and the test suite. Each installs what it needs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.novaflow-installed

.PHONY: demo test lint emulator install clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/novaflow demo

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile

emulator: $(INSTALLED)
	$(BIN)/novaflow emulator

clean:
	rm -rf $(VENV) .novaflow .pytest_cache .ruff_cache
