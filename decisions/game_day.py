"""Pure decisions of the game day: which faults, where, and how each one went.

A game day (RUNBOOK.md "Incident Response" practised, not read) injects faults one after
another into an environment, lets monitoring detect each, the incident flow page and start
the triage runbook the alert names, and records per fault::

    alert_s      fault injected -> the alert fired (Alertmanager's startsAt of the incident's
                 alert)
    page_s       fault injected -> the first page of its incident (P1/P2; P3 is an e-mail)
    mitigated_s  fault injected -> the runbook's change verified (incident mitigated, or the
                 runbook run succeeded with a change)
    resolved_s   fault injected -> Alertmanager resolved the incident
    action       what the runbook did (its decision), and whether a person was asked

Outcomes (:func:`outcome`)::

    not detected   no incident opened within the fault's time
    not triaged    an incident, but no runbook ran (or the alert named another runbook)
    asked          the runbook paused for a person (nobody answers on a game day: its pause
                   times out and it changes nothing): a finding, not a failure of the drill
    not mitigated  the runbook ran and did not verify a recovery
    handled        the runbook's change verified (and, given the time, Alertmanager resolved)

Production takes a typed confirmation (:func:`check_request`): the environment's name, typed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from decisions.alert_labels import (
    DISK_FULL,
    MEMORY_LEAK,
    ONE_POD_DOWN,
    SERVICE_DOWN,
    TRAFFIC_SPIKE,
)
from decisions.records import Record
from opsflows.errors import ConfigurationError

DATABASE_SLOW = "database-slow"
CONNECTION_POOL = "connection-pool-exhausted"
PRODUCTION = "production"
ALL = "all"

HANDLED, ASKED, NOT_DETECTED, NOT_TRIAGED, NOT_MITIGATED = (
    "handled",
    "asked",
    "not detected",
    "not triaged",
    "not mitigated",
)


@dataclass(frozen=True)
class GameFault(Record):
    """A fault the game day can inject, the alerts that should see it, the runbook that
    should handle it."""

    name: str
    description: str
    alerts: tuple[str, ...]
    runbook: str
    #: Its alerts carry the infrastructure's environment, not the one injected into (the
    #: devstack's one PostgreSQL serves both environments and is labelled production).
    shared: bool = False


#: The seven faults of issue 14, in the order "all" injects them (the least disruptive
#: first; the crash loop, which replaces the release, last).
FAULTS: dict[str, GameFault] = {
    f.name: f
    for f in (
        GameFault(
            "pod-killed",
            "one pod of the Deployment stops being Ready (kubesim); the others serve",
            ("OnePodDown",),
            ONE_POD_DOWN,
        ),
        GameFault(
            "traffic-spike",
            "the app's pods report a queue over 1000 and their CPU near the limit",
            ("RequestQueueHigh", "PodCpuHigh"),
            TRAFFIC_SPIKE,
        ),
        GameFault(
            "disk-full",
            "old log files fill the app's volume past 80%",
            ("VolumeFull",),
            DISK_FULL,
        ),
        GameFault(
            "pool-exhausted",
            "every connection of the app's database pool is taken",
            ("DbPoolExhausted",),
            CONNECTION_POOL,
        ),
        GameFault(
            "memory-leak",
            "the app's pods grow their memory until the limit",
            ("PodMemoryHigh", "HostMemoryHigh"),
            MEMORY_LEAK,
        ),
        GameFault(
            "slow-queries",
            "a session idle in transaction holds a lock that queries wait behind (the alert "
            "fires once the transaction is 5 minutes old, when the runbook's auto-kill policy "
            "applies)",
            ("LongRunningTransaction", "DatabaseConnectionsHigh"),
            DATABASE_SLOW,
            shared=True,
        ),
        GameFault(
            "crash-loop",
            "a release whose containers exit at start replaces every pod (Recreate)",
            ("ServiceDown",),
            SERVICE_DOWN,
        ),
    )
}

MAX_FAULT_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class GameDayPlan(Record):
    """What a validated request runs."""

    environment: str
    faults: tuple[str, ...]
    fault_timeout_s: float


def check_request(
    environment: str, faults: Sequence[str], confirm: str, fault_timeout_s: float
) -> GameDayPlan:
    """Validate a game-day request before anything is injected.

    Raises:
        ConfigurationError: no or unknown faults, a bad timeout, or production without the
            typed confirmation.
    """
    env = environment.strip()
    if not env:
        raise ConfigurationError("environment is empty", hint="a KubeEnvironment block name")
    names = [f.strip() for f in faults if f.strip()]
    if not names:
        raise ConfigurationError(
            "no fault chosen", hint=f"one or more of {', '.join(FAULTS)}, or {ALL!r}"
        )
    if ALL in names:
        chosen: tuple[str, ...] = tuple(FAULTS)
    else:
        unknown = [n for n in names if n not in FAULTS]
        if unknown:
            raise ConfigurationError(
                f"unknown fault(s): {', '.join(unknown)}",
                hint=f"choose from {', '.join(FAULTS)}, or {ALL!r}",
            )
        chosen = tuple(dict.fromkeys(names))
    if not 30 <= fault_timeout_s <= MAX_FAULT_TIMEOUT_S:
        raise ConfigurationError(
            f"fault_timeout_s must be in [30, {MAX_FAULT_TIMEOUT_S:g}], got {fault_timeout_s}",
            hint="how long each fault may take from injection to resolution",
        )
    if env == PRODUCTION and confirm.strip() != PRODUCTION:
        raise ConfigurationError(
            "a game day in production needs a typed confirmation",
            hint="set confirm to the word production to accept real customer impact; "
            "game days belong on staging",
        )
    return GameDayPlan(env, chosen, float(fault_timeout_s))


@dataclass(frozen=True)
class FaultResult(Record):
    """How one injected fault went."""

    fault: str
    environment: str
    injected_at: datetime
    outcome: str
    incident_id: int | None = None
    alert: str | None = None
    runbook: str | None = None
    action: str | None = None
    asked: bool = False
    alert_s: float | None = None
    page_s: float | None = None
    mitigated_s: float | None = None
    resolved_s: float | None = None
    notes: tuple[str, ...] = field(default=())


def seconds_after(start: datetime, at: datetime | None) -> float | None:
    """``at - start`` in seconds (rounded to 0.1), or None."""
    return None if at is None else round((at - start).total_seconds(), 1)


def matching_alert(fault: GameFault, alerts: Iterable[Mapping[str, Any]]) -> str | None:
    """The first of the incident's alerts that is one the fault should raise."""
    for a in alerts:
        name = (a.get("labels") or {}).get("alertname")
        if name in fault.alerts:
            return str(name)
    return None


