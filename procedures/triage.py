"""What every triage runbook shares: the checklist it publishes, the incident it reports to,
the escalation when its mitigation does not verify, and the verification itself.

A triage run (:func:`triage_run`) collects :class:`~decisions.triage.Check` items and
publishes them once, when it ends, as the table artifact ``triage-<runbook>-<environment>``
(every item pass/fail/unknown with its evidence), whatever the outcome. Given an incident, it
appends what it found and did to the incident's timeline (kind ``runbook``), marks the
incident ``mitigated`` (by the runbook) only after its own verification passed, and pages
engineering through the incident routing when it did not (:meth:`TriageRun.escalate`).
"""

# No `from __future__ import annotations`: flows pickled by value call into this module.

import contextlib
import time
from collections.abc import Iterator, Sequence

from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.incidents import MITIGATED, Incident, Page
from decisions.triage import (
    RUNBOOK_EVENT,
    Check,
    artifact_key,
    checklist_rows,
    escalation_page,
    summary,
    verdict,
)
from opsflows.errors import ConfigurationError, OpsError, scrub
from procedures.operation import current_run, deliver
from procedures.release import ROLLOUT_TIMEOUT_S
from tasks.bake import window_for
from tasks.incidents import add_event, move_incident, read_incident, record_page
from tasks.metrics import error_rate_query, query
from tasks.probe_traffic import TrafficProbe
from tasks.rollout import wait_for_rollout
from tasks.smoke import verify_serving

#: Synthetic requests per second sent while a recovery is verified (so the error rate has
#: traffic to judge, as the bake's probe does).
VERIFY_RPS = 5.0


class TriageRun:
    """One run of a triage runbook: its checklist, and the incident it works on (if any)."""

    def __init__(
        self,
        runbook: str,
        environment: str,
        incident: Incident | None,
        ops_db: PostgresTarget | None,
    ) -> None:
        self.runbook = runbook
        self.environment = environment
        self.incident = incident
        self.ops_db = ops_db
        self.checks: list[Check] = []
        self.published = False

    def record(self, *checks: Check) -> None:
        """Add checklist items (each appears once in the table, in the order recorded)."""
        self.checks.extend(checks)
        for c in checks:
            get_run_logger().info("%s: %s %s (%s)", self.runbook, c.item, c.result, c.evidence)

    @property
    def verdict(self) -> str:
        return verdict(self.checks)

    def publish(self) -> None:
        """The run's one table artifact (never raising: the op log still records the run)."""
        if self.published:
            return
        self.published = True
        key = artifact_key(self.runbook, self.environment)
        where = f" (incident {self.incident.id})" if self.incident else ""
        try:
            create_table_artifact(
                key=key,
                table=checklist_rows(self.checks),
                description=f"{self.runbook} checklist in {self.environment}{where}: "
                + summary(self.checks),
            )
        except Exception as exc:  # noqa: BLE001 - the op log keeps the checks too
            get_run_logger().warning("could not publish %s: %s", key, scrub(str(exc)))
        current_run().record.details["checks"] = [c.as_dict() for c in self.checks]

    def note(self, text: str) -> None:
        """Put a line on the incident's timeline (kind ``runbook``; never raising)."""
        if self.incident is None or self.ops_db is None:
            return
        try:
            add_event(self.ops_db, self.incident.id, RUNBOOK_EVENT, f"{self.runbook}: {text}")
        except Exception as exc:  # noqa: BLE001 - the op log still says what happened
            get_run_logger().warning("could not add to the timeline: %s", scrub(str(exc)))

    def mitigated(self, text: str) -> bool:
        """Mark the incident mitigated by this runbook (call only after verification passed)."""
        if self.incident is None or self.ops_db is None:
            return False
        return bool(move_incident(self.ops_db, self.incident.id, MITIGATED, self.runbook, text))

    def escalate(self, why: str, problem: str = "still down") -> int:
        """Page engineering (:func:`~decisions.triage.escalation_page`): the mitigation did not
        work or is not the runbook's to make. Recorded on the timeline and in the op log;
        the number of channels that took the page (never raising). ``problem`` says what
        is wrong in the page's subject ("still down", "still overloaded")."""
        severity = self.incident.severity if self.incident else None
        page = escalation_page(severity)
        subject = f"ESCALATED by {self.runbook}: {self.environment} {problem}"
        if self.incident is not None:
            subject += f" (incident {self.incident.id})"
        head = (
            f"{self.runbook} could not bring {self.environment} back"
            if problem == "still down"
            else f"{self.runbook} could not fix {self.environment} ({problem})"
        )
        if self.incident is not None:
            head += f" (incident {self.incident.id}, {self.incident.severity})"
        body = f"{head}: {why}\n\nChecklist: {summary(self.checks)}\nNeeds engineering now."
        delivered = _page(page, severity or "P1", subject, body)
        rec = current_run().record
        rec.details["escalated"] = {"level": page.level, "delivered": delivered, "why": why}
        rec.follow_up.append(f"{self.environment} needs a person: {why}")
        if self.incident is not None and self.ops_db is not None:
            self.note(f"escalated to {page.level}: {why}")
            try:
                record_page(self.ops_db, self.incident.id, page.level, delivered)
            except Exception as exc:  # noqa: BLE001 - the page itself went out
                get_run_logger().warning("could not record the page: %s", scrub(str(exc)))
        return delivered


