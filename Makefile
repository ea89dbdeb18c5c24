# vmlab: `make demo` and `make test` set up everything they need first
# (Debian packages as root, a .venv with vmlab installed editable).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup host venv test lint unit vm demo bench clean

setup: host venv

host:
	@bash scripts/setup-host.sh

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,ansible]'
	@touch $(STAMP)

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# Every test: lint, unit tests, then the real-VM tests (TCG here).
test: setup lint
	$(BIN)/pytest -q

unit: venv
	$(BIN)/pytest -q -m "not vm"

demo: setup
	@bash scripts/demo.sh

bench: setup
	$(BIN)/python bench/boot.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .vmlab