def alert_started(alerts: Iterable[Mapping[str, Any]], alertname: str) -> datetime | None:
    """Alertmanager's ``startsAt`` of ``alertname`` among the incident's alerts (earliest)."""
    starts = []
    for a in alerts:
        if (a.get("labels") or {}).get("alertname") != alertname or not a.get("startsAt"):
            continue
        try:
            starts.append(datetime.fromisoformat(str(a["startsAt"]).replace("Z", "+00:00")))
        except ValueError:
            continue
    return min(starts) if starts else None


@dataclass(frozen=True)
class RunbookOutcome(Record):
    """What the incident's runbook run did, from its op-log row and its states."""

    runbook: str
    status: str | None  # the op-log status (succeeded, failed, ...), None: no row yet
    action: str | None
    changed: bool
    asked: bool
    finished_at: datetime | None


def outcome(
    fault: GameFault,
    incident_id: int | None,
    runs: Sequence[RunbookOutcome],
    mitigated: bool,
) -> str:
    """The fault's outcome (see the module docstring)."""
    if incident_id is None:
        return NOT_DETECTED
    ours = [r for r in runs if r.runbook == fault.runbook]
    if not ours:
        return NOT_TRIAGED
    if mitigated or any(r.status == "succeeded" and r.changed for r in ours):
        return HANDLED
    if any(r.asked for r in ours):
        return ASKED
    return NOT_MITIGATED


def result_rows(results: Iterable[FaultResult]) -> list[dict[str, str]]:
    """The game day's table artifact: one row per fault."""

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:g}"

    return [
        {
            "fault": r.fault,
            "outcome": r.outcome,
            "incident": "-" if r.incident_id is None else str(r.incident_id),
            "alert": r.alert or "-",
            "runbook": r.runbook or "-",
            "action": r.action or "-",
            "person asked": "yes" if r.asked else "no",
            "alert_s": fmt(r.alert_s),
            "page_s": fmt(r.page_s),
            "mitigated_s": fmt(r.mitigated_s),
            "resolved_s": fmt(r.resolved_s),
            "notes": "; ".join(r.notes) or "-",
        }
        for r in results
    ]


def summary(results: Sequence[FaultResult]) -> str:
    """One line: how many faults were handled, and those that were not."""
    handled = sum(1 for r in results if r.outcome == HANDLED)
    others = [f"{r.fault}: {r.outcome}" for r in results if r.outcome != HANDLED]
    return f"{handled}/{len(results)} handled" + ("; " + "; ".join(others) if others else "")
