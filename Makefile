# The one entry point for people and CI (ADR 0008).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help run test test-quick test-full lint fmt bench clean venv

help:
	@echo "make run        set up and run the demo: the daemon against a simulated Jupyter server"
	@echo "make test       set up and run the test suite"
	@echo "make test-quick unit, provider and CLI tests with small property-test sizes (the edit-test loop)"
	@echo "make test-full  the test suite at the sizes of reference/reliability.md (slow)"
	@echo "make lint       ruff, mypy --strict, hadolint (Dockerfile), systemd-analyze (unit)"
	@echo "make bench      benchmarks against loopback fake servers"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/janitor demo

test: $(STAMP)
	$(BIN)/pytest

test-quick: $(STAMP)
	JANITOR_TEST_QUICK=1 $(BIN)/pytest -q -x -p no:randomly tests/unit tests/providers tests/cli

test-full: $(STAMP)
	JANITOR_TEST_FULL=1 $(BIN)/pytest -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check janitor tests benchmarks migrations
	$(BIN)/ruff format --check janitor tests benchmarks migrations
	$(BIN)/mypy --strict janitor
	$(BIN)/hadolint Dockerfile
	scripts/verify-unit

fmt: $(STAMP)
	$(BIN)/ruff check --fix janitor tests benchmarks migrations
	$(BIN)/ruff format janitor tests benchmarks migrations

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .janitor-demo
