"""Pure decisions of incident response: states, paging by severity, escalation, triage, watchdogs.

The runbook's severity table, as a paging plan (times since the incident was triggered)::

    severity  at once                        unless acknowledged
    P1        page on-call, post #incidents  +secondary_after_s: secondary; +lead_after_s: lead
    P2        post #incidents                +p2_page_after_s: page on-call, then as P1 from there
    P3        email (the P3 route)           -
    P4        recorded only                  -

An incident moves ``triggered → acknowledged → mitigated → resolved`` (never back; resolved
may come from any state), with one exception: a group Alertmanager resolved that fires again
within the reopen window flapped, and its incident reopens (:func:`reopening`) instead of a
second one opening. The flow (``flows/incident.py``) carries the plan out; the values
and rules are here, unit-tested without services.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from decisions.alertmanager import FIRING, SEVERITIES, AlertGroup
from decisions.alertmanager import RESOLVED as GROUP_RESOLVED

TRIGGERED, ACKNOWLEDGED, MITIGATED, RESOLVED = "triggered", "acknowledged", "mitigated", "resolved"
STATUSES = (TRIGGERED, ACKNOWLEDGED, MITIGATED, RESOLVED)
#: Timeline kinds of a flapping group: its resolved incident reopened; #incidents told.
REOPENED, ANNOUNCED = "reopened", "announced"
ALERTMANAGER, WATCHDOG = "alertmanager", "watchdog"
#: The routing channel of the runbook's "#incidents" Slack channel.
INCIDENTS_CHANNEL = "incidents"
#: Escalation levels after the on-call, as routing channel names (PagerDuty's rules 2 and 3).
ESCALATION = ("secondary", "lead")


@dataclass(frozen=True)
class Delays:
    """Paging delays (s): the runbook's by default (``Settings.incident_*``)."""

    p2_page_after_s: float = 900.0  # "P2: page within 15 minutes"
    secondary_after_s: float = 300.0  # "respond to pages within 5 minutes"
    lead_after_s: float = 600.0  # "page engineering lead if still not resolved in 10 minutes"


@dataclass(frozen=True)
class Page:
    """One notification of the plan: who, through which channel, how long after triggering.

    ``channel`` None means the severity's own route (``NotificationRouting.routes``).
    """

    level: str
    channel: str | None
    after_s: float


def paging_plan(severity: str, delays: Delays) -> tuple[Page, ...]:
    """The pages an incident of ``severity`` sends while nobody acknowledges it."""
    if severity == "P3":
        return (Page("email", None, 0.0),)
    if severity not in ("P1", "P2"):
        return ()
    first = 0.0 if severity == "P1" else delays.p2_page_after_s
    return (
        Page("on-call", None, first),
        Page(ESCALATION[0], ESCALATION[0], first + delays.secondary_after_s),
        Page(ESCALATION[1], ESCALATION[1], first + delays.lead_after_s),
    )


def announces(severity: str) -> bool:
    """P1 and P2 are posted to #incidents as soon as they open."""
    return severity in ("P1", "P2")


def waits_for_acknowledgement(severity: str) -> bool:
    """Only the paging severities escalate; P3 and P4 go straight to watching for resolution."""
    return severity in ("P1", "P2")


def needs_postmortem(severity: str) -> bool:
    return severity in ("P1", "P2")


def more_severe(a: str, b: str) -> str:
    return a if SEVERITIES.index(a) <= SEVERITIES.index(b) else b


def earlier_statuses(status: str) -> tuple[str, ...]:
    """The states an incident can move to ``status`` from (states never go back)."""
    return STATUSES[: STATUSES.index(status)]


