"""Replacing the live database with a restored copy waits for a person's approval, through the
real Prefect server and the local stack (pause, resume with the approver, reject)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client

from opsflows.errors import GateRejected
from tests.backup_runs_support import backup as _backup
from tests.backup_runs_support import customers as _customers
from tests.backup_runs_support import oplog as _oplog
from tests.backup_runs_support import restore as _restore
from tests.backup_support import BackupEnv, backup_env, fill
from tests.support import flow_run_artifacts


@pytest.fixture
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    with backup_env(stack, "e2e") as made:
        fill(made, 50)
        yield made


def _paused_run(tag: str, timeout_s: float = 90) -> UUID:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
            )
            paused = [r for r in runs if r.state is not None and r.state.is_paused()]
            if paused:
                return paused[0].id
            time.sleep(0.5)
    raise AssertionError("the restore never paused for approval")


def _in_thread(env: BackupEnv, tag: str) -> tuple[threading.Thread, dict[str, Any]]:
    from prefect import tags

    out: dict[str, Any] = {}

    def run() -> None:
        with tags(tag):
            out["state"] = _restore(
                env, replace_live=True, approval_poll_s=1, approval_timeout_s=120, return_state=True
            )

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _pause_state(run: UUID) -> UUID:

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run).state
    assert state is not None and state.is_paused(), state
    return state.id


def _paused_again(run: UUID, before: UUID, timeout_s: float = 60) -> None:
    """Wait until ``run`` paused again (a new Paused state): its answer was not enough."""

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run).state
            assert state is not None and not state.is_final(), state
            if state.is_paused() and state.id != before:
                return
            time.sleep(0.3)
    raise AssertionError("the run did not ask again after a refused approval")


def test_replacing_live_waits_for_approval_then_swaps(env: BackupEnv, stack: Any) -> None:
    from prefect.flow_runs import resume_flow_run

    made = _backup(env)
    earlier = _customers(env)
    env.sql("UPDATE customers SET name = 'after the backup'")

    tag = f"restore-{env.dbname}"
    thread, out = _in_thread(env, tag)
    run = _paused_run(tag)
    assert _customers(env) == ["after the backup"] * 50, "nothing changes while paused"
    request = next(a for a in flow_run_artifacts(run) if a.startswith("restore-approval"))
    # The form says what is approved: the backup, its age, the verification, both sizes.
    for said in (made["backup_id"], " ago**", "expectations passed", "live database", "MiB"):
        assert said in request, said
    # The approver is required: the server refuses the answer and the run stays paused.
    for blank in ("", "   "):
        with pytest.raises(RuntimeError, match="approver"):
            resume_flow_run(run, run_input={"approve": True, "approver": blank, "reason": "x"})
    assert _paused_run(tag, timeout_s=1) == run
    assert _customers(env) == ["after the backup"] * 50
    # Replacing a live database needs two different DBAs (policy/roles.yaml): someone outside
    # the policy, and the same DBA twice, are refused and recorded; the run keeps waiting.
    for who in ("mallory", "dana", "dana"):
        state_id = _pause_state(run)
        resume_flow_run(run, run_input={"approve": True, "approver": who, "reason": "e2e"})
        _paused_again(run, state_id)
        assert _customers(env) == ["after the backup"] * 50, f"{who} alone replaced live"
    resume_flow_run(run, run_input={"approve": True, "approver": "Erin ", "reason": "second"})
    thread.join(timeout=120)
    result = out["state"].result()
    assert result["replaced_live"] and result["backup_id"] == made["backup_id"]
    assert _customers(env) == earlier, "the live database now holds the backup's rows"
    kept = result["previous_database"]
    assert _customers(env, kept) == ["after the backup"] * 50, "the old database is kept"
    owner = env.sql(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
        (env.dbname,),
        database="postgres",
    )
    assert owner == [("app",)]
    status, details = _oplog(stack, run)
    assert status == "succeeded" and details["approved_by"] == "dana, erin"
    refused = [(r["approver"], r["why"]) for r in details["approval_refusals"]]
    assert [who for who, _ in refused] == ["mallory", "dana"], refused
    assert "not in the roles policy" in refused[0][1] and "already approved" in refused[1][1]
    assert [(a["approver"], a["role"]) for a in details["approvals"]] == [
        ("dana", "dba"),
        ("erin", "dba"),
    ]

    # A rejection leaves the live database alone and drops the scratch database.
    thread, out = _in_thread(env, tag + "-no")
    run = _paused_run(tag + "-no")
    resume_flow_run(run, run_input={"approve": False, "approver": "bob", "reason": "not now"})
    thread.join(timeout=120)
    with pytest.raises(GateRejected, match="rejected by bob: not now"):
        out["state"].result()
    assert _customers(env) == earlier
    assert sorted(env.databases()) == sorted([env.dbname, kept])
