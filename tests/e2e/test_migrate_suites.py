"""Great Expectations suites kept with the migrations, through the real Prefect server:
validated after applying, a failed expectation fails the run and pages, a bad suite is
refused before the backup and before any change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from blocks.postgres import PostgresTarget
from opsflows.errors import ConfigurationError, VerificationFailed
from tasks.migration_schema import schema_fingerprint
from tests.migrate_support import (
    backup_store,
    flow_database,
    migrations_dir,
    migrations_table,
    ops_log_entry,
    paged,
    run_flow,
    superuser_password,
    with_suites,
)
from tests.support import assert_no_secret, flow_run_artifacts, flow_run_id, flow_run_texts

ENV = "migtest-suites"


@pytest.fixture
def db(stack: Any, bootstrapped: Any) -> Iterator[tuple[PostgresTarget, str]]:
    with flow_database(stack, "suite", ENV) as made:
        yield made


def run(directory: Path, block: str, **params: Any) -> Any:
    return run_flow(directory, block, ENV, **params)


def validation_rows(run_id: Any) -> list[dict[str, Any]]:
    """Rows of the run's ``migration-validation`` table artifact."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    (table,) = [a for a in artifacts if a.key == "migration-validation"]
    data = json.loads(table.data) if isinstance(table.data, str) else table.data
    return list(data)


def test_a_passing_suite_is_planned_then_validated_and_published(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    directory = migrations_dir(tmp_path, "app")
    with_suites(directory, "accounts.json")

    planned = run(directory, block, dry_run=True)
    assert planned.is_completed(), planned
    assert planned.result()["suites"] == ["accounts.json"]
    (plan,) = [
        a for a in flow_run_artifacts(flow_run_id(planned)) if a.startswith("migration-plan")
    ]
    assert "expectations/accounts.json -> public.accounts: 4 expectation(s)" in plan
    assert migrations_table(target) is None

    state = run(directory, block, skip_backup=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["validation"] == {"suites": ["accounts.json"], "evaluated": 4, "failed": []}
    run_id = flow_run_id(state)
    rows = validation_rows(run_id)
    assert {(r["expectation"], r["column"], r["success"]) for r in rows} == {
        ("expect_table_columns_to_match_set", "(table)", True),
        ("expect_column_values_to_not_be_null", "email", True),
        ("expect_column_values_to_be_unique", "id", True),
        ("expect_column_values_to_be_between", "balance", True),
    }
    assert {r["table"] for r in rows} == {"public.accounts"}
    columns = next(r for r in rows if r["expectation"] == "expect_table_columns_to_match_set")
    assert "email" in columns["observed"], "the observed value is reported"
    _, status, _, _, _, details = ops_log_entry(stack, run_id)
    assert status == "succeeded" and details["validation"]["evaluated"] == 4
    assert_no_secret(flow_run_texts(run_id), [superuser_password(stack)])


def test_a_failed_expectation_fails_the_run_names_it_and_pages(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    directory = migrations_dir(tmp_path, "app", "negative_balance")
    with_suites(directory, "accounts.json")
    with backup_store() as (store, keys):
        state = run(directory, block, backup_store=store)
        assert state.is_failed(), state
        with pytest.raises(VerificationFailed) as failed:
            state.result()
        backup_keys = keys()
    error = failed.value
    assert (
        "accounts.json: expect_column_values_to_be_between on public.accounts.balance"
        in error.message
    )
    assert "rows unexpected" in error.message, "the counts are in the message"
    assert "-5" not in error.message, "the row's value is not (no row samples)"
    assert "expect_column_values_to_not_be_null" not in error.message, "only failures named"
    run_id = flow_run_id(state)
    _, status, _, issues, follow_up, details = ops_log_entry(stack, run_id)
    backup_key = details["backup"]["key"]
    assert backup_key in backup_keys, "the pre-migration backup was taken"
    assert error.hint and backup_key in error.hint and "follow-up migration" in error.hint
    assert len(migrations_table(target) or []) == 4, "the migrations stay committed"
    assert status == "failed" and "expect_column_values_to_be_between" in issues
    assert "fix-forward" in follow_up and backup_key in follow_up
    assert details["validation"]["evaluated"] == 4
    assert len(details["validation"]["failed"]) == 1
    assert details["notified"].startswith("P2 to 2 channel(s)")
    (page,) = paged(stack, f"migration of {target.database} failed verification")
    assert "[P2]" in page and "expect_column_values_to_be_between" in page
    rows = validation_rows(run_id)
    assert [r["success"] for r in rows if r["column"] == "balance"] == [False]


@pytest.mark.parametrize(
    ("suite_text", "message"),
    [
        ('{"name": "accounts", "expectations": [', r"expectations/accounts.json is not valid JSON"),
        (
            json.dumps(
                {
                    "name": "accounts",
                    "expectations": [
                        {"type": "expect_column_to_exist", "kwargs": {"column": "id"}},
                        {"type": "expect_column_values_to_be_purple", "kwargs": {"column": "id"}},
                    ],
                }
            ),
            r"expectations/accounts.json: expectation 2 \(expect_column_values_to_be_purple\)",
        ),
    ],
    ids=["bad-json", "unknown-type"],
)
def test_a_bad_suite_is_refused_before_the_backup_and_any_change(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path, suite_text: str, message: str
) -> None:
    target, block = db
    directory = migrations_dir(tmp_path, "app")
    (with_suites(directory) / "accounts.json").write_text(suite_text)
    before = schema_fingerprint(target)
    with backup_store() as (store, keys):
        state = run(directory, block, backup_store=store)
        with pytest.raises(ConfigurationError, match=message):
            state.result()
        assert keys() == [], "no backup may be taken for a run refused as bad input"
    assert schema_fingerprint(target) == before
    assert migrations_table(target) is None
    _, status, _, issues, _, details = ops_log_entry(stack, flow_run_id(state))
    assert status == "failed" and "accounts.json" in issues
    assert "backup" not in details and "notified" not in details
