"""The shift handoff note started as the UI starts it (REST ``create_flow_run`` on the
scheduled deployment), on both run paths: the shift is the committed schedule's, a failed run
of the shift is listed with its issue and follow-up, the note is the artifact, kept in the
operation log and sent to the incoming engineer (the P3 route: nobody has a channel in the
committed schedule)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from decisions.handoff import shift_to_hand_over
from opsflows.oplog import OpLogEntry
from procedures.oncall import load_schedule
from tasks.oplog import insert_entry
from tests.access_support import sink_mentions
from tests.incident_support import ops_target
from tests.served_support import RunPath, assert_completed
from tests.support import oplog_row
from tests.triage_support import artifacts_of

NOTE = "handoff-note/handoff-note"


def test_the_handoff_note_lists_the_shifts_failures_and_goes_to_the_next_engineer(
    runpath: RunPath,
) -> None:
    stack = runpath.stack
    marker = f"handoff-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    insert_entry(
        ops_target(stack),
        OpLogEntry(
            operation="database migration",
            reason=marker,
            started_at=now - timedelta(minutes=3),
            finished_at=now - timedelta(minutes=2),
            status="failed",
            impact="none",
            issues=(f"lock timeout ({marker})",),
            follow_up=(f"write a fix-forward migration ({marker})",),
            flow_run_id=str(uuid.uuid4()),
        ),
    )
    schedule = load_schedule()
    assert schedule is not None
    shift, _, outgoing, incoming = shift_to_hand_over(schedule, now)
    if shift.start > now - timedelta(minutes=3):  # run at a shift change: covers the last one
        shift, _, outgoing, incoming = shift_to_hand_over(schedule, now + timedelta(hours=1))

    run = runpath.api.finish(NOTE, timeout=180, at=now.isoformat())
    assert_completed(run, runpath.log)

    row = oplog_row(stack, run["id"])
    details = row["details"]
    assert (details["outgoing"], details["incoming"]) == (outgoing, incoming)
    assert details["shift"] == shift.index and row["impact"].startswith("no change")
    note = details["note"]
    assert f"# Handoff: {outgoing} → {incoming}" in note
    failed = note.split("## Failed or refused runs")[1].split("##")[0]
    (line,) = [x for x in failed.splitlines() if marker in x]
    assert "database migration: none" in line and line.endswith(f"failed: lock timeout ({marker})")
    follow = note.split("## Open follow-ups")[1].split("##")[0]
    assert f"write a fix-forward migration ({marker})" in follow
    (artifact,) = artifacts_of(runpath, run["id"], "handoff-note")
    assert artifact["type"] == "markdown" and marker in artifact["data"]
    sent = sink_mentions(stack, "notify", marker)
    assert len(sent) == 1 and f"handoff note: {outgoing} → {incoming}" in str(sent[0])
    assert details["delivered"] == 1
