"""Operation-log entries as text and JSON: the list ``opsflows oplog`` prints, one entry in the
runbook's template (``opsflows oplog show ID``), and the machine-readable form (``--json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from decisions.oplog_view import UNKNOWN, EntryView

#: Widths of the list's columns (longer values end in "…").
_OPERATION_W, _STATUS_W, _REASON_W, _ISSUES_W = 25, 9, 30, 34
_LABEL_W = 11


def clip(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters (the cut marked with "…")."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render_list(views: Sequence[EntryView]) -> str:
    """The entries as a table, one line each (newest first, as given)."""
    header = (
        f"{'id':>6}  {'date/time (UTC)':19}  {'operation':{_OPERATION_W}}  "
        f"{'status':{_STATUS_W}}  {'duration':>11}  {'reason':{_REASON_W}}  issues"
    )
    lines = [header]
    for v in views:
        issues = v.issues[0] if len(v.issues) == 1 else f"{len(v.issues)}: {v.issues[0]}"
        lines.append(
            f"{v.id:>6}  {v.date_time.removesuffix(' UTC'):19}  "
            f"{clip(v.operation, _OPERATION_W):{_OPERATION_W}}  "
            f"{clip(v.status, _STATUS_W):{_STATUS_W}}  {v.duration:>11}  "
            f"{clip(v.reason, _REASON_W):{_REASON_W}}  {clip(issues, _ISSUES_W)}"
        )
    return "\n".join(lines) + "\n"


def render_entry(view: EntryView) -> str:
    """One entry in full: the runbook's template, then approvals, the flow run and details."""
    finished = ""
    if view.finished_at is not None:
        start, end = view.started_at.astimezone(UTC), view.finished_at.astimezone(UTC)
        finished = (
            f" (finished {end:%H:%M:%S})"
            if end.date() == start.date()
            else (f" (finished {end:%Y-%m-%d %H:%M:%S})")
        )
    lines = [
        f"Operation log entry {view.id}",
        "",
        _field("Date/Time", f"{view.date_time}{finished}"),
        _field("Operation", view.operation),
        _field("Status", view.status),
        _field("Reason", view.reason),
        _field("Impact", view.impact),
        _field("Duration", view.duration),
        *_listed("Issues", view.issues),
        *_listed("Follow-up", view.follow_up),
    ]
    if view.approvals:
        lines += _listed("Approvals", view.approvals)
    if view.flow_run_id:
        lines.append(_field("Flow run", view.flow_run_id))
        lines.append(_field("", view.flow_run_url or "(no Prefect UI URL: set PREFECT_UI_URL)"))
    else:
        lines.append(_field("Flow run", UNKNOWN))
    if view.details:
        lines += ["", "Details:"]
        shown = json.dumps(dict(view.details), indent=2, sort_keys=True, default=str)
        lines += ["  " + line for line in shown.splitlines()]
    return "\n".join(lines) + "\n"


def as_json(view: EntryView) -> dict[str, Any]:
    """The entry as a JSON object: the template fields by name, times in ISO 8601."""
    return {
        "id": view.id,
        "date_time": view.started_at.isoformat(),
        "finished_at": view.finished_at.isoformat() if view.finished_at else None,
        "operation": view.operation,
        "status": view.status,
        "reason": view.reason,
        "impact": view.impact,
        "duration": view.duration,
        "duration_s": view.duration_s,
        "issues": list(view.issues),
        "follow_up": list(view.follow_up),
        "approvals": list(view.approvals),
        "flow_run_id": view.flow_run_id,
        "flow_run_url": view.flow_run_url or None,
        "details": dict(view.details),
    }


def json_line(view: EntryView) -> str:
    return json.dumps(as_json(view), sort_keys=True, default=str)


def _field(label: str, value: str) -> str:
    head = f"{label}:" if label else ""
    return f"{head:{_LABEL_W}} {value}"


def _listed(label: str, items: Sequence[str]) -> list[str]:
    """One item on the label's line; several as a list under it."""
    if len(items) == 1:
        return [_field(label, items[0])]
    return [f"{label}:"] + [f"  - {item}" for item in items]