@dataclass(frozen=True)
class Incident:
    """One row of the ``incidents`` table."""

    id: int
    group_key: str
    source: str
    title: str
    severity: str
    status: str
    triggered_at: datetime
    runbook: str | None = None
    environment: str | None = None
    alerts: tuple[Mapping[str, Any], ...] = ()
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    mitigated_at: datetime | None = None
    mitigated_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    pages: int = 0
    flow_run_id: str | None = None
    runbook_runs: tuple[Mapping[str, Any], ...] = ()
    postmortem: str | None = None
    reopenings: int = 0

    @property
    def is_open(self) -> bool:
        return self.status != RESOLVED

    @property
    def run_key(self) -> str:
        """Idempotency key of the incident run that responds to it since it (re)opened:
        a redelivery starts no second run, a reopening starts a run of its own."""
        again = f"-reopened-{self.reopenings}" if self.reopenings else ""
        return f"incident-{self.id}{again}"

    @property
    def acknowledged(self) -> bool:
        return self.status in (ACKNOWLEDGED, MITIGATED, RESOLVED) and bool(self.acknowledged_at)

    def elapsed_s(self, now: datetime) -> float:
        return max(0.0, (now - self.triggered_at).total_seconds())

    def measurements(self) -> dict[str, float | int | None]:
        """Time to acknowledge, mitigate, resolve (s) and the pages sent."""

        def since(at: datetime | None) -> float | None:
            return round((at - self.triggered_at).total_seconds(), 1) if at else None

        return {
            "time_to_acknowledge_s": since(self.acknowledged_at),
            "time_to_mitigate_s": since(self.mitigated_at),
            "time_to_resolve_s": since(self.resolved_at),
            "pages_sent": self.pages,
        }


@dataclass(frozen=True)
class Event:
    """One line of an incident's timeline."""

    at: datetime
    kind: str
    text: str


@dataclass(frozen=True)
class Opening:
    """What opens (or updates) an incident: its group, how bad, and the alerts behind it."""

    group_key: str
    source: str
    title: str
    severity: str
    alerts: tuple[Mapping[str, Any], ...]
    runbook: str | None = None
    environment: str | None = None
    resolved: bool = False


def alert_opening(group: AlertGroup) -> Opening:
    """The incident an Alertmanager notification opens, updates or resolves."""
    return Opening(
        group_key=group.group_key,
        source=ALERTMANAGER,
        title=group.title,
        severity=group.severity,
        alerts=tuple(a.as_record() for a in group.alerts),
        runbook=group.label("runbook"),
        environment=group.label("environment"),
        resolved=group.status == GROUP_RESOLVED,
    )


@dataclass(frozen=True)
class Reopening:
    """A resolved incident that a firing notification of its group brings back (flapping).

    Attributes:
        incident_id: The incident that reopens.
        status: Its status again: ``acknowledged`` when someone had acknowledged it (they
            are on it; escalation stays stopped), else ``triggered``.
        after_s: Seconds between its resolution and the group firing again.
    """

    incident_id: int
    status: str
    after_s: float

    @property
    def text(self) -> str:
        """Its timeline line."""
        return (
            f"the group fired again {self.after_s:.0f} s after it resolved (flapping); "
            f"{self.status} again"
        )


def reopening(
    latest: Incident | None, opening: Opening, now: datetime, window_s: float
) -> Reopening | None:
    """Whether a notification reopens the group's latest incident instead of opening one.

    Only a firing notification, only the group's own latest incident, only when Alertmanager
    resolved it (a person who resolved it closed it deliberately: a new incident opens), and
    only less than ``window_s`` after that (0 turns reopening off). ``now`` is the database's
    clock, the one ``resolved_at`` was stamped with.
    """
    if opening.resolved or latest is None or window_s <= 0:
        return None
    if latest.group_key != opening.group_key or latest.is_open or latest.resolved_at is None:
        return None
    if not (opening.source == ALERTMANAGER == latest.resolved_by):
        return None
    after_s = max(0.0, (now - latest.resolved_at).total_seconds())
    if after_s >= window_s:
        return None
    status = ACKNOWLEDGED if latest.acknowledged_at is not None else TRIGGERED
    return Reopening(latest.id, status, after_s)


def unannounced_reopening(events: Sequence[Event]) -> Event | None:
    """The latest reopening when #incidents was not told of anything since (it was told the
    incident resolved, so it must hear that it is back)."""
    for event in reversed(events):
        if event.kind == ANNOUNCED:
            return None
        if event.kind == REOPENED:
            return event
    return None


