"""Pure decisions of the triage runbooks: checklists with evidence, and what service-down does.

Every triage runbook (RUNBOOK.md "Runbook: Common Operational Tasks") walks a checklist; each
item is a :class:`Check`: passed (``True``), failed (``False``) or could not be checked
(``None``), with the evidence seen. :func:`checklist_rows` is the run's table artifact,
:func:`verdict` the checklist's outcome.

The service-down decision (:func:`decide_service_down`) reads the runbook's checklist::

    pods unreadable, no pods, or the database down  -> escalate (a restart cannot help)
    every pod Ready and the service healthy         -> nothing to do (false alarm / recovered)
    a deploy of the running image in the window     -> roll back to the newest earlier revision
      and an earlier revision with another image       with another image
    otherwise                                       -> restart (``kubectl rollout restart``)

and a mitigation that does not verify escalates (:func:`escalation_page`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from decisions.deploy_history import DeployRecord
from decisions.incidents import ESCALATION, Page
from decisions.records import Record
from decisions.releases import RevisionRecord
from opsflows.errors import ConfigurationError

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
#: The timeline kind of what a triage runbook found and did (``incident_events.kind``).
RUNBOOK_EVENT = "runbook"
MAX_DEPLOY_WINDOW_H = 24 * 7


@dataclass(frozen=True)
class Check(Record):
    """One checklist item: passed (True), failed (False) or not checkable (None), and why."""

    item: str
    passed: bool | None
    evidence: str

    @property
    def result(self) -> str:
        return PASS if self.passed else UNKNOWN if self.passed is None else FAIL


def checklist_rows(checks: Iterable[Check]) -> list[dict[str, str]]:
    """The table artifact's rows: item, result, evidence."""
    return [{"item": c.item, "result": c.result, "evidence": c.evidence} for c in checks]


def checklist_markdown(title: str, checks: Iterable[Check]) -> str:
    """The checklist as a markdown table (the run's summary, the timeline's detail)."""
    lines = [f"### {title}", "", "| item | result | evidence |", "|---|---|---|"]
    for c in checks:
        evidence = c.evidence.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {c.item} | {c.result} | {evidence} |")
    return "\n".join(lines) + "\n"


def verdict(checks: Iterable[Check]) -> str:
    """``fail`` when any item failed, ``unknown`` when one could not be checked, else ``pass``."""
    results = {c.result for c in checks}
    return FAIL if FAIL in results else UNKNOWN if UNKNOWN in results else PASS


def summary(checks: Sequence[Check]) -> str:
    """One line: how many passed, and the items that did not, with their evidence."""
    failed = [f"{c.item}: {c.evidence}" for c in checks if c.passed is not True]
    head = f"{sum(1 for c in checks if c.passed)}/{len(checks)} pass"
    return head + ("; " + "; ".join(failed) if failed else "")


def artifact_key(runbook: str, environment: str) -> str:
    """``triage-<runbook>-<environment>``, in the characters an artifact key may hold."""
    raw = f"triage-{runbook}-{environment}".lower()
    return re.sub(r"[^a-z0-9]+", "-", raw).strip("-")


def check_window(deploy_window_h: float) -> float:
    """The deploy window in hours, validated (0 < h <= one week)."""
    if not 0 < deploy_window_h <= MAX_DEPLOY_WINDOW_H:
        raise ConfigurationError(
            f"deploy_window_h must be in (0, {MAX_DEPLOY_WINDOW_H}], got {deploy_window_h}",
            hint="how many hours back a deploy counts as the likely cause (6 by default)",
        )
    return deploy_window_h


# --- facts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodFacts(Record):
    """One pod of the Deployment as ``kubectl get pods`` / ``describe`` shows it."""

    name: str
    phase: str
    ready: bool
    image: str
    restarts: int = 0
    waiting_reason: str | None = None
    #: The container's last termination (``lastState.terminated``): reason, exit code, when.
    last_terminated: str | None = None
    #: The last lines of the crashed container's log (``read_namespaced_pod_log``), if any.
    log_tail: str = ""

    def describe(self) -> str:
        state = "Ready" if self.ready else (self.waiting_reason or self.phase)
        text = f"{self.name} {state}"
        if self.restarts:
            text += f", {self.restarts} restarts"
        if self.last_terminated:
            text += f", last terminated: {self.last_terminated}"
        return text


@dataclass(frozen=True)
class ServiceDownFacts(Record):
    """What the service-down checklist found, as the decision reads it.

    ``None`` means "could not be checked" (the API did not answer).
    """

    environment: str
    healthy: bool | None
    pods: tuple[PodFacts, ...] | None
    database_up: bool | None
    current_revision: int
    current_image: str
    deploys: tuple[DeployRecord, ...] = ()
    rollback_to: RevisionRecord | None = None
    window_h: float = 6.0

    @property
    def all_ready(self) -> bool:
        return bool(self.pods) and all(p.ready for p in self.pods or ())


Action = Literal["none", "rollback", "restart", "escalate"]


