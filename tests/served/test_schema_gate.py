"""A production migration waits for a DBA (the roles policy's ``change-schema`` gate), started
as the UI, the REST API and the CI webhook start it: the run pauses after the lint gate and the
plan, before the backup; an on-call engineer's approval is refused and recorded while the run
keeps waiting; a DBA's approval applies the migrations; a rejection changes nothing.

On a scratch database of its own with ``environment=production`` (so it takes the stack's
``change-production`` limit when approved: it runs before the data matrix's deploys start).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.postgres import PostgresTarget
from tests.migrate_support import migrations_dir, migrations_table, saved_target, scratch_database
from tests.served_support import SERVE_ONLY, RunPath, assert_completed, describe
from tests.support import oplog_row

NAME = "migrate-database/migrate-database"


@pytest.fixture
def gated(runpath: RunPath, tmp_path: Path) -> Iterator[tuple[PostgresTarget, dict[str, Any]]]:
    with scratch_database(runpath.stack, "gate") as target, saved_target(target, "gate") as block:
        params = {
            "migrations_dir": str(migrations_dir(tmp_path, "app")),
            "database": block,
            "environment": "production",
            "skip_backup": True,
            "approval_poll_s": 1,
            "approval_timeout_s": 300,
        }
        yield target, params


def paused(runpath: RunPath, run_id: str) -> dict[str, Any]:
    return dict(runpath.api.wait(run_id, until=("PAUSED",), timeout=120))


@SERVE_ONLY
def test_a_production_migration_waits_for_a_dba(
    runpath: RunPath, gated: tuple[PostgresTarget, dict[str, Any]]
) -> None:
    target, params = gated
    api = runpath.api
    run_id = api.start(NAME, **params)
    paused(runpath, run_id)
    time.sleep(1)
    assert migrations_table(target) is None, "nothing is applied while the run waits"
    # An on-call engineer may deploy but not change the schema: refused, still waiting.
    api.refused(run_id, {"approve": True, "approver": "alice", "reason": "looks fine"})
    assert migrations_table(target) is None
    api.resume(run_id, {"approve": True, "approver": "Dana", "reason": "reviewed the plan"})
    run = api.wait(run_id, timeout=240)
    assert_completed(run, runpath.log)
    assert migrations_table(target), "the DBA's approval applied the migrations"
    row = oplog_row(runpath.stack, run_id)
    assert row["status"] == "succeeded" and row["details"]["approved_by"] == "dana"
    assert [(a["gate"], a["approver"], a["role"]) for a in row["details"]["approvals"]] == [
        ("change-schema", "dana", "dba")
    ]
    (refusal,) = row["details"]["approval_refusals"]
    assert refusal["approver"] == "alice" and "on-call" in refusal["why"]


@SERVE_ONLY
def test_a_rejected_production_migration_changes_nothing(
    runpath: RunPath, gated: tuple[PostgresTarget, dict[str, Any]]
) -> None:
    target, params = gated
    api = runpath.api
    run_id = api.start(NAME, **{**params, "skip_backup": False})
    paused(runpath, run_id)
    api.resume(run_id, {"approve": False, "approver": "bob", "reason": "not during the sale"})
    run = api.wait(run_id, timeout=120)
    assert run["state"]["type"] == "FAILED", describe(run)
    assert "rejected by bob: not during the sale" in run["state"]["message"]
    assert migrations_table(target) is None
    row = oplog_row(runpath.stack, run_id)
    assert row["status"] == "rejected", row["status"]
    assert "backup" not in row["details"], "nothing was backed up before the approval"
