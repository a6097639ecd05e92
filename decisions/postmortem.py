"""An incident in markdown: its timeline (rewritten after each step) and the post-mortem draft.

Both are pure renderings of the incident row, its timeline events and the operation-log
entries of runs during the incident; ``flows/incident.py`` publishes them as artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from decisions.incidents import Event, Incident, Page

#: The runbook's "respond to pages within 5 minutes".
RESPOND_WITHIN_S = 300.0


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _at(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _who(at: datetime | None, who: str | None) -> str:
    return f"{_at(at)} by {who}" if at and who else _at(at)


def summary_rows(incident: Incident) -> list[str]:
    rows = [
        ("status", incident.status),
        ("severity", incident.severity),
        ("source", incident.source),
        ("group", f"`{incident.group_key}`"),
        ("environment", incident.environment or "-"),
        ("runbook", incident.runbook or "-"),
        ("triggered", _at(incident.triggered_at)),
        ("acknowledged", _who(incident.acknowledged_at, incident.acknowledged_by)),
        ("mitigated", _who(incident.mitigated_at, incident.mitigated_by)),
        ("resolved", _who(incident.resolved_at, incident.resolved_by)),
        ("pages sent", incident.pages),
        ("incident flow run", incident.flow_run_id or "-"),
    ]
    if incident.reopenings:
        rows.insert(-2, ("reopened (the alert flapped)", f"{incident.reopenings} times"))
    return ["| field | value |", "|---|---|", *[f"| {k} | {_cell(v)} |" for k, v in rows]]


def timeline_rows(events: Sequence[Event]) -> list[str]:
    lines = ["| time | event | detail |", "|---|---|---|"]
    lines += [f"| {_at(e.at)} | {_cell(e.kind)} | {_cell(e.text)} |" for e in events]
    return lines


def timeline_markdown(incident: Incident, events: Sequence[Event]) -> str:
    """The incident and every timeline line so far."""
    lines = [
        f"# Incident {incident.id} ({incident.severity}, {incident.status}): "
        f"{_cell(incident.title)}",
        "",
        *summary_rows(incident),
        "",
        "## Timeline",
        "",
        *timeline_rows(events),
    ]
    return "\n".join(lines) + "\n"


def alert_rows(alerts: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| alert | status | severity | started | ended | labels |", "|---" * 6 + "|"]
    for alert in alerts:
        labels = dict(alert.get("labels") or {})
        name = labels.pop("alertname", alert.get("fingerprint"))
        severity = labels.pop("severity", "-")
        shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        lines.append(
            f"| {_cell(name)} | {_cell(alert.get('status'))} | {_cell(severity)} | "
            f"{_cell(alert.get('startsAt'))} | {_cell(alert.get('endsAt') or '-')} | "
            f"{_cell(shown)} |"
        )
    return lines


def open_questions(incident: Incident, entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Questions the review must answer, drafted from what the record shows."""
    questions = ["What was the root cause, and what would have prevented it?"]
    measured = incident.measurements()
    ack = measured["time_to_acknowledge_s"]
    if incident.acknowledged_at is None:
        questions.append(
            f"Nobody acknowledged ({incident.pages} pages sent): were the pages received?"
        )
    elif ack is not None and ack > RESPOND_WITHIN_S:
        questions.append(
            f"Acknowledged after {ack:.0f} s, beyond the runbook's {RESPOND_WITHIN_S:.0f} s: why?"
        )
    if incident.pages > 1:
        questions.append("The page escalated past the on-call: is the on-call schedule right?")
    if incident.reopenings:
        questions.append(
            f"The alert resolved and fired again {incident.reopenings} times: is its threshold, "
            "`for:` or `keep_firing_for:` right, or was the fix partial?"
        )
    if not incident.runbook_runs:
        what = incident.runbook or "this alert"
        questions.append(f"No automated triage ran for {what}: what was done by hand?")
    if not entries:
        questions.append("No runbook ran during the incident: which actions are missing a record?")
    starts = [a.get("startsAt") for a in incident.alerts if a.get("startsAt")]
    if starts:
        questions.append(
            f"The first alert started at {min(str(s) for s in starts)}: could it have been "
            "detected earlier?"
        )
    questions.append("Does the runbook need an update after this incident?")
    return questions


def postmortem_markdown(
    incident: Incident,
    events: Sequence[Event],
    entries: Sequence[Mapping[str, Any]],
) -> str:
    """The post-mortem draft: summary, timeline, alerts, measurements, actions, questions."""
    measured = incident.measurements()
    actions = [
        f"- {_cell(r.get('runbook'))}: deployment `{r.get('deployment')}`, flow run "
        f"{r.get('flow_run_id') or '-'}"
        for r in incident.runbook_runs
    ] or ["- no runbook run was started by the incident"]
    log = ["| started | operation | status | impact | flow run |", "|---|---|---|---|---|"]
    log += [
        f"| {_cell(e.get('started_at'))} | {_cell(e.get('operation'))} | {_cell(e.get('status'))}"
        f" | {_cell(e.get('impact'))} | {_cell(e.get('flow_run_id'))} |"
        for e in entries
    ]
    lines = [
        f"# Post-mortem draft: incident {incident.id} ({incident.severity}) "
        f"{_cell(incident.title)}",
        "",
        "Draft written when the incident was resolved; complete it in the review.",
        "",
        "## Summary",
        "",
        *summary_rows(incident),
        "",
        "## Timeline",
        "",
        *timeline_rows(events),
        "",
        "## Alerts",
        "",
        *alert_rows(incident.alerts),
        "",
        "## Measurements",
        "",
        "| measurement | value |",
        "|---|---|",
        *[f"| {k} | {'-' if v is None else v} |" for k, v in measured.items()],
        "",
        "## Actions",
        "",
        *actions,
        "",
        "## Operation log during the incident",
        "",
        *(log if entries else ["No operation-log entries between triggering and resolution."]),
        "",
        "## Open questions",
        "",
        *[f"- {q}" for q in open_questions(incident, entries)],
    ]
    return "\n".join(lines) + "\n"


def form_description(
    incident: Incident, events: Sequence[Event], asking: str, next_page: Page | None
) -> str:
    """What the person answering the incident's pause form reads above it.

    ``asking`` is ``"acknowledge"`` (escalation runs) or ``"resolve"``.
    """
    lines = [f"## Incident {incident.id} ({incident.severity}): {_cell(incident.title)}", ""]
    lines += summary_rows(incident)
    lines += ["", "Latest on the timeline:", "", *timeline_rows(events[-8:]), ""]
    if asking == "acknowledge":
        nxt = (
            f"Without an acknowledgement, **{next_page.level}** is paged "
            f"{next_page.after_s:.0f} s after the incident was triggered."
            if next_page
            else "Every escalation level has been paged."
        )
        lines += [
            "- **Acknowledge** (tick it, give your name): you are on it; escalation stops.",
            "- Leave it unticked to add your note to the timeline only.",
            f"- {nxt}",
        ]
    else:
        lines += [
            "- **Mitigated**: the impact has stopped, the cause may remain.",
            "- **Resolve**: the incident is over; it closes, and a P1/P2 gets a post-mortem "
            "draft. Alertmanager resolving the alert group closes it as well.",
            "- Neither: your note goes on the timeline.",
        ]
    return "\n".join(lines)
