"""The operation-log entry (the runbook's "Operation Logs Template") as a typed value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: How a run ended, as the operation log says it.
SUCCEEDED, FAILED, REJECTED, TIMED_OUT, CANCELLED, CRASHED = (
    "succeeded",
    "failed",
    "rejected",
    "timed out",
    "cancelled",
    "crashed",
)
STATUSES = (SUCCEEDED, FAILED, REJECTED, TIMED_OUT, CANCELLED, CRASHED)
NO_CHANGE = "no change"

#: The ``ops_log`` table (created by the first write, and by the devstack at ``up`` so its
#: monitoring can read it from the start).
DDL = """
CREATE TABLE IF NOT EXISTS ops_log (
    id          bigserial PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    operation   text NOT NULL,
    status      text NOT NULL,
    reason      text NOT NULL,
    impact      text NOT NULL,
    duration_s  double precision NOT NULL,
    issues      text NOT NULL,
    follow_up   text NOT NULL,
    flow_run_id text,
    details     jsonb NOT NULL DEFAULT '{}'
);
-- Exactly one entry per flow run: a retried write, or the crashed-run recorder racing the
-- run's own late write, cannot add a second one.
CREATE UNIQUE INDEX IF NOT EXISTS ops_log_one_per_run ON ops_log (flow_run_id)
    WHERE flow_run_id IS NOT NULL
"""


def default_impact(status: str, changing: str | None) -> str:
    """The Impact of a run that recorded none: "no change", unless it was changing something.

    ``changing`` names what the run held a change slot for (or otherwise started to change);
    then the honest answer is that it may have changed, and someone should look.
    """
    if changing is None:
        return NO_CHANGE
    return f"{changing} may have changed: the run ended {status} before recording its impact"


@dataclass(frozen=True)
class OpLogEntry:
    """One run of one procedure: what, why, impact, how long, what went wrong, what next."""

    operation: str
    reason: str
    started_at: datetime
    finished_at: datetime
    status: str
    impact: str = ""
    issues: tuple[str, ...] = ()
    follow_up: tuple[str, ...] = ()
    flow_run_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return round((self.finished_at - self.started_at).total_seconds(), 3)


def render_markdown(entry: OpLogEntry) -> str:
    """The entry in the runbook's template, as markdown."""
    issues = "; ".join(entry.issues) or "none"
    follow = "; ".join(entry.follow_up) or "none"
    lines = [
        f"# Operation log: {entry.operation}",
        "",
        "| field | value |",
        "|---|---|",
        f"| Date/Time | {entry.started_at:%Y-%m-%d %H:%M:%S %Z} |",
        f"| Operation | {entry.operation} |",
        f"| Status | {entry.status} |",
        f"| Reason | {_cell(entry.reason)} |",
        f"| Impact | {_cell(entry.impact or 'none recorded')} |",
        f"| Duration | {entry.duration_s:.1f} s |",
        f"| Issues | {_cell(issues)} |",
        f"| Follow-up | {_cell(follow)} |",
    ]
    if entry.flow_run_id:
        lines.append(f"| Flow run | {entry.flow_run_id} |")
    if entry.details:
        lines += ["", "## Details", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(str(v))} |" for k, v in entry.details.items()]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
