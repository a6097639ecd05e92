"""The shift handoff note built from what the shift left (decisions/handoff.py, pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from decisions.handoff import HandoffFacts, PausedRun, Upcoming, build_handoff
from decisions.incidents import Incident
from decisions.oncall import OnCall, Shift
from decisions.oplog_view import entry_view

START = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
END = START + timedelta(days=7)
NOW = END - timedelta(minutes=10)
SHIFT = Shift(47, START, END, OnCall(START, "carol", "alice", "dave"))


def entry(i: int, hours: float, operation: str, status: str = "succeeded", **kw: object) -> object:
    row = {
        "id": i,
        "started_at": START + timedelta(hours=hours),
        "finished_at": START + timedelta(hours=hours, minutes=2),
        "operation": operation,
        "status": status,
        "reason": kw.get("reason", "why"),
        "impact": kw.get("impact", ""),
        "issues": kw.get("issues", ""),
        "follow_up": kw.get("follow_up", ""),
        "details": {},
        "flow_run_id": f"run-{i}",
    }
    return entry_view(row, "http://ui")


def incident(i: int, severity: str, hours: float, status: str, **kw: object) -> Incident:
    return Incident(
        id=i, group_key=f"g{i}", source="alertmanager", title=f"alert {i}", severity=severity,
        status=status, triggered_at=START + timedelta(hours=hours), environment="production",
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def facts(**kw: object) -> HandoffFacts:
    base: dict[str, object] = {"shift": SHIFT, "outgoing": "carol", "incoming": "alice", "now": NOW}
    return HandoffFacts(**{**base, **kw})  # type: ignore[arg-type]


def test_an_empty_shift_says_so_in_every_section() -> None:
    note = build_handoff(facts())
    assert note.summary() == dict.fromkeys(
        ("changes", "failures", "incidents", "follow_ups", "waiting", "firing", "upcoming"), 0
    )
    assert "# Handoff: carol → alice" in note.markdown
    for said in ("_no change was made_", "_no incident_", "_nothing is paused_"):
        assert said in note.markdown


def test_changes_failures_and_follow_ups_come_from_the_shifts_entries_only() -> None:
    entries = [
        entry(1, 2, "staged deploy", impact="production now runs web-app:4.2"),
        entry(2, 3, "access audit", impact="no change (read-only audit; nothing revoked)"),
        entry(
            3,
            4,
            "database migration",
            "failed",
            impact="none",
            issues="lock timeout",
            follow_up="write a fix-forward migration",
        ),  # fmt: skip
        entry(4, -5, "database backup", impact="backup b-1 stored"),  # the shift before
        entry(5, 6, "restore", "rejected", impact="none", issues="rejected by bob"),
    ]
    note = build_handoff(facts(entries=entries))
    assert len(note.changes) == 1 and note.changes[0].startswith("#1 ")
    assert "web-app:4.2" in note.changes[0] and "(http://ui/runs/flow-run/run-1)" in note.changes[0]
    assert [f.split()[0] for f in note.failures] == ["#3", "#5"]
    assert "failed: lock timeout" in note.failures[0]
    assert note.follow_ups == ("#3 database migration: write a fix-forward migration",)


def test_incidents_of_the_shift_and_open_ones_with_the_p1_post_mortem() -> None:
    incidents = [
        incident(1, "P1", 10, "resolved", acknowledged_by="carol"),
        incident(2, "P2", 30, "acknowledged", acknowledged_by="carol"),
        incident(3, "P3", -30, "triggered"),  # from before the shift, still open
        incident(4, "P2", -30, "resolved"),  # before the shift and over: not listed
        incident(5, "P1", 50, "resolved", postmortem="docs/pm/5.md"),
    ]
    note = build_handoff(facts(incidents=incidents))
    assert [line.split()[1] for line in note.incidents] == ["#1", "#5", "#2", "#3"]
    assert "post-mortem: to be written (P1)" in note.incidents[0]
    assert "post-mortem: docs/pm/5.md" in note.incidents[1]
    assert "incident #1: write the post-mortem" in note.follow_ups
    assert "incident #5: write the post-mortem" not in note.follow_ups
    assert {"incident #2 is still acknowledged", "incident #3 is still triggered"} <= set(
        note.follow_ups
    )


def test_paused_runs_firing_alerts_and_the_next_shifts_schedule() -> None:
    paused = [PausedRun("brave-owl", "restore-database/restore", NOW - timedelta(minutes=42))]
    firing = [{"labels": {"alertname": "BackupTooOld", "env": "production", "severity": "P3"}}]
    upcoming = [
        Upcoming("backup-database/backup-daily", END + timedelta(hours=19)),
        Upcoming("rotate-credentials/rotate-credentials-monthly", END + timedelta(days=9)),
        Upcoming("stack-smoke/stack-smoke", NOW - timedelta(hours=1)),  # already past
    ]
    note = build_handoff(
        facts(paused=paused, firing=firing, upcoming=upcoming, next_end=END + timedelta(days=7))
    )
    assert note.waiting == (
        "restore-database/restore run brave-owl paused since Mon 07:08 (42 min)",
    )
    assert note.firing == ("BackupTooOld (production), P3",)
    assert note.upcoming == ("Tue 03:00 backup-database/backup-daily",)
    assert "## Scheduled in the next shift\n\n- Tue 03:00 backup-database/backup-daily" in (
        note.markdown
    )


def _schedule(overrides: list[dict[str, object]] | None = None) -> object:
    from pathlib import Path

    import yaml

    from decisions.access import parse_policy
    from decisions.oncall_policy import parse_schedule

    repo = Path(__file__).resolve().parents[2]
    roles = parse_policy(yaml.safe_load((repo / "policy" / "roles.yaml").read_text()))
    raw = {
        "version": 1,
        "timezone": "UTC",
        "rotation": {"start": "2026-11-16T08:00:00Z", "shift_days": 7,
                     "primary": ["alice", "bob", "carol"]},
        "overrides": overrides or [],
        "escalation": {"lead": "dave"},
    }  # fmt: skip
    return parse_schedule(raw, roles)


def test_the_note_at_a_shift_change_covers_the_shift_that_ended() -> None:
    from decisions.handoff import shift_to_hand_over

    schedule = _schedule()
    change = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # shift 2 (carol) starts
    covered, following, out, into = shift_to_hand_over(schedule, change + timedelta(minutes=5))  # type: ignore[arg-type]
    assert (covered.index, following.index, out, into) == (1, 2, "bob", "carol")
    # Written by the outgoing engineer later in a shift: that shift, to the next primary.
    covered, following, out, into = shift_to_hand_over(schedule, change + timedelta(days=6))  # type: ignore[arg-type]
    assert (covered.index, out, into) == (2, "carol", "alice")


def test_an_override_at_the_shifts_end_or_the_next_start_names_who_really_hands_over() -> None:
    from decisions.handoff import shift_to_hand_over

    schedule = _schedule(
        [
            {"start": "2026-11-29T08:00:00Z", "end": "2026-11-30T08:00:00Z", "role": "primary",
             "replaces": "bob", "by": "alice", "reason": "bob is ill"},
            {"start": "2026-11-30T08:00:00Z", "end": "2026-12-01T08:00:00Z", "role": "primary",
             "replaces": "carol", "by": "bob", "reason": "carol swapped a day"},
        ]
    )  # fmt: skip
    change = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    _, _, out, into = shift_to_hand_over(schedule, change + timedelta(minutes=1))  # type: ignore[arg-type]
    assert (out, into) == ("alice", "bob")


def test_the_handoff_deployment_runs_at_the_committed_rotations_shift_change() -> None:
    from pathlib import Path

    import yaml

    from decisions.access import parse_policy
    from decisions.oncall_policy import parse_schedule
    from deployments.catalog import HANDOFF_CRON, HANDOFF_TZ

    repo = Path(__file__).resolve().parents[2]
    roles = parse_policy(yaml.safe_load((repo / "policy" / "roles.yaml").read_text()))
    raw = yaml.safe_load((repo / "policy" / "oncall.yaml").read_text())
    rotation = parse_schedule(raw, roles).rotation
    minute, hour, _, _, weekday = HANDOFF_CRON.split()
    first = rotation.shift_start(0).astimezone(ZoneInfo(HANDOFF_TZ))
    assert rotation.timezone == HANDOFF_TZ and rotation.shift_days == 7
    assert (first.hour, first.minute, first.isoweekday() % 7) == (
        int(hour),
        int(minute),
        int(weekday),
    )


def test_alerts_that_could_not_be_read_are_unknown_not_none() -> None:
    note = build_handoff(facts(firing=None))
    assert note.firing == () and "_unknown: Prometheus could not be read_" in note.markdown
    assert "_no alert is firing_" in build_handoff(facts()).markdown
