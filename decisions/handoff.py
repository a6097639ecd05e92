"""The shift handoff note (RUNBOOK.md "After Your On-Call Shift": "write a quick handoff note
for next person"), built from what the shift left behind (pure).

What happened during the shift, from the operation log, the incidents, the runs paused for a
person and the alerts firing at its end::

    Changes made          succeeded entries that changed something (impact not "none…"/"no change…")
    Failed or refused     entries that failed, were rejected, timed out or crashed, with issues
    Incidents             opened during the shift or still open at its end, with their state;
                          a P1 of the shift lists its post-mortem follow-up
    Open follow-ups       every follow-up of the shift's entries, and the open incidents
    Waiting for a person  runs paused for an approval or a form, with how long they wait
    Firing now            the alerts firing as the shift ends
    Next shift            the scheduled runs due before the next shift ends

The note is for people: every entry names its operation-log id and links its run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from decisions.incidents import Incident
from decisions.oncall import Schedule, Shift, on_call_at, shift_at
from decisions.oplog_view import NONE, UNKNOWN, EntryView

UNCHANGED = ("none", "no change")
#: What ``entry_view`` shows for an empty Issues or Follow-up: not an item.
PLACEHOLDERS = (NONE, UNKNOWN)
NOT_OK = ("failed", "rejected", "timed out", "crashed")


@dataclass(frozen=True)
class PausedRun:
    """A run waiting for a person (Prefect state Paused)."""

    name: str
    deployment: str
    since: datetime
    url: str = ""


@dataclass(frozen=True)
class Upcoming:
    """A scheduled run due in the next shift."""

    deployment: str
    at: datetime


@dataclass(frozen=True)
class HandoffFacts:
    """Everything the note is built from; ``now`` is when it is written."""

    shift: Shift
    outgoing: str
    incoming: str
    now: datetime
    entries: Sequence[EntryView] = ()
    incidents: Sequence[Incident] = ()
    paused: Sequence[PausedRun] = ()
    firing: Sequence[Mapping[str, Any]] | None = ()  # None: Prometheus could not be read
    upcoming: Sequence[Upcoming] = ()
    next_end: datetime | None = None


@dataclass(frozen=True)
class Handoff:
    """The note's sections as lists of lines (for the op log) and its Markdown."""

    changes: tuple[str, ...]
    failures: tuple[str, ...]
    incidents: tuple[str, ...]
    follow_ups: tuple[str, ...]
    waiting: tuple[str, ...]
    firing: tuple[str, ...]
    upcoming: tuple[str, ...]
    markdown: str = field(repr=False, default="")

    def summary(self) -> dict[str, int]:
        """Counts per section (the operation log's details)."""
        names = ("changes", "failures", "incidents", "follow_ups", "waiting", "firing", "upcoming")
        return {n: len(getattr(self, n)) for n in names}


