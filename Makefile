# The one entry point for people and CI (ADR 0008).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help run test test-quick test-full lint fmt bench clean venv mutants

help:
	@echo "make run        set up and run the demo: the daemon against a simulated Jupyter server"
	@echo "make test       set up and run the test suite"
	@echo "make test-quick unit, provider and CLI tests with small property-test sizes (the edit-test loop)"
	@echo "make test-full  the test suite at the sizes of reference/reliability.md (slow)"
	@echo "make lint       ruff, mypy --strict, hadolint (Dockerfile), systemd-analyze (unit)"
	@echo "make bench      benchmarks against loopback fake servers"
	@echo "make mutants    mutation testing of the safety code, printing the survivors (slow, not in CI)"

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

# Mutation testing (docs/mutation-testing.md). The files are named in [tool.mutmut] of
# pyproject.toml; MUTANTS_SCOPE picks the functions whose mutants are run: the guards, the
# decision engine and plan, the action path (pause checks, intent, re-check, lease, reconcile,
# settling, native warnings), the guard
# wiring of the sweep and the pause and lease stores. `make mutants MUTANTS_SCOPE=` runs every
# mutant of those files (several hours on a shared 2-core machine).
MUTANTS_JOBS  ?= 2
MUTANTS_SCOPE ?= 'janitor.guards.*' 'janitor.plan.*' 'janitor.providers.kit.*' \
	'janitor.reconcile.*' \
	'janitor.policy.engine.x_decide__*' 'janitor.policy.engine.x__stage__*' \
	'janitor.policy.engine.x_evaluate__*' 'janitor.policy.engine.x_consents__*' \
	'janitor.policy.engine.x_exempt_reason__*' 'janitor.policy.engine.x__exempt_reason__*' \
	'janitor.policy.engine.x_ordered__*' 'janitor.policy.engine.x__naive__*' \
	'janitor.policy.engine.x__decide_matched__*' \
	'janitor.actions.x_execute__*' 'janitor.actions.x_may_start__*' \
	'janitor.actions.x_write_intent__*' 'janitor.actions.x_lease_lost__*' \
	'janitor.actions.x__recheck__*' 'janitor.actions.x_describe_change__*' \
	'janitor.actions.x_call__*' 'janitor.actions.x__error_outcome__*' \
	'janitor.actions.x_receipt_outcome__*' 'janitor.actions.x_close__*' \
	'janitor.context.x_pause_reason__*' \
	'janitor.context.x?LeaseKeeper?ensure__*' 'janitor.context.x?PolicyCache?current__*' \
	'janitor.warning.x__native_warn__*' 'janitor.warning.x_withdraw_all__*' \
	'janitor.warning.x__withdraw__*' 'janitor.warning.x__deliver__*' \
	'janitor.sweep.x__may_proceed__*' 'janitor.sweep.x__act_all__*' \
	'janitor.sweep.x__decision_rows__*' \
	'janitor.store.state.x?PauseStore?get__*' 'janitor.store.state.x?PauseStore?set__*' \
	'janitor.store.state.x?LeaseStore?*'

mutants: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,mutants]'
	rm -rf mutants
	PATH="$(abspath $(BIN)):$$PATH" JANITOR_REQUIRE_POSTGRES=0 \
		nice -n 10 $(BIN)/mutmut run --max-children $(MUTANTS_JOBS) $(MUTANTS_SCOPE) \
		> mutants.log 2>&1 || (tail -c 4000 mutants.log; exit 1)
	$(BIN)/python scripts/mutants-report

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .janitor-demo mutants mutants.log
