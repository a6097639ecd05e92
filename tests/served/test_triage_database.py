"""The database-slow triage runbook started as the incident flow and the UI start it (REST
``create_flow_run``), against real sessions of the app database that this test opens and
controls (psycopg connections, closed at the end of each case):

* a session of the app role idle in a transaction, holding a row lock another query waits
  on, older than the auto-kill policy: terminated without asking, the waiting query
  completes, the checklist and the op log record it, the incident is mitigated;
* a long-running active query of the app role holding a table lock others wait on (outside
  the auto-kill policy): the run pauses for a typed approval; approved (through the REST API
  as the UI resumes it) it is terminated and the others complete; rejected it is left alone;
* the blocking session belongs to a superuser: refused (never terminated, never offered for
  termination), recorded, engineering paged, the run fails;
* an unknown environment or database block: a clear error naming it, nothing changed (a
  session the policy would end survives).

The policy is shrunk (idle in transaction past 3 s) so every case runs in seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from decisions.incidents import Incident
from devstack.stack import StackInfo
from tests import triage_support
from tests.db_sessions_support import (
    Background,
    alive,
    blocked_by,
    idle_for,
    scene,
    waiter,
)
from tests.incident_support import incident, timeline, wait_for
from tests.served_support import SERVE_ONLY, RunPath, assert_completed, describe
from tests.support import oplog_row
from tests.triage_support import artifacts_of, checklist_of, resolve

DEPLOYMENT = "database-slow/database-slow"
ENV = "staging"
KEY = f"triage-database-slow-{ENV}"
POLICY_MIN = 0.05  # 3 s idle in a transaction
FAST = {
    "idle_in_transaction_kill_min": POLICY_MIN,
    "long_query_s": 2,
    "verify_seconds": 1,
    "lock_timeout_s": 60,
    "approval_poll_s": 1,
    "approval_timeout_s": 120,
}


# --- sessions under the test's control -----------------------------------------------------


def idle_holder(state: dict[str, Any]) -> Background:
    """The holder updates the row and stays idle in its transaction; a waiter queues behind."""
    state["holder"].execute(f"UPDATE {state['table']} SET n = n + 1 WHERE id = 1")
    work = waiter(state, f"UPDATE {state['table']} SET n = n + 10 WHERE id = 1")
    pid = state["holder_pid"]
    wait_for(lambda: idle_for(pid) > POLICY_MIN * 60 + 0.5, 15, "the holder never got old")
    return work


# --- incidents and the checklist -------------------------------------------------------------


def open_incident(stack: StackInfo, marker: str, severity: str = "P2") -> Incident:
    """A database-slow incident for staging (as the receiver records one)."""
    return triage_support.open_incident(
        stack, ENV, marker, "LongRunningTransaction", severity, runbook="database-slow"
    )


def checklist(runpath: RunPath, run_id: str) -> dict[str, dict[str, str]]:
    """The run's one checklist table artifact, by item."""
    return checklist_of(runpath, run_id, KEY)


def assert_diagnosed(items: dict[str, dict[str, str]], holder: int) -> None:
    """The diagnosis items every case records, read from the real services."""
    assert items["lock chains"]["result"] == "fail"
    assert f"pid {holder}" in items["lock chains"]["evidence"], items["lock chains"]
    # node_exporter through Prometheus and pg_stat_statements answered (not "unknown")
    for item in ("database host CPU", "database host memory", "slowest statements"):
        assert items[item]["result"] in ("pass", "fail"), items[item]
    assert "node_exporter" in items["database host CPU"]["evidence"]
    assert "ms mean" in items["slowest statements"]["evidence"], items["slowest statements"]
    assert items["probe query"]["result"] == "pass", items["probe query"]


# --- the cases -----------------------------------------------------------------------------


