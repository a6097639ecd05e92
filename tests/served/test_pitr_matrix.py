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


@SERVE_ONLY
def test_replacing_live_with_a_moment_needs_two_dbas(runpath: RunPath, env: BackupEnv) -> None:
    """The UI's approval form, as a person answers it: the live database is replaced by the
    database as it was at the moment only once two different DBAs approved; the one it
    replaced is kept under another name."""
    api = runpath.api
    assert_completed(api.finish(BASE, timeout=180, admin_database=env.admin_block), runpath.log)
    written = write_around_a_moment(env.app.conninfo(), rows_before=5, rows_after=5)
    archive_now(env.admin.conninfo())
    run_id = api.start(
        RESTORE,
        at=written.target.isoformat(),
        database=env.db_block,
        admin_database=env.admin_block,
        replace_live=True,
        approval_poll_s=1,
        approval_timeout_s=300,
        reason="served: undo the writes after the moment",
    )
    api.wait(run_id, until=("PAUSED",), timeout=240)
    assert len(ticks(env.app.conninfo())) == written.total, "nothing changes while paused"
    # Someone outside the policy, then the same DBA twice: refused, recorded, still waiting.
    for who in ("mallory", "dana", "dana"):
        api.refused(run_id, {"approve": True, "approver": who, "reason": "served"})
        assert len(ticks(env.app.conninfo())) == written.total, f"{who} alone replaced live"
    api.resume(run_id, {"approve": True, "approver": "erin", "reason": "second DBA"})
    run = api.wait(run_id, timeout=240)
    assert_completed(run, runpath.log)
    row = oplog_row(runpath.stack, run_id)
    details = row["details"]
    assert row["status"] == "succeeded" and details["approved_by"] == "dana, erin"
    assert [r["approver"] for r in details["approval_refusals"]] == ["mallory", "dana"]
    live = ticks(env.app.conninfo())
    assert [i for i, _ in live] == list(range(1, written.before + 1))
    assert all(at <= written.target for _, at in live)
    kept = [d for d in env.databases() if "_before_restore_" in d]
    assert len(kept) == 1, env.databases()
    assert len(ticks(env.app.conninfo(kept[0]))) == written.total, "the replaced one is kept"
