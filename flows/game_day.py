"""Game day: inject faults into staging one after another and measure how they were handled.

For each chosen fault (``decisions.game_day.FAULTS``; ``all`` runs the seven in order):

1. inject it (the app's ``/_sim`` controls, the Kubernetes API, real PostgreSQL sessions);
2. let monitoring see it: Prometheus fires, Alertmanager groups and posts to the receiver,
   the incident opens, the incident flow pages and starts the runbook the alert names;
3. wait (up to ``fault_timeout_s`` from the injection) until that runbook's runs ended and
   Alertmanager resolved the incident;
4. take away whatever is left of the fault, and wait until its alerts are quiet, so the next
   fault opens an incident of its own;
5. record time to alert, page, mitigated and resolved, what the runbook did and whether a
   person was asked.

The results are the ``game-day-<environment>`` table artifact and one ``game_day_results``
row per fault in the operations database (trends over weeks). The run fails when a fault
was not handled. Production needs ``confirm`` set to the word ``production``; a weekly
schedule runs it on staging.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.game_day import (
    FAULTS,
    HANDLED,
    PRODUCTION,
    FaultResult,
    GameFault,
    RunbookOutcome,
    alert_started,
    check_request,
    matching_alert,
    outcome,
    result_rows,
    seconds_after,
    summary,
)
from decisions.incidents import Incident
from opsflows.errors import ConfigurationError, OpsError, VerificationFailed, scrub
from procedures import approval_gate
from procedures.operation import (
    APP_DB,
    OPS_DB,
    ROUTING,
    load_block,
    operation_log,
    try_load_ops_db,
    try_load_routing,
)
from tasks.game_day import (
    Injected,
    app_fault,
    check_injectable,
    crash_loop,
    lock_held,
    pod_killed,
    traffic_spike,
    volume_filled,
)
from tasks.game_day_results import (
    first_page,
    incidents_since,
    record_results,
    runbook_outcome,
    unfinished_runs,
)
from tasks.incidents import read_incident
from tasks.metrics import firing_alerts

OPERATION = "game day"
POLL_S = 2.0
#: How full the disk fault fills the app's volume (the alert fires above 80%).
DISK_RATIO = 0.9
#: The leak's pace: the pods' memory reaches PodMemoryHigh's 85% about 80 s after injection.
LEAK_MB_PER_S = 2.0


@flow(name="game-day")
def game_day(
    environment: str = "staging",
    faults: list[str] = ["all"],  # noqa: B006 - Prefect copies parameters per run
    confirm: str = "",
    confirmed_by: str = "",
    fault_timeout_s: float = 900,
    database: str = APP_DB,
    ops_db: str = OPS_DB,
    routing: str = ROUTING,
) -> list[dict[str, Any]]:
    """Inject faults one after another, let monitoring and the runbooks handle each, measure.

    Args:
        environment: KubeEnvironment block to inject into (staging; production only with
            ``confirm``).
        faults: Fault names (pod-killed, traffic-spike, disk-full, pool-exhausted,
            memory-leak, slow-queries, crash-loop) or ["all"].
        confirm: Type the word production to run against production.
        confirmed_by: Who confirms a production game day (policy/roles.yaml, gate
            ``game-day-production``).
        fault_timeout_s: How long each fault may take from injection to resolution.
        database: PostgresTarget block of the application database (slow-queries fault).
        ops_db: PostgresTarget block of the operations database (incidents, results).
        routing: NotificationRouting block (the run's own failure page).
    """
    ops_target = try_load_ops_db(ops_db)
    reason = f"game day in {environment}: {', '.join(faults)}"
    with operation_log(OPERATION, reason, ops_target, try_load_routing(routing)) as rec:
        plan = check_request(environment, faults, confirm, fault_timeout_s)
        if plan.environment == PRODUCTION:
            who = approval_gate.confirmed("game-day-production", PRODUCTION, confirmed_by)
            rec.details["confirmed_by"] = who
        if ops_target is None:
            raise ConfigurationError(
                "a game day reads incidents from the operations database: no ops-db block",
                hint="create it with opsflows bootstrap",
            )
        env = load_block(KubeEnvironment, plan.environment)
        app_db = load_block(PostgresTarget, database)
        check_injectable(env)
        rec.changing = f"{env.environment} (faults injected)"
        rec.details.update(environment=env.environment, faults=list(plan.faults))
        results: list[FaultResult] = []
        try:
            for name in plan.faults:
                results.append(
                    run_fault(FAULTS[name], env, app_db, ops_target, plan.fault_timeout_s)
                )
        finally:
            publish(env.environment, ops_target, results)
            rec.details["results"] = [r.as_dict() for r in results]
        rec.impact = f"{env.environment}: {summary(results)}"
        failed = [r for r in results if r.outcome != HANDLED]
        if failed:
            raise VerificationFailed(
                f"game day in {env.environment}: {summary(results)}",
                hint="see the game-day table artifact and each fault's incident timeline",
            )
        return [r.as_dict() for r in results]


def run_fault(
    fault: GameFault,
    env: KubeEnvironment,
    app_db: PostgresTarget,
    ops_db: PostgresTarget,
    timeout_s: float,
) -> FaultResult:
    """One fault, from injection to quiet; its result (never raising for the fault itself)."""
    log = get_run_logger()
    injected_at = datetime.now(UTC)
    deadline = time.monotonic() + timeout_s
    notes: list[str] = []
    try:
        injected = inject(fault, env, app_db)
    except OpsError as exc:
        log.error("game day: %s could not be injected: %s", fault.name, exc.message)
        return FaultResult(
            fault.name, env.environment, injected_at, "not injected", notes=(exc.message,)
        )
    log.info("game day: %s injected (%s)", fault.name, injected.detail)
    notes.append(injected.detail)
    found: Incident | None = None
    runs: list[RunbookOutcome] = []
    try:
        found = wait_incident(fault, env.environment, ops_db, injected_at, deadline)
        if found is not None:
            log.info("game day: %s opened incident %s", fault.name, found.id)
            found = wait_handled(fault, env.environment, ops_db, found, injected_at, deadline)
            runs = runs_since(fault, env.environment, ops_db, injected_at)
    finally:
        notes.append(injected.clear())
        notes.extend(quiet(fault, env, deadline + 300))
    return measure(fault, env.environment, injected_at, found, runs, ops_db, notes)


def inject(fault: GameFault, env: KubeEnvironment, app_db: PostgresTarget) -> Injected:
    """Put the fault in place (see ``tasks.game_day``)."""
    if fault.name == "traffic-spike":
        return traffic_spike(env, fault.name)
    if fault.name == "pod-killed":
        return pod_killed(env, fault.name)
    if fault.name == "pool-exhausted":
        return app_fault(env, fault.name, "pool-exhausted")
    if fault.name == "disk-full":
        return volume_filled(env, fault.name, DISK_RATIO)
    if fault.name == "memory-leak":
        return app_fault(env, fault.name, "leak", leak_mb_per_s=LEAK_MB_PER_S)
    if fault.name == "crash-loop":
        return crash_loop(env, fault.name)
    if fault.name == "slow-queries":
        return lock_held(app_db, fault.name)
    raise ConfigurationError(f"the game day cannot inject {fault.name} yet")


def wait_incident(
    fault: GameFault, environment: str, ops_db: PostgresTarget, since: datetime, deadline: float
) -> Incident | None:
    """The incident whose alerts include one the fault should raise, once it opens."""
    where = None if fault.shared else environment
    while time.monotonic() < deadline:
        for found in incidents_since(ops_db, where, since):
            if matching_alert(fault, found.alerts):
                return found
        time.sleep(POLL_S)
    return None


def wait_handled(
    fault: GameFault,
    environment: str,
    ops_db: PostgresTarget,
    found: Incident,
    since: datetime,
    deadline: float,
) -> Incident:
    """Wait until the fault's incidents are resolved and their runbook runs ended (or the
    deadline); the first incident as it is then."""
    while time.monotonic() < deadline:
        incidents = related(fault, environment, ops_db, since) or [read_incident(ops_db, found.id)]
        found = next((i for i in incidents if i.id == found.id), incidents[0])
        listed = [r for i in incidents for r in i.runbook_runs]
        ids = [str(r["flow_run_id"]) for r in listed if r.get("flow_run_id")]
        started = any(r.get("runbook") == fault.runbook for r in listed)
        running = unfinished_runs(ids) if ids else []
        closed = not any(i.is_open for i in incidents)
        if closed and not running and (started or found.runbook != fault.runbook):
            return found
        time.sleep(POLL_S)
    return read_incident(ops_db, found.id)


def related(
    fault: GameFault, environment: str, ops_db: PostgresTarget, since: datetime
) -> list[Incident]:
    """Every incident of the fault's alerts opened (or reopened) since the injection: one
    fault may fire two groups (a traffic spike: RequestQueueHigh and PodCpuHigh)."""
    where = None if fault.shared else environment
    return [i for i in incidents_since(ops_db, where, since) if matching_alert(fault, i.alerts)]


def runs_since(
    fault: GameFault, environment: str, ops_db: PostgresTarget, since: datetime
) -> list[RunbookOutcome]:
    """The runbook runs of those incidents that ran for this fault (a reopened incident
    also lists the runs of its earlier openings: those ended before the injection)."""
    found: list[RunbookOutcome] = []
    for incident in related(fault, environment, ops_db, since):
        for r in incident.runbook_runs:
            if not r.get("flow_run_id"):
                continue
            done = runbook_outcome(ops_db, str(r.get("runbook")), str(r["flow_run_id"]))
            if done.finished_at is None or done.finished_at >= since:
                found.append(done)
    return found


def quiet(fault: GameFault, env: KubeEnvironment, deadline: float) -> list[str]:
    """Wait until none of the fault's alerts is active in the environment (bounded)."""
    while time.monotonic() < deadline:
        try:
            active = [
                a
                for a in firing_alerts(env.prometheus_url)
                if (a.get("labels") or {}).get("alertname") in fault.alerts
                and (a.get("labels") or {}).get("environment") == env.environment
            ]
        except OpsError as exc:
            return [f"could not read the alerts: {exc.message}"]
        if not active:
            return []
        time.sleep(POLL_S)
    return [f"{', '.join(fault.alerts)} still active after the fault was cleared"]


