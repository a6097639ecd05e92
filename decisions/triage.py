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
from datetime import datetime, timedelta
from typing import Any, Literal

from decisions.incidents import ESCALATION, Page
from decisions.records import Record
from decisions.releases import RevisionRecord
from opsflows.errors import ConfigurationError
from opsflows.oplog import CRASHED, FAILED

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
#: The timeline kind of what a triage runbook found and did (``incident_events.kind``).
RUNBOOK_EVENT = "runbook"
#: Operations whose op-log rows are deploys (``flows/deploy.py``, ``flows/operate.py``).
DEPLOY_OPERATIONS = ("staged deploy", "hotfix")
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
class DeployRecord(Record):
    """A deploy of an image to an environment, from the op log or the rollout history."""

    source: str  # "op log" or "rollout history"
    environment: str
    image: str
    at: datetime
    what: str
    #: The deploy failed in this environment: the image is no rollback target here.
    failed: bool = False


def oplog_deploy(row: Mapping[str, Any], environment: str) -> DeployRecord | None:
    """The deploy an ``ops_log`` row records for ``environment``, or None.

    A staged deploy always changes staging and changes production once its release started
    (``production_started_at``); a hotfix changes the environment it recorded as its rollback
    target (production by default).
    """
    operation = str(row.get("operation") or "")
    details = row.get("details") or {}
    image = details.get("image")
    if operation not in DEPLOY_OPERATIONS or not image:
        return None
    if operation == "hotfix":
        touched = {str((details.get("rollback_target") or {}).get("environment") or "production")}
    else:
        touched = {"staging"} | ({"production"} if details.get("production_started_at") else set())
    if environment not in touched:
        return None
    at = row.get("finished_at") or row.get("started_at")
    if not isinstance(at, datetime):
        return None
    status = str(row.get("status") or "?")
    # A staged deploy fails where it stopped: in production once its release started.
    failed_in = max(touched, key=lambda e: e == "production")
    failed = status in (FAILED, CRASHED) and environment == failed_in
    return DeployRecord("op log", environment, str(image), at, f"{operation} ({status})", failed)


def abandoned_revisions(history: Sequence[RevisionRecord]) -> set[int]:
    """Revisions a rollback moved away from: those between a reused ReplicaSet's earlier
    revision and the one the rollback gave it (rev 1 good, rev 2 bad, undo: rev 3 is the
    good ReplicaSet again, and rev 2 was abandoned)."""
    known = {r.revision for r in history}
    out: set[int] = set()
    for r in history:
        marks = sorted({*r.earlier_revisions, r.revision})
        for low, high in zip(marks, marks[1:], strict=False):
            out |= {n for n in known if low < n < high}
    return out


def rollback_target(
    history: Sequence[RevisionRecord], current: int, bad_images: Iterable[str] = ()
) -> RevisionRecord | None:
    """The newest revision before ``current`` that runs another image, that no rollback
    abandoned and whose image is not in ``bad_images`` (its deploy failed here, per the op
    log). A restart keeps the image, so ``rollout undo`` to the revision just before could
    land on the same release; an abandoned or failed one is a release already found bad."""
    by_revision = {r.revision: r for r in history}
    now = by_revision.get(current)
    if now is None:
        return None
    skip, bad = abandoned_revisions(history), set(bad_images)
    earlier = [
        r
        for r in history
        if r.revision < current
        and r.image != now.image
        and r.revision not in skip
        and r.image not in bad
    ]
    return max(earlier, key=lambda r: r.revision) if earlier else None


def recent_deploys(
    environment: str,
    current: int,
    history: Sequence[RevisionRecord],
    oplog: Sequence[DeployRecord],
    now: datetime,
    window_h: float,
) -> tuple[DeployRecord, ...]:
    """The deploys in the last ``window_h`` hours that put the running image there.

    From the op log: a deploy to ``environment`` whose image is the one running now (a deploy
    that was rolled back since is not to blame). From the rollout history: the current
    revision's ReplicaSet was created in the window with an image other than the revision
    before it (a deploy made outside the runbooks); a ReplicaSet a rollback reused is not a
    deploy.
    """
    since = now - timedelta(hours=window_h)
    running = next((r for r in history if r.revision == current), None)
    found = [
        d
        for d in oplog
        if d.environment == environment
        and d.at >= since
        and running is not None
        and d.image == running.image
    ]
    if running is not None and running.created_at is not None and not running.reused:
        before = [r for r in history if r.revision < current]
        previous = max(before, key=lambda r: r.revision) if before else None
        if running.created_at >= since and previous is not None:
            if previous.image != running.image:
                found.append(
                    DeployRecord(
                        "rollout history",
                        environment,
                        running.image,
                        running.created_at,
                        f"revision {running.revision} ({running.replicaset}) replaced "
                        f"{previous.image} (revision {previous.revision})",
                    )
                )
    return tuple(sorted(found, key=lambda d: d.at))


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
