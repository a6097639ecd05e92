"""A migration that fails through the flow (a SQL error, lock-timeout retries spent) is
paged as P2, and the operation log names the file that failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from blocks.postgres import PostgresTarget
from opsflows.errors import ConfigurationError, PermanentError, Throttled
from tasks.migration_schema import schema_fingerprint
from tests.migrate_support import (
    apply_files,
    flow_database,
    migrations_dir,
    migrations_table,
    ops_log_entry,
    paged,
    query,
    run_flow,
)
from tests.support import flow_run_artifacts, flow_run_id

ENV = "migtest-failreport"


@pytest.fixture
def db(stack: Any, bootstrapped: Any) -> Iterator[tuple[PostgresTarget, str]]:
    with flow_database(stack, "failreport", ENV) as made:
        yield made


def run(directory: Path, block: str, **params: Any) -> Any:
    return run_flow(directory, block, ENV, skip_backup=True, **params)


def test_a_sql_error_is_paged_and_the_log_names_the_file(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    directory = migrations_dir(tmp_path, "app", "failing")
    state = run(directory, block, lock_timeout_s=0.5)
    assert state.is_failed(), state
    with pytest.raises(ConfigurationError, match="004_fails_halfway.sql line 3"):
        state.result()
    assert [r[0] for r in migrations_table(target) or []] == [
        "001_create_accounts.sql",
        "002_add_note.sql",
        "003_index_note.sql",
    ]
    _, status, _, issues, follow_up, details = ops_log_entry(stack, flow_run_id(state))
    assert status == "failed" and details["failed"] == "004_fails_halfway.sql"
    assert "accounts_missing" in issues
    assert "applied before the failure: 001_create_accounts.sql" in follow_up
    assert details["notified"].startswith("P2 to 2 channel(s)")
    (page,) = paged(stack, f"migration of {target.database} failed at 004_fails_halfway.sql")
    assert "[P2]" in page and "accounts_missing" in page
    assert "Applied by this run: 001_create_accounts.sql" in page


def test_lock_timeout_retries_spent_are_paged_and_the_log_names_the_file(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    directory = migrations_dir(tmp_path, "app")
    apply_files(target, directory)
    (directory / "004_flag.sql").write_text(
        "ALTER TABLE accounts ADD COLUMN IF NOT EXISTS flag text;\n"
    )
    before = schema_fingerprint(target)
    with psycopg.connect(target.conninfo()) as blocker:  # a report holding ACCESS SHARE
        blocker.execute("SELECT count(*) FROM accounts").fetchone()
        state = run(directory, block, lock_timeout_s=0.3, lock_retries=1)
        blocker.rollback()
    assert state.is_failed(), state
    with pytest.raises(Throttled, match="004_flag.sql line 1: lock not granted.*gave up after 2"):
        state.result()
    assert schema_fingerprint(target) == before
    assert len(migrations_table(target) or []) == 3
    _, status, _, issues, _, details = ops_log_entry(stack, flow_run_id(state))
    assert status == "failed" and details["failed"] == "004_flag.sql"
    assert "Throttled" in issues
    (page,) = paged(stack, f"migration of {target.database} failed at 004_flag.sql")
    assert "lock not granted" in page and "pg_stat_activity" in page


def test_a_transactional_folder_failing_in_its_third_file_applies_nothing(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "001_t.sql").write_text("CREATE TABLE t (id bigint);\n")
    (directory / "002_note.sql").write_text("ALTER TABLE t ADD COLUMN IF NOT EXISTS note text;\n")
    (directory / "003_bad.sql").write_text("ALTER TABLE t_missing ADD COLUMN x text;\n")
    before = schema_fingerprint(target)
    state = run(directory, block)
    with pytest.raises(ConfigurationError, match="003_bad.sql line 1") as info:
        state.result()
    assert migrations_table(target) is None  # 001 and 002 are not applied either
    assert schema_fingerprint(target) == before
    assert "not applied: 001_t.sql, 002_note.sql, 003_bad.sql" in str(info.value)
    run_id = flow_run_id(state)
    _, status, impact, _, follow_up, details = ops_log_entry(stack, run_id)
    assert status == "failed" and details["failed"] == "003_bad.sql"
    assert impact.startswith("no change: nothing applied")
    failure = details["failure"]
    assert failure["applied"] == [] and failure["rolled_back"] == failure["not_applied"]
    assert "nothing to revert" in follow_up
    (page,) = paged(stack, f"migration of {target.database} failed at 003_bad.sql")
    assert "rolled back together (one transaction, none of them applied)" in page
    (report,) = [a for a in flow_run_artifacts(run_id) if a.startswith("migration-failure")]
    assert "not applied: 001_t.sql, 002_note.sql, 003_bad.sql" in report


def test_a_failed_concurrent_unique_index_is_reported_and_a_rerun_finishes(
    stack: Any, db: tuple[PostgresTarget, str], tmp_path: Path
) -> None:
    target, block = db
    directory = migrations_dir(tmp_path, "app")
    apply_files(target, directory)
    (directory / "004_unique_email.sql").write_text(
        "-- verify: index accounts_email_key\n"
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS accounts_email_key ON accounts (email);\n"
    )
    query(target, "INSERT INTO accounts (email) VALUES ('dup@example.org'), ('dup@example.org')")
    state = run(directory, block)
    assert state.is_failed(), state
    with pytest.raises(PermanentError, match="004_unique_email.sql line 2") as info:
        state.result()
    revert = "DROP INDEX CONCURRENTLY IF EXISTS accounts_email_key;"
    assert "half-applied: index accounts_email_key is INVALID" in str(info.value)
    assert revert in str(info.value)
    assert query(
        target,
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('accounts_email_key')",
    ) == [(False,)]
    run_id = flow_run_id(state)
    _, status, impact, _, follow_up, details = ops_log_entry(stack, run_id)
    assert status == "failed" and details["failed"] == "004_unique_email.sql"
    assert details["failure"]["not_applied"] == ["004_unique_email.sql"]
    assert "half-applied: index accounts_email_key is INVALID" in impact
    assert revert in follow_up and "REINDEX INDEX CONCURRENTLY accounts_email_key;" in follow_up
    (page,) = paged(stack, f"migration of {target.database} failed at 004_unique_email.sql")
    assert "HALF-APPLIED: index accounts_email_key is INVALID" in page and revert in page
    (report,) = [a for a in flow_run_artifacts(run_id) if a.startswith("migration-failure")]
    assert f"`{revert}`" in report

    query(target, "DELETE FROM accounts WHERE id = (SELECT max(id) FROM accounts)")
    again = run(directory, block)
    assert again.is_completed(), again
    assert [r["name"] for r in again.result()["applied"]] == ["004_unique_email.sql"]
    assert query(
        target,
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('accounts_email_key')",
    ) == [(True,)]
