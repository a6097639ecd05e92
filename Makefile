# opsflows: the two commands that matter are `make up` and `make test`.
SHELL := /bin/bash
# scripts/uv finds uv when a recipe runs, so the first recipe after `make deps` installed it works.
UV ?= $(CURDIR)/scripts/uv
RUN := $(UV) run --frozen --extra devstack
TEST_STATE := $(CURDIR)/.devstack-test
TEST_ENV := OPSFLOWS_STATE_DIR=$(TEST_STATE) OPSFLOWS_PREFECT_PORT=0 OPSFLOWS_POSTGRES_PORT=0 \
	OPSFLOWS_MOTO_PORT=0 OPSFLOWS_KUBE_PORT=0 OPSFLOWS_APP_STAGING_PORT=0 \
	OPSFLOWS_APP_PRODUCTION_PORT=0 OPSFLOWS_PROMETHEUS_PORT=0 OPSFLOWS_WEBHOOK_PORT=0 \
	OPSFLOWS_NODE_EXPORTER_PORT=0 OPSFLOWS_POSTGRES_EXPORTER_PORT=0 OPSFLOWS_BLACKBOX_PORT=0 \
	OPSFLOWS_ALERTMANAGER_PORT=0 OPSFLOWS_TLS_PORT=0 \
	OPSFLOWS_ALERT_FOR_S=5 OPSFLOWS_ALERT_GROUP_WAIT_S=1 OPSFLOWS_ALERT_GROUP_INTERVAL_S=5 \
	OPSFLOWS_OS_USER=opsflows-test
BENCHES := $(patsubst bench/bench_%.py,%,$(wildcard bench/bench_*.py))

.PHONY: deps up down status test test-stack test-unit lint typecheck bench down-test $(addprefix bench-,$(BENCHES))

deps:  ## install Debian packages, uv and the locked Python environment
	@bash scripts/install-deps.sh

up: deps  ## the main job: local stack, blocks, every runbook served with schedules live
	@$(RUN) opsflows devstack up
	@$(RUN) opsflows devstack backfill-metrics --days 30  # history for the capacity report
	@$(RUN) opsflows bootstrap >/dev/null
	@$(RUN) opsflows up

down:  ## stop the local stack (state kept; `opsflows devstack down --purge` deletes it)
	@$(RUN) opsflows devstack down

status:
	@$(RUN) opsflows devstack status

test: deps  ## the whole suite, with the services it needs (two stacks, two groups at once)
	@bash scripts/test-all.sh

test-stack: deps  ## start (or reuse) the test stack the tests and benchmarks run against
	@$(TEST_ENV) $(RUN) opsflows devstack up

test-unit: deps
	$(RUN) pytest tests/unit

down-test:  ## stop the test stacks (all at once), delete their state and their OS users (the next run starts as a fresh machine does)
	@pids=""; \
	$(TEST_ENV) $(RUN) opsflows devstack down --purge --remove-os-user & pids="$$!"; \
	for g in e2e served worker; do \
		$(TEST_ENV) OPSFLOWS_STATE_DIR=$(CURDIR)/.devstack-test-$$g OPSFLOWS_OS_USER=opsflows-test-$$g \
			$(RUN) opsflows devstack down --purge --remove-os-user & pids="$$pids $$!"; \
	done; \
	rc=0; for p in $$pids; do wait $$p || rc=1; done; exit $$rc

lint: deps  ## ruff, formatting, mypy --strict, and the import contract (layers point down only)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) pytest -q -p no:randomly tests/unit/test_import_contract.py

bench: deps $(addprefix bench-,$(BENCHES))  ## every benchmark in bench/

# A static pattern rule: a plain `bench-%` rule is ignored for .PHONY targets.
$(addprefix bench-,$(BENCHES)): bench-%: test-stack
	@$(RUN) python -m bench.bench_$*