def test_an_idle_transaction_past_the_policy_is_terminated(runpath: RunPath) -> None:
    """Idle in a transaction for longer than the policy, blocking an update: terminated
    without asking, the update completes, the incident is mitigated."""
    stack, api = runpath.stack, runpath.api
    opened = open_incident(stack, uuid.uuid4().hex[:10])
    try:
        with scene() as state:
            blocked = idle_holder(state)
            holder = state["holder_pid"]
            run = api.finish(DEPLOYMENT, environment=ENV, incident_id=opened.id, **FAST)
            assert_completed(run, runpath.log)
            assert not alive(holder)
            assert blocked.done.wait(10) and blocked.error is None, blocked.error
            items = checklist(runpath, run["id"])
            assert_diagnosed(items, holder)
            assert items["long-running transactions"]["result"] == "fail"
            assert "report-job" in items["sessions to end"]["evidence"]
            ended = items[f"end pid {holder}"]
            assert ended["result"] == "pass" and "auto-kill policy" in ended["evidence"], ended
            assert items["lock chains gone"]["result"] == "pass"
            assert items["terminated sessions gone"]["result"] == "pass"
            assert items["probe query after"]["result"] == "pass"
            assert "p95 latency (Prometheus)" in items
            row = oplog_row(stack, run["id"])
            assert (row["operation"], row["status"]) == ("database-slow", "succeeded")
            decision = row["details"]["decision"]
            assert decision["auto_kill"] == [holder] and not decision["ask"], decision
            assert [t["pid"] for t in row["details"]["terminated"]] == [holder]
            assert "asked" not in row["details"]
            assert row["impact"] == "app: terminated 1 backend(s)"
            now = incident(stack, opened.id)
            assert (now.status, now.mitigated_by) == ("mitigated", "database-slow")
            notes = [e.text for e in timeline(stack, opened.id) if e.kind == "runbook"]
            assert any(f"terminated pid {holder}" in n for n in notes), notes
            assert any(n.startswith("database-slow: verified") for n in notes), notes
    finally:
        resolve(stack, opened.id)


def long_query(state: dict[str, Any]) -> Background:
    """The holder locks the table and runs a long query; another session waits on it."""
    table, holder = state["table"], state["holder"]
    holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    state["workers"].append(Background(holder, "SELECT pg_sleep(120)"))
    blocked = waiter(state, f"SELECT count(*) FROM {table}")
    time.sleep(2.5)  # older than long_query_s
    return blocked


@SERVE_ONLY
def test_the_runbook_decides_again_under_the_change_slot(runpath: RunPath) -> None:
    """Another change holds staging's slot when the runbook decides to terminate; the idle
    transaction ends meanwhile (its client commits). Under the slot the runbook reads the
    sessions again, finds nothing to end and changes nothing (the incident is not marked)."""
    from prefect.concurrency.sync import concurrency

    stack, api = runpath.stack, runpath.api
    opened = open_incident(stack, uuid.uuid4().hex[:10])
    try:
        with scene() as state:
            blocked = idle_holder(state)
            holder = state["holder_pid"]
            with concurrency(f"change-{ENV}", occupy=1, strict=True):
                run_id = api.start(DEPLOYMENT, environment=ENV, incident_id=opened.id, **FAST)

                def decided() -> Any:
                    notes = timeline(stack, opened.id)
                    return [e for e in notes if "decided terminate" in e.text]

                wait_for(decided, 120, f"the runbook decided nothing; {runpath.log}")
                state["holder"].commit()
                assert blocked.done.wait(10) and blocked.error is None, blocked.error
            run = api.wait(run_id)
            assert_completed(run, runpath.log)
            assert alive(holder)  # the session lives on, its transaction is over
            row = oplog_row(stack, run_id)
            assert row["impact"].startswith("no change"), row
            assert "terminated" not in row["details"]
            items = checklist(runpath, run_id)
            assert items["recovered before the change"]["result"] == "pass"
            assert f"end pid {holder}" not in items
            assert incident(stack, opened.id).status == "triggered"
    finally:
        resolve(stack, opened.id)