def _real(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(i for i in items if i not in PLACEHOLDERS)


def in_shift(when: datetime, shift: Shift) -> bool:
    return shift.start <= when < shift.end


def _t(when: datetime) -> str:
    return when.strftime("%a %H:%M")


def _entry(e: EntryView) -> str:
    link = f" ([run]({e.flow_run_url}))" if e.flow_run_url else ""
    return f"#{e.id} {_t(e.started_at)} {e.operation}: {e.impact or e.reason}{link}"


def _incident(i: Incident, shift: Shift) -> str:
    who = f", acknowledged by {i.acknowledged_by}" if i.acknowledged_by else ""
    where = f" ({i.environment})" if i.environment else ""
    line = f"{i.severity} #{i.id} {i.title}{where}: {i.status}{who}"
    if i.severity == "P1" and in_shift(i.triggered_at, shift):
        line += f"; post-mortem: {i.postmortem or 'to be written (P1)'}"
    return line


def build_handoff(facts: HandoffFacts) -> Handoff:
    """The note for ``facts.incoming`` from ``facts.outgoing``'s shift."""
    shift = facts.shift
    mine = sorted(
        (e for e in facts.entries if in_shift(e.started_at, shift)), key=lambda e: e.started_at
    )
    changes = tuple(
        _entry(e)
        for e in mine
        if e.status == "succeeded" and not e.impact.lower().startswith(UNCHANGED)
    )
    failures = tuple(
        f"{_entry(e)} — {e.status}" + (f": {'; '.join(_real(e.issues))}" if _real(e.issues) else "")
        for e in mine
        if e.status in NOT_OK
    )
    relevant = [i for i in facts.incidents if in_shift(i.triggered_at, shift) or i.is_open]
    relevant.sort(key=lambda i: (i.severity, i.triggered_at))
    incidents = tuple(_incident(i, shift) for i in relevant)
    follow_ups = tuple(
        [f"#{e.id} {e.operation}: {f}" for e in mine for f in _real(e.follow_up)]
        + [f"incident #{i.id} is still {i.status}" for i in relevant if i.is_open]
        + [
            f"incident #{i.id}: write the post-mortem"
            for i in relevant
            if i.severity == "P1" and in_shift(i.triggered_at, shift) and not i.postmortem
        ]
    )
    waiting = tuple(
        f"{p.deployment} run {p.name} paused since {_t(p.since)} "
        f"({(facts.now - p.since).total_seconds() / 60:.0f} min)"
        + (f" ([open]({p.url}))" if p.url else "")
        for p in sorted(facts.paused, key=lambda p: p.since)
    )
    firing = tuple(
        f"{a.get('labels', {}).get('alertname', '?')} "
        f"({a.get('labels', {}).get('environment') or a.get('labels', {}).get('env') or '-'})"
        f", {a.get('labels', {}).get('severity', '?')}"
        for a in facts.firing or ()
    )
    horizon = facts.next_end
    upcoming = tuple(
        f"{_t(u.at)} {u.deployment}"
        for u in sorted(facts.upcoming, key=lambda u: u.at)
        if u.at >= facts.now and (horizon is None or u.at < horizon)
    )
    note = Handoff(changes, failures, incidents, follow_ups, waiting, firing, upcoming)
    return replace(note, markdown=_markdown(facts, note))


def _markdown(facts: HandoffFacts, note: Handoff) -> str:
    shift = facts.shift
    title = (
        f"# Handoff: {facts.outgoing} → {facts.incoming}\n\n"
        f"Shift {shift.index}, {shift.start:%Y-%m-%d %H:%M} → {shift.end:%Y-%m-%d %H:%M} UTC; "
        f"written {facts.now:%Y-%m-%d %H:%M} UTC.\n"
    )
    sections = (
        ("Changes made", note.changes, "no change was made"),
        ("Failed or refused runs", note.failures, "none"),
        ("Incidents", note.incidents, "no incident"),
        ("Open follow-ups", note.follow_ups, "none"),
        ("Waiting for a person", note.waiting, "nothing is paused"),
        (
            "Firing now",
            note.firing,
            "no alert is firing"
            if facts.firing is not None
            else "unknown: Prometheus could not be read",
        ),
        ("Scheduled in the next shift", note.upcoming, "nothing scheduled"),
    )
    out = [title]
    for name, lines, empty in sections:
        out.append(f"\n## {name}\n")
        out.extend(f"- {line}" for line in lines) if lines else out.append(f"_{empty}_")
    return "\n".join(out) + "\n"


#: A note written this soon after a shift change is about the shift that just ended.
JUST_ENDED_S = 3600.0


def shift_to_hand_over(schedule: Schedule, now: datetime) -> tuple[Shift, Shift, str, str]:
    """``(shift, next shift, outgoing, incoming)`` of the handoff written at ``now``.

    At a shift change (the scheduled run, or within :data:`JUST_ENDED_S` after it) the note
    covers the shift that just ended; later in a shift (the outgoing engineer writing it
    ahead of the change) it covers the shift under way. Outgoing and incoming are the
    primaries at the covered shift's last moment and at the next shift's start (overrides
    count).
    """
    current = shift_at(schedule, now)
    if (now - current.start).total_seconds() < JUST_ENDED_S and current.index > 0:
        covered = shift_at(schedule, current.start - timedelta(seconds=1))
    else:
        covered = current
    following = shift_at(schedule, covered.end)
    last = min(now, covered.end - timedelta(seconds=1))
    outgoing = on_call_at(schedule, last).primary
    return covered, following, outgoing, following.who.primary
