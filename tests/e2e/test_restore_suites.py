"""The user's Great Expectations suites in the restore flow, through the real Prefect server:
a malformed suite, or one holding an expectation that runs SQL (reading ``pg_authid``), stops
the restore (and the drill) before a scratch database exists or a byte is streamed; the
suites run against the restored database as the read-only role and a failed expectation
fails the restore; row values stay out of errors and artifacts unless asked for; a verified
scratch database is left with no session and no grant of the role on it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

from devstack import stack as devstack
from flows.backup import backup_database
from flows.restore import restore_database
from flows.restore_drill import restore_drill
from opsflows.errors import ConfigurationError, VerificationFailed
from tasks.verify_role import VERIFY_ROLE
from tests.backup_support import BackupEnv, backup_env, fill, suite_objects
from tests.support import assert_no_secret, flow_run_artifacts, flow_run_id, flow_run_texts

CUSTOMERS: dict[str, Any] = {
    "name": "customers",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "name"}},
        {"type": "expect_table_row_count_to_equal", "kwargs": {"value": 30}},
    ],
    "meta": {"great_expectations_version": "1.24.1"},
}


@pytest.fixture(scope="module")
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    """A database of 30 rows with one backup."""
    with backup_env(stack, "e2esuites") as made:
        fill(made, 30)
        backup_database(database=made.db_block, store=made.store_block, reason="e2e suites")
        yield made


@pytest.fixture
def suites(env: BackupEnv) -> Iterator[Any]:
    """Put suite objects under ``expectations/<db>/``; all removed afterwards. Returns the
    ``s3://`` URL of the folder."""
    with suite_objects(env) as put:
        yield put


def _restore(env: BackupEnv, **kw: Any) -> Any:
    return restore_database(
        database=env.db_block,
        admin_database=env.admin_block,
        store=env.store_block,
        return_state=True,
        **kw,
    )


def _task_names(state: Any) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id(state)])
            )
        )
    return [r.name for r in runs]


@pytest.mark.parametrize(
    ("objects", "params", "message"),
    [
        ({"orders.json": b'{"name": "orders", "expectations": ['}, {}, "orders.json is not valid"),
        (
            {
                "customers.json": CUSTOMERS,
                "public.orders.json": {
                    "name": "orders",
                    "expectations": [{"type": "expect_orders_to_be_tidy", "kwargs": {}}],
                },
            },
            {},
            "public.orders.json: expectation 1 (expect_orders_to_be_tidy) is refused",
        ),
        ({}, {"expectations": "expectations/elsewhere"}, "no expectation suites under s3://"),
    ],
)
def test_a_malformed_suite_stops_the_restore_before_anything_is_restored(
    env: BackupEnv, suites: Any, objects: dict[str, Any], params: dict[str, Any], message: str
) -> None:
    folder = suites(objects)
    state = _restore(env, **params)
    assert state.is_failed()
    with pytest.raises(ConfigurationError) as err:
        state.result()
    assert message in str(err.value)
    if objects:
        assert folder in str(err.value), "the error names the S3 object"
    assert env.databases() == [env.dbname], "no scratch database was created"
    names = _task_names(state)
    assert any(n.startswith("read expectation suites") for n in names)
    assert not any(n.startswith("restore into scratch database") for n in names), (
        "nothing was streamed"
    )


PG_AUTHID = "SELECT rolname, rolpassword FROM pg_authid"
READS_PG_AUTHID: dict[str, Any] = {
    "name": "customers",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "name"}},
        {
            "type": "expect_query_results_to_match_comparison",
            "kwargs": {
                "base_query": PG_AUTHID,
                "comparison_data_source_name": "restored",
                "comparison_query": PG_AUTHID,
            },
        },
    ],
}


