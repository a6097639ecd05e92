"""Runbook "Service is down": check, roll back a recent deploy or restart, verify, escalate.

RUNBOOK.md's checklist, in order::

    ☐ Check monitoring dashboard for alerts        Prometheus' firing alerts for the environment
    ☐ Verify all servers are running                every pod Running and Ready (the client's
                                                    ``kubectl get pods``)
    ☐ Check database is up                          the application database answers
    ☐ Look at recent logs for errors                last termination and previous log of each
                                                    crashing pod
    ☐ Is it recent deployment? Rollback if needed   a deploy of the running image in the last
                                                    ``deploy_window_h`` (op log, rollout history)
                                                    -> roll back to the previous revision
    ☐ Restart web servers if no obvious cause       ``kubectl rollout restart``
    ☐ Check with engineering if still down          verification failed -> page engineering

The change holds the environment's change slot and is decided again under it (another change
may have fixed the service meanwhile). The incident (``incident_id``, given by the incident
flow) gets every step on its timeline and is marked mitigated only after the recovery is
verified; the checklist is the ``triage-service-down-<environment>`` table artifact.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from prefect import flow

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.deploy_history import (
    DEPLOY_OPERATIONS,
    failed_images,
    oplog_deploys,
    recent_deploys,
    rollback_target,
)
from decisions.triage import (
    Check,
    Decision,
    PodFacts,
    ServiceDownFacts,
    alert_check,
    check_window,
    decide_service_down,
    service_down_checks,
    summary,
)
from opsflows.errors import ConfigurationError, OpsError, VerificationFailed
from procedures.change_slot import change_slot, check_slots, require_slots
from procedures.operation import (
    APP_DB,
    OPS_DB,
    ROUTING,
    current_run,
    load_block,
    operation_log,
    try_load_ops_db,
    try_load_routing,
)
from procedures.triage import TriageRun, read_run_incident, triage_run, verified, verify_recovery
from tasks.metrics import firing_alerts
from tasks.oplog import read_operations
from tasks.pods import list_pods
from tasks.postgres import check_database
from tasks.rollout import current_release, restart_rollout, rollout_history, undo_rollout
from tasks.smoke import observe

RUNBOOK = "service-down"
#: How far back the op log is read for deploys that failed (their images are no target).
FAILED_LOOKBACK_H = 24 * 30


@flow(name="service-down")
def service_down(
    environment: str,
    incident_id: int | None = None,
    deploy_window_h: float = 6.0,
    verify_seconds: float = 10.0,
    lock_timeout_s: float = 600,
    database: str = APP_DB,
    ops_db: str = OPS_DB,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Triage a service that is down: check, roll back a recent deploy or restart, verify.

    Args:
        environment: KubeEnvironment block of the environment that is down.
        incident_id: The incident this run works on (the incident flow gives it): its
            timeline gets every step, and it is marked mitigated once recovery is verified.
        deploy_window_h: A deploy of the running image within this many hours is taken as
            the cause and rolled back.
        verify_seconds: How long recovery is watched under probe traffic (error rate).
        lock_timeout_s: How long to wait for another change of the environment to finish.
        database: PostgresTarget block of the application's database ("database up").
        ops_db: PostgresTarget block of the operations database (op log, incidents).
        routing: NotificationRouting block the escalation pages through.
    """
    what = f"{environment} down" + (f" (incident {incident_id})" if incident_id else "")
    ops_target = try_load_ops_db(ops_db)
    with operation_log(RUNBOOK, what, ops_target, try_load_routing(routing)) as rec:
        window_h = check_window(deploy_window_h)
        if not 1 <= verify_seconds <= 300:
            raise ConfigurationError(f"verify_seconds must be in [1, 300], got {verify_seconds}")
        env = load_block(KubeEnvironment, environment)
        app_db = load_block(PostgresTarget, database)
        incident = read_run_incident(incident_id, env.environment, ops_target)
        require_slots(env.environment)
        rec.details.update(environment=env.environment, incident_id=incident_id)
        with triage_run(RUNBOOK, env.environment, incident, ops_target) as triage:
            facts, alerts = diagnose(env, app_db, ops_target, window_h)
            decision = decide_service_down(facts)
            triage.record(*service_down_checks(facts, alerts))
            triage.note(f"checked: {summary(triage.checks)}")
            triage.note(f"decided {decision.action}: {decision.reason}")
            rec.details["decision"] = decision.as_dict()
            if decision.action == "none":
                rec.impact = f"no change: {decision.reason}"
                return {"action": "none", "reason": decision.reason}
            if decision.action == "escalate":
                return escalate(triage, decision.reason)
            with change_slot(env.environment, lock_timeout_s):
                # Decided again under the slot: a change that held it may have fixed it.
                facts, _ = diagnose(env, app_db, ops_target, window_h, alerts=False)
                again = decide_service_down(facts)
                if again != decision:
                    triage.note(f"decided again under the change slot: {again.action}")
                    rec.details["decision"] = again.as_dict()
                if again.action == "none":
                    triage.record(Check("recovered before the change", True, again.reason))
                    triage.note(f"no change: {again.reason}")
                    rec.impact = f"no change: {again.reason}"
                    return {"action": "none", "reason": again.reason}
                if again.action == "escalate":
                    return escalate(triage, again.reason)
                return mitigate(triage, env, again, verify_seconds)


