# One set of commands for people and CI. `make help` lists them.
PYTHON ?= python3
TEST_WORKERS ?= 2
VENV   := .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help run test lint format check bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed ## Serve API + workers embedded (SQLite) on 127.0.0.1:4000, with the examples
	$(BIN)/apphub serve --defs examples.directory_insights

test: $(VENV)/.installed-dev ## Run the tests in TEST_WORKERS processes (SQLite always; PostgreSQL + Redis when they answer)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

lint: $(VENV)/.installed-dev ## ruff and mypy (strict)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

format: $(VENV)/.installed-dev ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests bench examples
	$(BIN)/ruff format src tests bench examples

check: lint test ## lint, then test

bench: $(VENV)/.installed-dev ## Print the benchmarks' figures (PostgreSQL + Redis parts need them running)
	$(BIN)/python -m bench.orchestration
	$(BIN)/python -m bench.materializer
	$(BIN)/python -m bench.triggers

clean: ## Remove the virtualenv and caches (keeps .apphub data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
