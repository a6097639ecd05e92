"""The incidents table on the stack's PostgreSQL: one open incident per group, even when
deliveries race; states move forward only; resolution closes; ``opsflows incidents`` lists."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from decisions.alertmanager import parse_notification
from decisions.incidents import alert_opening
from devstack.stack import StackInfo
from tasks.incidents import (
    list_incidents,
    move_incident,
    read_events,
    record_opening,
)
from tests.alertmanager_support import alert, notification, resolved
from tests.incident_support import incidents_of, ops_target


def opening(payload: dict[str, Any]) -> Any:
    import json

    return alert_opening(parse_notification(json.dumps(payload).encode()))


def test_racing_deliveries_of_one_group_open_one_incident(stack: StackInfo) -> None:
    target = ops_target(stack)
    payload = notification([alert("ServiceDown", "P2", fingerprint="f1")])
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: record_opening.fn(target, opening(payload)), range(8)))
    assert sum(r.opened for r in results) == 1
    assert len({r.incident.id for r in results}) == 1
    assert len(incidents_of(stack, payload["groupKey"])) == 1
    kinds = [e.kind for e in read_events(target, results[0].incident.id)]
    assert kinds == ["triggered", "alert"]  # the redeliveries added nothing


def test_severity_rises_resolution_closes_and_a_new_firing_opens_anew(stack: StackInfo) -> None:
    target = ops_target(stack)
    first = notification([alert("Slow", "P3", fingerprint="s1")])
    opened = record_opening.fn(target, opening(first)).incident
    worse = notification(
        [*first["alerts"], alert("Down", "P1", fingerprint="d1")], first["groupKey"]
    )
    updated = record_opening.fn(target, opening(worse))
    assert updated.incident.id == opened.id and updated.incident.severity == "P1"
    assert "severity raised from P3 to P1" in updated.changes
    assert move_incident.fn(target, opened.id, "acknowledged", "alice", "on it")
    assert not move_incident.fn(target, opened.id, "acknowledged", "bob")  # already
    closed = record_opening.fn(target, opening(resolved(worse)))
    assert closed.resolved and closed.incident.status == "resolved"
    assert closed.incident.acknowledged_by == "alice" and closed.incident.resolved_at
    assert not move_incident.fn(target, opened.id, "mitigated", "carol")  # never back
    assert record_opening.fn(target, opening(resolved(worse))).incident is None
    again = record_opening.fn(target, opening(first))
    assert again.opened and again.incident.id != opened.id
    assert [i.status for i in incidents_of(stack, first["groupKey"])] == ["resolved", "triggered"]
    listed = [i.id for i in list_incidents(target, recent=50)]
    assert listed.index(again.incident.id) < listed.index(opened.id)  # open ones first


def test_an_acknowledgement_after_a_runbook_mitigated_is_kept(stack: StackInfo) -> None:
    """A triage runbook may mitigate before anyone acknowledged: the person's acknowledgement
    is still stamped (escalation stops), the status stays mitigated, and neither step can be
    taken twice."""
    target = ops_target(stack)
    opened = record_opening.fn(target, opening(notification([alert("Down", "P1")]))).incident
    assert move_incident.fn(target, opened.id, "mitigated", "service-down", "rolled back")
    assert move_incident.fn(target, opened.id, "acknowledged", "alice", "seen")
    assert not move_incident.fn(target, opened.id, "acknowledged", "bob")
    assert not move_incident.fn(target, opened.id, "mitigated", "carol")
    (now,) = [i for i in list_incidents(target, recent=0) if i.id == opened.id]
    assert (now.status, now.mitigated_by, now.acknowledged_by) == (
        "mitigated",
        "service-down",
        "alice",
    )
    assert now.acknowledged
    kinds = [e.kind for e in read_events(target, opened.id)]
    assert kinds[-2:] == ["mitigated", "acknowledged"]
    assert move_incident.fn(target, opened.id, "resolved", "alice")


def test_opsflows_incidents_lists_them(stack: StackInfo, bootstrapped: Any) -> None:
    target = ops_target(stack)
    marker = f"cli-{uuid.uuid4().hex[:8]}"
    record_opening.fn(target, opening(notification([alert("DiskFull", "P4", summary=marker)])))
    done = subprocess.run(
        [sys.executable, "-m", "opsflows.cli", "incidents", "--recent", "5"],
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if marker in line)
    assert " P4 " in line and "triggered" in line