@dataclass(frozen=True)
class Decision(Record):
    """What the runbook does, and why (the reason goes to the artifact, timeline and op log)."""

    action: Action
    reason: str
    to_revision: int | None = None
    to_image: str | None = None

    @property
    def changes(self) -> bool:
        return self.action in ("rollback", "restart")


def decide_service_down(facts: ServiceDownFacts) -> Decision:
    """Roll back, restart, escalate, or nothing (see the module docstring)."""
    env = facts.environment
    if facts.pods is None:
        return Decision("escalate", f"the pods of {env} could not be read: nothing to act on")
    if not facts.pods:
        return Decision("escalate", f"{env} has no pods (scaled to 0?): a restart cannot help")
    if facts.database_up is False:
        return Decision(
            "escalate",
            "the database is down: a rollback or restart of the web servers will not bring "
            "the service back",
        )
    if facts.all_ready and facts.healthy:
        return Decision(
            "none",
            f"every pod of {env} is Ready and /health answers 200: nothing to mitigate "
            "(a false alarm, or it recovered)",
        )
    if facts.deploys:
        last = facts.deploys[-1]
        deployed = f"{last.image} was deployed {last.at:%Y-%m-%d %H:%M} UTC ({last.what})"
        target = facts.rollback_to
        if target is not None:
            return Decision(
                "rollback",
                f"{deployed}, within {facts.window_h:g} h: roll back to revision "
                f"{target.revision} ({target.image})",
                to_revision=target.revision,
                to_image=target.image,
            )
        return Decision(
            "restart",
            f"{deployed}, but no earlier revision runs another image: restart the web servers",
        )
    return Decision(
        "restart",
        f"no deploy of {facts.current_image} in the last {facts.window_h:g} h: restart the "
        "web servers (no obvious cause)",
    )


def service_down_checks(facts: ServiceDownFacts, alerts: Check) -> list[Check]:
    """The checklist items of the diagnosis, in the runbook's order."""
    pods = facts.pods
    if pods is None:
        pods_check = Check("all pods Running and Ready", None, "the pods could not be read")
    else:
        not_ready = [p for p in pods if not p.ready]
        pods_check = Check(
            "all pods Running and Ready",
            bool(pods) and not not_ready,
            f"{len(pods) - len(not_ready)}/{len(pods)} Ready"
            + (": " + "; ".join(p.describe() for p in not_ready) if not_ready else ""),
        )
    crashed = [p for p in pods or () if p.last_terminated or p.log_tail or p.waiting_reason]
    logs = Check(
        "recent errors of crashing pods",
        not crashed if pods is not None else None,
        "; ".join(
            f"{p.name}: {p.waiting_reason or '-'}, {p.last_terminated or 'no termination'}"
            + (f", log: {p.log_tail}" if p.log_tail else "")
            for p in crashed
        )
        or "no pod crashed",
    )
    deploy = Check(
        f"no deploy in the last {facts.window_h:g} h",
        not facts.deploys,
        "; ".join(f"{d.source}: {d.image} at {d.at:%H:%M:%S} UTC, {d.what}" for d in facts.deploys)
        or f"{facts.current_image} (revision {facts.current_revision}) not deployed recently",
    )
    previous = facts.rollback_to
    return [
        alerts,
        pods_check,
        Check(
            "database up",
            facts.database_up,
            {True: "answers", False: "unreachable", None: "not checked"}[facts.database_up],
        ),
        Check(
            "service health",
            facts.healthy,
            {True: "/health 200", False: "/health failing", None: "unknown"}[facts.healthy],
        ),
        logs,
        deploy,
        Check(
            "previous revision available",
            previous is not None,
            f"revision {previous.revision}: {previous.image}"
            if previous
            else "none: no earlier revision runs another image (rolled-back and failed "
            "releases excluded)",
        ),
    ]


def alert_check(alerts: Sequence[Mapping[str, Any]] | None, environment: str) -> Check:
    """The "monitoring dashboard" item: which alerts fire for the environment.

    ``alerts`` is Prometheus' ``/api/v1/alerts`` list (None: Prometheus did not answer).
    """
    item = "alerts firing"
    if alerts is None:
        return Check(item, None, "Prometheus did not answer")
    firing = sorted(
        {
            f"{(a.get('labels') or {}).get('alertname')} "
            f"({(a.get('labels') or {}).get('severity', '?')})"
            for a in alerts
            if a.get("state") == "firing"
            and (a.get("labels") or {}).get("environment") == environment
        }
    )
    return Check(item, not firing, ", ".join(firing) if firing else f"none for {environment}")


def escalation_page(severity: str | None) -> Page:
    """Whom a runbook pages when its mitigation did not verify ("check with engineering").

    P1/P2 (and a run without an incident) page the engineering lead, the last escalation
    level; P3/P4 go to their severity's own route (e-mail; P4 is recorded only).
    """
    if severity in ("P3", "P4"):
        return Page("email", None, 0.0)
    return Page(ESCALATION[-1], ESCALATION[-1], 0.0)