def measure(
    fault: GameFault,
    environment: str,
    injected_at: datetime,
    found: Incident | None,
    runs: list[RunbookOutcome],
    ops_db: PostgresTarget,
    notes: list[str],
) -> FaultResult:
    """The fault's result from its incident and its runbook runs."""
    if found is None:
        return FaultResult(
            fault.name,
            environment,
            injected_at,
            outcome(fault, None, runs, False),
            notes=tuple(notes),
        )
    alert = matching_alert(fault, found.alerts)
    ours = [r for r in runs if r.runbook == fault.runbook]
    verified = [r.finished_at for r in ours if r.status == "succeeded" and r.changed]
    marked = (
        found.mitigated_at if found.mitigated_at and found.mitigated_at >= injected_at else None
    )
    candidates = [t for t in (marked, *verified) if t is not None]
    mitigated_at = min(candidates) if candidates else None
    if found.runbook != fault.runbook:
        notes.append(f"the alert named runbook {found.runbook}, not {fault.runbook}")
    if found.is_open:
        notes.append("the incident was still open at the fault's deadline")
    resolved = found.resolved_at if found.resolved_by == "alertmanager" else None
    if resolved is not None and resolved < injected_at:
        resolved = None
    action = next((r.action for r in reversed(ours) if r.action), None)
    return FaultResult(
        fault=fault.name,
        environment=environment,
        injected_at=injected_at,
        outcome=outcome(fault, found.id, runs, mitigated_at is not None),
        incident_id=found.id,
        alert=alert,
        runbook=found.runbook,
        action=action,
        asked=any(r.asked for r in ours),
        alert_s=seconds_after(injected_at, alert_started(found.alerts, alert or "")),
        page_s=seconds_after(injected_at, first_page(ops_db, found.id, injected_at)),
        mitigated_s=seconds_after(injected_at, mitigated_at),
        resolved_s=seconds_after(injected_at, resolved),
        notes=tuple(notes),
    )


def publish(environment: str, ops_db: PostgresTarget, results: list[FaultResult]) -> None:
    """The table artifact and the rows (never raising: the op log keeps the results too)."""
    log = get_run_logger()
    try:
        create_table_artifact(
            key=f"game-day-{environment}",
            table=result_rows(results),
            description=f"Game day in {environment}: {summary(results)}",
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("could not publish the game-day table: %s", scrub(str(exc)))
    try:
        record_results(ops_db, str(flow_run.id or "local"), results)
    except OpsError as exc:
        log.warning("could not record the game-day results: %s", exc.message)
