# The front door: `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run setup test test-scaled test-celery test-any-hour lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## setup: virtualenv, packages, database, first admin user and demo agents
setup: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py cronos_init

## run: set up, then start the web server, the task cluster and the scheduler together
## (Ctrl-C stops all three) on http://$(HOST):$(PORT)/
run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" CRONOS_HOST=$(HOST) PORT=$(PORT) $(BIN)/honcho start -f Procfile

# The scaled-out lane: the integration tests again, on PostgreSQL and Redis.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/cronos
TEST_REDIS_URL    ?= redis://127.0.0.1:6379/15

## test: the gates (lint, format, import direction, types), the whole suite, then the
## integration tests on PostgreSQL + Redis, then the tests that start workers once more on the
## Celery engine (the last two skip, saying what to start, when the services are missing;
## CI=true requires them)
test: lint
	$(BIN)/pytest
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) CRONOS_Q_NAME=cronos-test-$$$$ \
		$(BIN)/pytest -m integration
	$(CELERY_LANE)

# The Celery lane: every test marked `workers` (real workers, schedulers, beats) on Celery
# with PostgreSQL and Redis.
CELERY_LANE = DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	CRONOS_Q_NAME=cronos-test-$$$$ CRONOS_ENGINE=celery CRONOS_TEST_ENGINE=celery \
	$(BIN)/pytest -m "integration and workers"

## test-celery: only the Celery lane
test-celery: $(STAMP)
	$(CELERY_LANE)

## test-scaled: only the scaled-out lane
test-scaled: $(STAMP)
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) CRONOS_Q_NAME=cronos-test-$$$$ \
		$(BIN)/pytest -m integration

# The instants where date code breaks, from tests/test_any_hour.py (which runs the
# date-sensitive tests at each of them within `make test`).
ANY_HOUR ?= $(shell $(BIN)/python -c 'from tests.test_any_hour import INSTANTS; print(*INSTANTS.values())')

## test-any-hour: every test (but the browser and integration ones) as if the suite started at
## each of those instants: one that reads the wall clock and depends on the hour fails there
test-any-hour: $(STAMP)
	for at in $(ANY_HOUR); do \
		echo "== --at=$$at"; \
		$(BIN)/pytest -q -m "not browser and not integration" --ignore=tests/test_any_hour.py \
			--at=$$at || exit 1; \
	done

## bench: every benchmark on the embedded shape, then the scaled-out one (JSON on stdout)
bench: setup
	$(BIN)/python manage.py cronos_bench all --json
	$(BIN)/python manage.py cronos_bench all --json --shape scaled

## lint: ruff (lint and format), the import-linter contracts (pyproject.toml), mypy
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