def diagnose(
    env: KubeEnvironment,
    app_db: PostgresTarget,
    ops_db: PostgresTarget | None,
    window_h: float,
    alerts: bool = True,
) -> tuple[ServiceDownFacts, Check]:
    """Walk the checklist (read-only); the facts the decision reads, and the alerts item."""
    alert_item = Check("alerts firing", None, "not read again")
    if alerts:
        try:
            alert_item = alert_check(firing_alerts(env.prometheus_url), env.environment)
        except OpsError as exc:
            alert_item = Check("alerts firing", None, f"Prometheus: {exc.message}")
    health = observe(env.service_url.rstrip("/") + "/health", 5.0)
    pods: tuple[PodFacts, ...] | None = None
    current, history = None, []
    try:
        pods = list_pods(env)
        current = current_release(env)
        history = rollout_history(env)
    except OpsError:
        pods = None
    try:
        check_database(app_db)
        database_up: bool | None = True
    except OpsError:
        database_up = False
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    if ops_db is not None:
        try:
            # Older deploys than the window too: a failed one marks its image as no target.
            rows = read_operations(
                ops_db,
                list(DEPLOY_OPERATIONS),
                now - timedelta(hours=max(window_h, FAILED_LOOKBACK_H)),
            )
        except OpsError:
            rows = []  # the rollout history still tells a recent deploy
    deploys = oplog_deploys(rows, env.environment)
    bad_images = failed_images(deploys)
    revision = current.revision if current is not None else 0
    facts = ServiceDownFacts(
        environment=env.environment,
        healthy=health.status == 200,
        pods=pods,
        database_up=database_up,
        current_revision=revision,
        current_image=current.image if current is not None else "?",
        deploys=recent_deploys(env.environment, revision, history, deploys, now, window_h),
        rollback_to=rollback_target(history, revision, bad_images),
        window_h=window_h,
    )
    return facts, alert_item


def mitigate(
    triage: TriageRun, env: KubeEnvironment, decision: Decision, verify_s: float
) -> dict[str, Any]:
    """Roll back or restart (holding the slot), verify, then mark mitigated or escalate."""
    rec = current_run().record
    check_slots()  # safe point: nothing changed yet
    before = current_release(env)
    try:
        if decision.action == "rollback":
            undone = undo_rollout(env, decision.to_revision)
            image = undone.image
            done = f"rolled back from revision {undone.from_revision} to {undone.to_revision}"
        else:
            restart_rollout(env)
            image = before.image
            done = f"restarted every pod of {image}"
    except OpsError as exc:
        rec.impact = f"no change: the {decision.action} of {env.environment} failed"
        triage.record(Check(decision.action, False, exc.message))
        return escalate(triage, f"the {decision.action} failed: {exc.message}")
    rec.impact = f"{env.environment}: {done} ({before} before)"
    triage.record(Check(decision.action, True, done))
    triage.note(done)
    checks = verify_recovery(env, image, verify_s)
    triage.record(*checks)
    if not verified(checks):
        failed = "; ".join(f"{c.item}: {c.evidence}" for c in checks if c.passed is False)
        return escalate(triage, f"{done}, but {env.environment} is still down ({failed})")
    moved = triage.mitigated(f"{done}; health and error rate verified")
    triage.note(f"verified: {summary(checks)}")
    if triage.incident is not None and not moved:
        # Resolved meanwhile (Alertmanager saw the service back first), or mitigated by a
        # person: states never go back, so the verification stays a timeline line.
        triage.note("the incident was already resolved or mitigated; not marked again")
    rec.details.update(mitigated=moved, image=image)
    return {"action": decision.action, "image": image, "verified": True, "mitigated": moved}


def escalate(triage: TriageRun, why: str) -> NoReturn:
    """Page engineering and end the run failed: the service is still down."""
    triage.escalate(why)
    raise VerificationFailed(
        f"{triage.environment} is still down: {why}",
        hint="engineering was paged; look at the triage checklist artifact",
    )