@contextmanager
def long_query_paused(runpath: RunPath) -> Iterator[tuple[dict[str, Any], Background, str]]:
    """An app-role query running long while holding a table lock others wait on; the
    runbook started and paused for approval. Yields (scene, the waiting query, run id)."""
    with scene() as state:
        blocked = long_query(state)
        run_id = runpath.api.start(DEPLOYMENT, environment=ENV, **FAST)
        paused = runpath.api.wait(run_id, until=("PAUSED",), timeout=120)
        assert paused["state"]["type"] == "PAUSED", describe(paused)
        assert alive(state["holder_pid"]) and not blocked.done.is_set()
        form = runpath.api.latest_artifact("database-slow-approval")
        assert f"| {state['holder_pid']} | app | active |" in form, form
        yield state, blocked, run_id


def test_a_long_query_waits_for_approval_then_is_terminated(runpath: RunPath) -> None:
    """Outside the auto-kill policy (an active query, not an idle transaction): the run asks;
    approved through the form, the query is terminated and the waiting one completes."""
    stack, api = runpath.stack, runpath.api
    with long_query_paused(runpath) as (state, blocked, run_id):
        holder = state["holder_pid"]
        approver = "dana"
        api.resume(run_id, {"approve": True, "approver": approver, "reason": "runaway report"})
        run = api.wait(run_id)
        assert_completed(run, runpath.log)
        assert not alive(holder)
        assert blocked.done.wait(10) and blocked.error is None, blocked.error
        items = checklist(runpath, run_id)
        assert_diagnosed(items, holder)
        assert items["long-running queries"]["result"] == "fail"
        ended = items[f"end pid {holder}"]
        assert ended["result"] == "pass" and f"approved by {approver}" in ended["evidence"]
        assert items["lock chains gone"]["result"] == "pass"
        assert items["probe query after"]["result"] == "pass"
        row = oplog_row(stack, run_id)
        assert row["status"] == "succeeded" and row["details"]["asked"] == [holder]
        assert row["details"]["decision"]["ask"] == [holder]
        assert not row["details"]["decision"]["auto_kill"]
        assert (row["details"]["approver"], row["details"]["approved"]) == (approver, True)
        assert row["details"]["approval_reason"] == "runaway report"


@SERVE_ONLY
def test_a_long_query_stays_when_the_approval_is_rejected(runpath: RunPath) -> None:
    """Rejected through the form: nothing is terminated, the waiting query still waits, the
    run ends rejected with the approver and reason in the op log."""
    stack, api = runpath.stack, runpath.api
    with long_query_paused(runpath) as (state, blocked, run_id):
        holder = state["holder_pid"]
        approver = f"erin-{uuid.uuid4().hex[:6]}"
        reason = "it is the month-end report"
        api.resume(run_id, {"approve": False, "approver": approver, "reason": reason})
        run = api.wait(run_id)
        assert run["state"]["type"] == "FAILED", describe(run)
        assert "rejected" in (run["state"]["message"] or ""), describe(run)
        assert alive(holder) and holder in blocked_by(blocked.pid)
        assert not blocked.done.is_set()
        items = checklist(runpath, run_id)
        assert items[f"end pid {holder}"]["result"] == "fail"
        assert "not approved" in items[f"end pid {holder}"]["evidence"]
        assert items["restart the database (recommendation)"]["result"] == "unknown"
        row = oplog_row(stack, run_id)
        assert row["status"] == "rejected" and row["impact"].startswith("no change"), row
        assert (row["details"]["approver"], row["details"]["approved"]) == (approver, False)
        assert row["details"]["approval_reason"] == reason
        assert "terminated" not in row["details"]