def _page(page: Page, severity: str, subject: str, body: str) -> int:
    routing = current_run().routing
    if routing is None:
        get_run_logger().error("no notification routing: %s (%s)", subject, body)
        return 0
    refs = (routing.channel(page.channel) if page.channel else []) or routing.targets(severity)
    try:
        return deliver(refs, severity, subject, body)
    except Exception as exc:  # noqa: BLE001 - the escalation is recorded regardless
        get_run_logger().error("escalation page failed: %s", scrub(str(exc)))
        return 0


def read_run_incident(
    incident_id: int | None, environment: str, ops_db: PostgresTarget | None
) -> Incident | None:
    """The incident a triage run reports to, checked before anything changes.

    Raises:
        ConfigurationError: no operations database to read it from, or the incident is about
            another environment.
        NotFoundError: no such incident.
    """
    if incident_id is None:
        return None
    if ops_db is None:
        raise ConfigurationError(
            f"incident {incident_id} given but no operations database block to read it from",
            hint="create the ops-db block (opsflows bootstrap) or leave incident_id empty",
        )
    incident = read_incident(ops_db, incident_id)
    if incident.environment and incident.environment != environment:
        raise ConfigurationError(
            f"incident {incident_id} is about {incident.environment}, not {environment}",
            hint=f"run the runbook with environment={incident.environment}",
        )
    return incident


@contextlib.contextmanager
def triage_run(
    runbook: str, environment: str, incident: Incident | None, ops_db: PostgresTarget | None
) -> Iterator[TriageRun]:
    """A triage run whose checklist is published once when the body ends, however it ends."""
    run = TriageRun(runbook, environment, incident, ops_db)
    try:
        yield run
    finally:
        run.publish()


def verify_recovery(env: KubeEnvironment, image: str, verify_s: float) -> list[Check]:
    """Verify the service recovered after a rollback or restart: the rollout finished, it
    serves ``image`` healthily, and requests to ``/`` stay under the error-rate threshold
    (client-side over ``verify_s`` of probe traffic, and in Prometheus since the change)."""
    checks: list[Check] = []
    try:
        rollout = wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
        checks.append(Check("rollout finished", True, f"{rollout.message} in {rollout.seconds}s"))
    except OpsError as exc:
        return [Check("rollout finished", False, exc.message)]
    try:
        served = verify_serving(env.service_url, image, timeout_s=30.0)
        checks.append(
            Check("health verified", True, f"/health 200 from {image} in {served['seconds']}s")
        )
    except OpsError as exc:
        return [*checks, Check("health verified", False, exc.message)]
    # Judge only what the recovered release served (the window starts now, as the bake's).
    since = time.time()
    limit = env.thresholds.error_rate
    with TrafficProbe(env.service_url, VERIFY_RPS, verify_s + 5) as probe:
        time.sleep(verify_s)
    seen = probe.snapshot()
    rate = seen.error_rate
    checks.append(
        Check(
            "error rate (probe)",
            None if rate is None else rate <= limit,
            f"{seen.errors}/{seen.requests} requests to / failed"
            + (f" ({rate:.1%}, limit {limit:.1%})" if rate is not None else ""),
        )
    )
    window = window_for(since, time.time(), 60.0)
    try:
        measured = query(env.prometheus_url, error_rate_query(env.environment, window))
    except OpsError as exc:
        measured, why = None, f"query failed: {exc.message}"
    else:
        why = "no traffic in Prometheus yet" if measured is None else ""
    checks.append(
        Check(
            "error rate (Prometheus)",
            None if measured is None else measured <= limit,
            why or f"{measured:.2%} over {window} (limit {limit:.1%})",
        )
    )
    return checks


def verified(checks: Sequence[Check]) -> bool:
    """A recovery counts only when no verification item failed and health was seen."""
    health = any(c.item == "health verified" and c.passed for c in checks)
    return health and all(c.passed is not False for c in checks)