@pytest.mark.parametrize("runbook", ["restore", "drill"])
def test_a_suite_that_reads_pg_authid_is_refused_before_anything_runs(
    env: BackupEnv, suites: Any, runbook: str
) -> None:
    folder = suites({"customers.json": READS_PG_AUTHID})
    if runbook == "restore":
        state = _restore(env)
    else:
        state = restore_drill(
            database=env.db_block,
            admin_database=env.admin_block,
            store=env.store_block,
            return_state=True,
        )
    assert state.is_failed(), state
    with pytest.raises(ConfigurationError) as err:
        state.result()
    assert (
        f"{folder}customers.json: expectation 2 (expect_query_results_to_match_comparison)"
        " is refused: expect_query_results_to_match_comparison is not an allowed expectation"
        in str(err.value)
    )
    assert err.value.hint and "expect_column_values_to_not_be_null" in err.value.hint
    assert env.databases() == [env.dbname], "no scratch database was created"
    names = _task_names(state)
    assert any(n.startswith("read expectation suites") for n in names)
    for step in ("drop abandoned", "restore into scratch", "verify restored database"):
        assert not any(n.startswith(step) for n in names), f"{step} ran"
    texts = flow_run_texts(flow_run_id(state))
    assert any("expect_query_results_to_match_comparison is not an allowed" in t for t in texts)
    assert not any("SCRAM-SHA-256$" in t for t in texts), "a row of pg_authid showed"


def test_row_values_stay_out_of_errors_and_artifacts_unless_row_samples_is_on(
    env: BackupEnv, suites: Any
) -> None:
    names = {
        "name": "customers",
        "expectations": [
            {
                "type": "expect_column_values_to_match_regex",
                "kwargs": {"column": "name", "regex": "^customer [0-9]$"},
            }
        ],
    }
    suites({"customers.json": names})
    counted = _restore(env)
    with pytest.raises(VerificationFailed) as err:
        counted.result()
    assert "expect_column_values_to_match_regex (observed 21 of 30 rows unexpected (70%))" in (
        str(err.value)
    )
    texts = [str(err.value), *flow_run_texts(flow_run_id(counted))]
    assert not [t for t in texts if re.search(r"customer \d", t)], "a row value showed"

    sampled = _restore(env, row_samples=True)
    with pytest.raises(VerificationFailed, match=r"customer \d\d"):
        sampled.result()
    assert any("customer 10" in t for t in flow_run_artifacts(flow_run_id(sampled)))
    assert env.databases() == [env.dbname]


def _no_sessions_on(env: BackupEnv, database: str) -> None:
    deadline = time.monotonic() + 30  # a closed session leaves pg_stat_activity soon after
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
    while env.sql(query, (database,), database="postgres") != [(0,)]:
        assert time.monotonic() < deadline, "verification left a session on the scratch database"
        time.sleep(0.2)


def test_user_suites_run_in_the_restore_and_a_failed_expectation_fails_it(
    env: BackupEnv, stack: Any, suites: Any
) -> None:
    orders = {
        "name": "orders",
        "expectations": [{"type": "expect_table_row_count_to_equal", "kwargs": {"value": 999}}],
    }
    suites({"customers.json": CUSTOMERS, "public.orders.json": orders})
    failed = _restore(env)
    with pytest.raises(VerificationFailed, match="user suite public.orders") as err:
        failed.result()
    assert "expect_table_row_count_to_equal (observed 30)" in str(err.value)
    assert "public.customers" not in str(err.value), "only the failures are named"
    assert env.databases() == [env.dbname], "the failed restore's scratch database is gone"

    suites({"public.orders.json": {**orders, "expectations": [CUSTOMERS["expectations"][1]]}})
    state = _restore(env)
    result = state.result()
    scratch = result["scratch_database"]
    assert result["verification"]["success"]
    artifacts = " ".join(flow_run_artifacts(flow_run_id(state)))
    assert "user suite public.customers" in artifacts and "user suite public.orders" in artifacts
    _no_sessions_on(env, scratch)
    role = "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = %s"
    assert env.sql(role, (VERIFY_ROLE,), database="postgres") == [(True,)], "no login left"
    granted = "SELECT has_table_privilege(%s, 'public.customers', 'SELECT')"
    assert env.sql(granted, (VERIFY_ROLE,), database=scratch) == [(False,)], "grants revoked"
    secrets = devstack.stack_secrets(Path(stack.state_dir))
    texts = flow_run_texts(flow_run_id(state)) + flow_run_texts(flow_run_id(failed))
    assert_no_secret(texts, [secrets["postgres"], secrets["app"]])