@pytest.mark.parametrize("runpath", ["serve"], indirect=True)
def test_an_unanswered_approval_times_out_and_changes_nothing(runpath: RunPath) -> None:
    """Nobody answers the form within ``approval_timeout_s``: the run ends timed out, the
    long query still runs and the waiting one still waits."""
    stack, api = runpath.stack, runpath.api
    with scene() as state:
        blocked = long_query(state)
        holder = state["holder_pid"]
        run = api.finish(DEPLOYMENT, environment=ENV, **{**FAST, "approval_timeout_s": 3})
        assert run["state"]["type"] == "FAILED", describe(run)
        assert "nobody approved" in (run["state"]["message"] or ""), describe(run)
        assert alive(holder) and holder in blocked_by(blocked.pid)
        row = oplog_row(stack, run["id"])
        assert row["status"] == "timed out" and row["impact"].startswith("no change"), row
        assert row["details"]["asked"] == [holder] and "terminated" not in row["details"]
        assert checklist(runpath, run["id"])[f"end pid {holder}"]["result"] == "fail"


@SERVE_ONLY
def test_a_superuser_blocker_is_refused_and_escalated(runpath: RunPath) -> None:
    """The blocking session is a superuser's, idle in its transaction past the policy: the
    runbook never terminates it nor offers it for termination; it records the refusal and
    the restart recommendation, pages engineering, and fails (the database is still slow)."""
    stack, api = runpath.stack, runpath.api
    opened = open_incident(stack, uuid.uuid4().hex[:10])
    try:
        with scene(holder_block="app-db-admin", holder_app="dba-console") as state:
            blocked = idle_holder(state)
            holder = state["holder_pid"]
            run = api.finish(DEPLOYMENT, environment=ENV, incident_id=opened.id, **FAST)
            assert run["state"]["type"] == "FAILED", describe(run)
            assert "still slow" in (run["state"]["message"] or ""), describe(run)
            assert alive(holder) and holder in blocked_by(blocked.pid)
            items = checklist(runpath, run["id"])
            assert_diagnosed(items, holder)
            refused = items[f"end pid {holder}"]
            assert refused["result"] == "fail", refused
            assert "refused: a superuser session (role postgres)" in refused["evidence"]
            assert items["restart the database (recommendation)"]["result"] == "unknown"
            assert "approval" in items["restart the database (recommendation)"]["evidence"]
            row = oplog_row(stack, run["id"])
            assert row["status"] == "failed" and row["impact"].startswith("no change"), row
            decision = row["details"]["decision"]
            assert decision["action"] == "escalate" and decision["refused"] == [holder]
            assert not decision["ask"] and not decision["auto_kill"]
            assert "asked" not in row["details"] and "terminated" not in row["details"]
            assert row["details"]["escalated"]["level"] == "lead"
            assert not artifacts_of(runpath, run["id"], "database-slow-approval")
            after = incident(stack, opened.id)
            assert after.status == "triggered" and after.mitigated_at is None
            assert "paged lead" in [e.kind for e in timeline(stack, opened.id)]
    finally:
        resolve(stack, opened.id)


@SERVE_ONLY
def test_unknown_environment_or_database_changes_nothing(runpath: RunPath) -> None:
    """An environment or database block that does not exist: the run fails naming it before
    anything changes; a session the policy would terminate survives both runs."""
    stack, api = runpath.stack, runpath.api
    nowhere = f"nowhere-{uuid.uuid4().hex[:6]}"
    with scene() as state:
        blocked = idle_holder(state)
        holder = state["holder_pid"]
        for params, named in (
            ({"environment": nowhere}, nowhere),
            ({"environment": ENV, "database": f"{nowhere}-db"}, f"{nowhere}-db"),
            ({"environment": ENV, "admin_database": f"{nowhere}-admin"}, f"{nowhere}-admin"),
        ):
            run = api.finish(DEPLOYMENT, **{**FAST, **params})
            assert run["state"]["type"] == "FAILED", describe(run)
            assert named in (run["state"]["message"] or ""), describe(run)
            row = oplog_row(stack, run["id"])
            assert row["status"] == "failed" and row["impact"] == "no change", row
            assert not artifacts_of(runpath, run["id"], KEY)
            assert alive(holder) and holder in blocked_by(blocked.pid)
