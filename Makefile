# novaflow's two entry points: `make demo` runs the whole job on the local stand-in,
# `make test` runs the linters and the test suite. Each installs what it needs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.novaflow-installed

.PHONY: demo test lint browser emulator install clean

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

# The report tests open report.html in a real browser: Debian's chromium, installed when missing
# (CI runs as root on a fresh machine; elsewhere the browser test is skipped and says why).
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "make: chromium could not be installed; the report's browser test will be skipped"

test: lint browser
	$(BIN)/python -m pytest -n 2 --dist loadfile

emulator: $(INSTALLED)
	$(BIN)/novaflow emulator

clean:
	rm -rf $(VENV) .novaflow .pytest_cache .ruff_cache
