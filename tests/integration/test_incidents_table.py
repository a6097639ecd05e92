"""The incidents table on the stack's PostgreSQL: one open incident per group, even when
deliveries race; states move forward only; resolution closes; a flapping group reopens its
incident (once, however deliveries race); ``opsflows incidents`` lists."""

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
from tasks.incident_announcements import claim_announcement, settle_announcement
from tasks.incidents import (
    list_incidents,
    move_incident,
    read_events,
    read_incident,
    record_opening,
    set_flow_run,
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


def test_racing_runs_of_one_opening_announce_resolved_once(stack: StackInfo) -> None:
    """Both runs of an incident see it closed; #incidents hears "resolved" from one."""
    target = ops_target(stack)
    payload = notification([alert("Announce", "P2", fingerprint=uuid.uuid4().hex[:8])])
    incident_id = record_opening.fn(target, opening(payload)).incident.id
    text = "resolved by alertmanager"
    with ThreadPoolExecutor(max_workers=6) as pool:
        claims = list(
            pool.map(lambda _: claim_announcement.fn(target, incident_id, text), range(6))
        )
    lines = [c for c in claims if c is not None]
    assert len(lines) == 1, claims
    settle_announcement.fn(target, lines[0], text, 2)
    told = [e.text for e in read_events(target, incident_id) if e.kind == "announced"]
    assert told == [f"#incidents: {text} (2)"]
    assert claim_announcement.fn(target, incident_id, text) is None


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
    # Past the reopen window (within it, the group flapped: see the reopening cases below).
    again = record_opening.fn(target, opening(first), reopen_window_s=0)
    assert again.opened and again.incident.id != opened.id
    assert [i.status for i in incidents_of(stack, first["groupKey"])] == ["resolved", "triggered"]
    listed = [i.id for i in list_incidents(target, recent=50)]
    assert listed.index(again.incident.id) < listed.index(opened.id)  # open ones first


def test_a_group_that_fires_again_soon_after_it_resolved_reopens_its_incident(
    stack: StackInfo,
) -> None:
    target = ops_target(stack)
    firing = notification([alert("ServiceDown", "P1", fingerprint="flap1")])
    first = record_opening.fn(target, opening(firing), reopen_window_s=1800)
    incident_id = first.incident.id
    set_flow_run(target, incident_id, "run-of-the-first-opening")
    assert move_incident.fn(target, incident_id, "acknowledged", "alice", "on it")
    assert move_incident.fn(target, incident_id, "mitigated", "alice", "restarted it")
    closed = record_opening.fn(target, opening(resolved(firing)), reopen_window_s=1800)
    assert closed.resolved and closed.incident.resolved_by == "alertmanager"

    back = record_opening.fn(target, opening(firing), reopen_window_s=1800)
    assert back.reopened and not back.opened and back.incident.id == incident_id
    assert back.previous_run_id == "run-of-the-first-opening"
    row = read_incident.fn(target, incident_id)
    assert (row.status, row.resolved_at, row.resolved_by) == ("acknowledged", None, None)
    assert (row.mitigated_at, row.flow_run_id, row.reopenings) == (None, None, 1)
    assert row.acknowledged_by == "alice" and row.run_key == f"incident-{incident_id}-reopened-1"
    events = read_events(target, incident_id)
    reopened = [e.text for e in events if e.kind == "reopened"]
    assert (
        len(reopened) == 1 and "after it resolved (flapping); acknowledged again" in (reopened[0])
    )
    assert events[-1].text == "alert ServiceDown (production) firing again"
    # A redelivery of that firing changes nothing; a second flap reopens it again.
    again = record_opening.fn(target, opening(firing), reopen_window_s=1800)
    assert not again.reopened and again.changes == ()
    record_opening.fn(target, opening(resolved(firing)), reopen_window_s=1800)
    twice = record_opening.fn(target, opening(firing), reopen_window_s=1800)
    assert twice.reopened and twice.incident.reopenings == 2
    assert [i.id for i in incidents_of(stack, firing["groupKey"])] == [incident_id]


def test_a_person_resolved_or_long_resolved_incident_is_not_reopened(stack: StackInfo) -> None:
    target = ops_target(stack)
    # A person closed it: deliberately, so the group firing again is a new incident.
    by_hand = notification([alert("HighErrorRate", "P2", fingerprint="h1")])
    first = record_opening.fn(target, opening(by_hand), reopen_window_s=1800).incident
    assert move_incident.fn(target, first.id, "resolved", "alice", "fixed the config")
    new = record_opening.fn(target, opening(by_hand), reopen_window_s=1800)
    assert new.opened and not new.reopened and new.incident.id != first.id
    assert [i.status for i in incidents_of(stack, by_hand["groupKey"])] == [
        "resolved",
        "triggered",
    ]
    # Alertmanager resolved it, but longer ago than the window: a new incident too.
    late = notification([alert("HighLatencyP95", "P2", fingerprint="l1")])
    old = record_opening.fn(target, opening(late), reopen_window_s=1800).incident
    record_opening.fn(target, opening(resolved(late)), reopen_window_s=1800)
    outside = record_opening.fn(target, opening(late), reopen_window_s=1e-6)
    assert outside.opened and outside.incident.id != old.id
    assert read_incident.fn(target, old.id).status == "resolved"
    # A window of 0 turns reopening off.
    off = notification([alert("VolumeFull", "P2", fingerprint="v1")])
    gone = record_opening.fn(target, opening(off)).incident
    record_opening.fn(target, opening(resolved(off)))
    assert record_opening.fn(target, opening(off), reopen_window_s=0).incident.id != gone.id


def test_racing_firings_of_a_flapped_group_reopen_it_once(stack: StackInfo) -> None:
    target = ops_target(stack)
    payload = notification([alert("ServiceDown", "P1", fingerprint="race1")])
    first = record_opening.fn(target, opening(payload), reopen_window_s=1800).incident
    record_opening.fn(target, opening(resolved(payload)), reopen_window_s=1800)

    def fire(_: int) -> Any:
        return record_opening.fn(target, opening(payload), reopen_window_s=1800)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(fire, range(8)))
    assert sum(r.reopened for r in results) == 1 and not any(r.opened for r in results)
    assert {r.incident.id for r in results} == {first.id}
    assert len(incidents_of(stack, payload["groupKey"])) == 1
    kinds = [e.kind for e in read_events(target, first.id)]
    assert kinds.count("reopened") == 1 and kinds.count("triggered") == 1


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
        env={**os.environ, **stack.client_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if marker in line)
    assert " P4 " in line and "triggered" in line
