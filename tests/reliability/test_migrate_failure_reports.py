"""A migration that fails through the flow (a SQL error, lock-timeout retries spent) is
paged as P2, and the operation log names the file that failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from blocks.postgres import PostgresTarget
from opsflows.errors import ConfigurationError, Throttled
from tasks.migrate import schema_fingerprint
from tests.migrate_support import (
    apply_files,
    flow_database,
    migrations_dir,
    migrations_table,
    ops_log_entry,
    paged,
    run_flow,
)
from tests.support import flow_run_id

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
