"""The operation log read back for people: ``opsflows oplog`` filters and the template fields.

Pure: the CLI (:mod:`opsflows.oplog_cli`) reads ``ops_log`` rows (:mod:`tasks.oplog`) and
turns each into an :class:`EntryView`, the runbook's template (Date/Time, Operation, Reason,
Impact, Duration, Issues, Follow-up) plus the approvals, the flow run's page in the Prefect UI
and the details. A field the entry does not know shows as :data:`UNKNOWN`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opsflows.errors import ConfigurationError
from opsflows.oplog import STATUSES, SUCCEEDED

#: Shown for a template field the entry does not know.
UNKNOWN = "—"
#: Shown for Issues / Follow-up of a run that succeeded and recorded none.
NONE = "none"

SINCE_FORMS = "a duration such as 7d, 12h or 30m, or an ISO date or time such as 2026-12-01"
_DURATION = re.compile(r"(\d+)\s*([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_since(text: str, now: datetime) -> datetime:
    """The earliest start time ``--since`` asks for: ``now`` minus a duration, or a date/time.

    A date or time without a zone is UTC.

    Raises:
        ConfigurationError: ``text`` is neither form (the message names both).
    """
    value = text.strip().lower()
    match = _DURATION.fullmatch(value)
    if match:
        amount = int(match.group(1))
        if amount <= 0:
            raise ConfigurationError(
                f"--since {text!r} is not after zero", hint=f"use {SINCE_FORMS}"
            )
        return now - timedelta(**{_UNITS[match.group(2)]: amount})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"--since {text!r} is neither a duration nor a date", hint=f"use {SINCE_FORMS}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_status(text: str) -> str:
    """The status ``--status`` names (``timed-out`` and ``timed_out`` mean ``timed out``).

    Raises:
        ConfigurationError: not one of :data:`opsflows.oplog.STATUSES`.
    """
    value = re.sub(r"[-_\s]+", " ", text.strip().lower())
    if value not in STATUSES:
        raise ConfigurationError(
            f"--status {text!r} is not a status of the operation log",
            hint="use one of: " + ", ".join(STATUSES),
        )
    return value


def parse_entry_ref(text: str) -> int | str:
    """``oplog show ID``: the entry's number, or the id (a UUID) of its flow run.

    Raises:
        ConfigurationError: neither a positive number nor a UUID.
    """
    value = text.strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ConfigurationError(
            f"{text!r} is not an operation-log entry id",
            hint="give the entry's number from `opsflows oplog` or its flow run's id",
        ) from None


def format_duration(seconds: float | None) -> str:
    """A duration as people read it: ``0.4 s``, ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds is None or seconds < 0:
        return UNKNOWN
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def flow_run_url(ui_url: str | None, flow_run_id: str | None) -> str:
    """The run's page in the Prefect UI ("" without a UI URL or a run)."""
    if not ui_url or not flow_run_id:
        return ""
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


@dataclass(frozen=True)
class EntryView:
    """One ``ops_log`` row in the runbook's template, every field a readable string."""

    id: int
    started_at: datetime
    finished_at: datetime | None
    operation: str
    status: str
    reason: str
    impact: str
    duration: str
    duration_s: float | None
    issues: tuple[str, ...]
    follow_up: tuple[str, ...]
    approvals: tuple[str, ...] = ()
    flow_run_id: str | None = None
    flow_run_url: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def date_time(self) -> str:
        return f"{self.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def entry_view(row: Mapping[str, Any], ui_url: str | None = None) -> EntryView:
    """The template fields of an ``ops_log`` row (its columns, and what ``details`` adds).

    Issues are the recorded ones plus approvals that were refused (``approval_refusals``)
    and the step a run failed at (``failed_step``); Follow-up is the recorded one. Either,
    left empty by a run that succeeded, is "none"; by any other run, unknown.
    """
    details = row.get("details") or {}
    if not isinstance(details, Mapping):
        details = {"value": details}
    status = str(row.get("status") or UNKNOWN)
    issues = _items(row.get("issues")) + _derived_issues(details)
    follow_up = _items(row.get("follow_up"))
    if "follow_ups" in details:
        follow_up += tuple(str(f) for f in _as_list(details["follow_ups"]) if str(f).strip())
    empty = (NONE,) if status == SUCCEEDED else (UNKNOWN,)
    started = row["started_at"]
    finished = row.get("finished_at")
    seconds = row.get("duration_s")
    if seconds is None and finished is not None:
        seconds = (finished - started).total_seconds()
    run_id = row.get("flow_run_id")
    return EntryView(
        id=int(row["id"]),
        started_at=started,
        finished_at=finished,
        operation=str(row.get("operation") or UNKNOWN),
        status=status,
        reason=_text(row.get("reason")),
        impact=_text(row.get("impact")),
        duration=format_duration(None if seconds is None else float(seconds)),
        duration_s=None if seconds is None else float(seconds),
        issues=issues or empty,
        follow_up=follow_up or empty,
        approvals=_approvals(details),
        flow_run_id=str(run_id) if run_id else None,
        flow_run_url=flow_run_url(ui_url, str(run_id) if run_id else None),
        details=dict(details),
    )


def _text(value: Any) -> str:
    text = str(value).strip() if value is not None else ""
    return text or UNKNOWN


def _items(value: Any) -> tuple[str, ...]:
    """The items of a "; "-joined column (how :func:`tasks.oplog.insert_entry` writes them)."""
    if not value:
        return ()
    return tuple(part.strip() for part in str(value).split("; ") if part.strip())


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _derived_issues(details: Mapping[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    if details.get("failed_step"):
        found.append(f"failed at step {details['failed_step']}")
    for refusal in _as_list(details.get("approval_refusals") or []):
        if isinstance(refusal, Mapping):
            who = refusal.get("approver") or "someone"
            found.append(
                f"approval refused at {refusal.get('gate', 'a gate')}: {who} "
                f"({refusal.get('why', 'no reason given')})"
            )
    return tuple(found)


def _approvals(details: Mapping[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    for given in _as_list(details.get("approvals") or []):
        if isinstance(given, Mapping):
            role = f" ({given['role']})" if given.get("role") else ""
            why = f": {given['reason']}" if given.get("reason") else ""
            who, gate = given.get("approver", UNKNOWN), given.get("gate", UNKNOWN)
            found.append(f"{who}{role} at {gate}{why}")
    return tuple(found)
