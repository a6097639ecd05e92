"""Point-in-time recovery through served deployments, as the UI's Run button starts them:
a base backup, then a restore to a second between two writes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.backup_support import BackupEnv, backup_env
from tests.pitr_support import archive_now, create_ticks, ticks, write_around_a_moment
from tests.served_support import SERVE_ONLY, RunPath, assert_completed, describe
from tests.support import oplog_row

BASE = "base-backup/base-backup-daily"
RESTORE = "restore-to-time/restore-to-time"


@pytest.fixture
def env(runpath: RunPath) -> Iterator[BackupEnv]:
    with backup_env(runpath.stack, "srvpitr") as made:
        create_ticks(made.app.conninfo())
        yield made


def test_a_base_backup_then_a_restore_to_a_second(runpath: RunPath, env: BackupEnv) -> None:
    api = runpath.api
    base = api.finish(BASE, timeout=180, admin_database=env.admin_block)
    assert_completed(base, runpath.log)
    base_row = oplog_row(runpath.stack, base["id"])
    assert base_row["operation"] == "base backup" and base_row["status"] == "succeeded"
    written = write_around_a_moment(env.app.conninfo(), rows_before=6, rows_after=6)
    archive_now(env.admin.conninfo())
    run = api.finish(
        RESTORE,
        timeout=240,
        at=written.target.isoformat(),
        database=env.db_block,
        admin_database=env.admin_block,
    )
    assert_completed(run, runpath.log)
    row = oplog_row(runpath.stack, run["id"])
    details = row["details"]
    assert row["operation"] == "point-in-time restore" and row["status"] == "succeeded"
    assert details["base_backup"] >= base_row["details"]["backup_id"]
    restored = ticks(env.app.conninfo(details["scratch"]))
    assert [i for i, _ in restored] == list(range(1, written.before + 1))
    assert "live database untouched" in row["impact"]
    assert len(ticks(env.app.conninfo())) == written.total


@SERVE_ONLY
def test_a_moment_in_the_future_fails_before_anything_is_read(
    runpath: RunPath, env: BackupEnv
) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)
    before = env.databases()
    run = runpath.api.finish(
        RESTORE,
        timeout=120,
        at=later.isoformat(),
        database=env.db_block,
        admin_database=env.admin_block,
    )
    assert run["state"]["type"] == "FAILED", describe(run)
    assert "in the future" in (run["state"]["message"] or ""), describe(run)
    assert oplog_row(runpath.stack, run["id"])["status"] == "failed"
    assert env.databases() == before