def told_since_opening(events: Sequence[Event], text: str) -> bool:
    """Whether #incidents already heard ``text`` since the incident (re)opened.

    Two runs of one incident can both see it closed (the run Alertmanager woke, and the one
    a redelivery started): the channel hears "resolved" once per opening, not once per run.
    """
    said = f"#{INCIDENTS_CHANNEL}: {text}"
    for event in reversed(events):
        if event.kind == REOPENED:
            return False
        if event.kind == ANNOUNCED and event.text.startswith(said):
            return True
    return False


def page_text(incident: Incident, level: str, run_url: str) -> tuple[str, str]:
    """Subject and body of a page (the channel adds the ``[P1]`` prefix)."""
    escalated = level in ESCALATION
    head = f"ESCALATED to {level}: " if escalated else ""
    subject = f"{head}incident {incident.id}: {incident.title}"
    lines = [
        f"Incident {incident.id} ({incident.severity}, {incident.status}): {incident.title}",
        f"Environment: {incident.environment or '-'}; runbook: {incident.runbook or '-'}",
        f"Alerts firing: {sum(1 for a in incident.alerts if a.get('status') == FIRING)}",
    ]
    if escalated:
        lines.append(f"Nobody acknowledged after {incident.pages} pages.")
    if run_url:
        lines.append(f"Acknowledge in the Prefect UI: {run_url} (Resume, tick acknowledge).")
    return subject, "\n".join(lines)


def merge_alerts(
    stored: Sequence[Mapping[str, Any]], incoming: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The incident's alerts after a notification, and what changed (timeline lines).

    Alerts are keyed by fingerprint; one the notification does not name is kept as it was.
    The same notification twice changes nothing (a redelivery adds no timeline line).
    """
    merged = {str(a["fingerprint"]): dict(a) for a in stored}
    changes: list[str] = []
    for alert in incoming:
        key = str(alert["fingerprint"])
        before = merged.get(key)
        name = _alert_name(alert)
        if before is None:
            summary = (alert.get("annotations") or {}).get("summary")
            changes.append(f"alert {name} {alert['status']}" + (f": {summary}" if summary else ""))
        elif before.get("status") != alert["status"]:
            again = " again" if alert["status"] == FIRING else ""
            changes.append(f"alert {name} {alert['status']}{again}")
        merged[key] = dict(alert)
    return list(merged.values()), changes


def _alert_name(alert: Mapping[str, Any]) -> str:
    labels = alert.get("labels") or {}
    name = str(labels.get("alertname") or alert["fingerprint"])
    where = labels.get("instance") or labels.get("environment")
    return f"{name} ({where})" if where else name


#: Seconds a pause must have left for the receiver to resume it: Prefect fails a run that is
#: resumed after its pause expired ("... and never resumed"), and the clocks of the receiver,
#: the server and the run's own timer differ by a little.
RESUME_MARGIN_S = 3.0


#: What Prefect's pause-expiration service sets on a run still Paused after its timeout.
PAUSE_EXPIRED = "The flow was paused and never resumed."


def pause_expired(state_type: str | None, message: str | None) -> bool:
    """Whether a run is Failed only because its pause expired on the server.

    Every pause of the runbooks handles its own timeout (the run sets itself Running again,
    ``procedures.operation.running_again``), but the server's service may fail it first: for
    a second or two the run reads Failed while its process goes on. Such a run is alive
    until it stays that way (its process died while paused).
    """
    return state_type == "FAILED" and (message or "").strip() == PAUSE_EXPIRED


def may_resume(pause_expires: datetime | None, now: datetime) -> bool:
    """Whether resuming a paused run is safe: its pause does not expire within the margin.

    Otherwise the run's own timeout comes first and it reads the incident row itself.
    """
    return pause_expires is None or (pause_expires - now).total_seconds() > RESUME_MARGIN_S


@dataclass(frozen=True)
class Answer:
    """What a person (or the receiver, waking the run) put in an incident form."""

    who: str
    note: str = ""
    acknowledge: bool = False
    mitigated: bool = False
    resolve: bool = False
