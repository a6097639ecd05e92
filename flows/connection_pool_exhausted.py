"""Runbook "Database Connection Pool Exhausted" (RUNBOOK.md "Common Issues & Quick Fixes":
"connection refused" errors → restart web servers), with the evidence kept first::

    ☐ alerts firing                            Prometheus' firing alerts for the environment
    ☐ connections by state and application     pg_stat_activity, grouped (before the restart:
                                               a restart drops the connections it explains)
    ☐ connection pools have room               each pod's pool use (the app's metrics)
    ☐ restart the web servers                  a pod's pool is full → ``kubectl rollout
                                               restart`` under the change slot, decided again
                                               under it
    ☐ verify                                   rollout, health, error rate, and the new pods'
                                               pools back down; else page engineering

The checklist is the ``triage-connection-pool-exhausted-<environment>`` table artifact.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

from collections.abc import Sequence
from typing import Any

from prefect import flow

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.triage import Check, alert_check, summary
from decisions.triage_restart import (
    Connections,
    PoolUse,
    connections_check,
    decide_pool,
    pool_check,
    pool_recovered,
    pool_use,
)
from opsflows.errors import ConfigurationError, OpsError
from procedures.change_slot import change_slot, require_slots
from procedures.operation import (
    APP_DB_ADMIN,
    OPS_DB,
    ROUTING,
    load_block,
    operation_log,
    try_load_ops_db,
    try_load_routing,
)
from procedures.restart_triage import escalate, restart_and_verify, serving_pods
from procedures.triage import read_run_incident, triage_run
from tasks.metrics import firing_alerts
from tasks.pg_usage import connections_by_state
from tasks.prom_series import vector_by

RUNBOOK = "connection-pool-exhausted"
PROBLEM = "connection pool still exhausted"


@flow(name="connection-pool-exhausted")
def connection_pool_exhausted(
    environment: str,
    incident_id: int | None = None,
    verify_seconds: float = 10.0,
    lock_timeout_s: float = 600,
    database: str = APP_DB_ADMIN,
    ops_db: str = OPS_DB,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Triage an exhausted DB connection pool: record who holds connections, restart, verify.

    Args:
        environment: KubeEnvironment block of the environment whose pool is exhausted.
        incident_id: The incident this run works on (the incident flow gives it).
        verify_seconds: How long recovery is watched under probe traffic (error rate).
        lock_timeout_s: How long to wait for another change of the environment to finish.
        database: PostgresTarget block with pg_monitor (or superuser) rights: every
            session of pg_stat_activity.
        ops_db: PostgresTarget block of the operations database (op log, incidents).
        routing: NotificationRouting block the escalation pages through.
    """
    what = f"{environment} connection pool exhausted" + (
        f" (incident {incident_id})" if incident_id else ""
    )
    ops_target = try_load_ops_db(ops_db)
    with operation_log(RUNBOOK, what, ops_target, try_load_routing(routing)) as rec:
        if not 1 <= verify_seconds <= 300:
            raise ConfigurationError(f"verify_seconds must be in [1, 300], got {verify_seconds}")
        env = load_block(KubeEnvironment, environment)
        pg = load_block(PostgresTarget, database)
        incident = read_run_incident(incident_id, env.environment, ops_target)
        require_slots(env.environment)
        rec.details.update(environment=env.environment, incident_id=incident_id)
        with triage_run(RUNBOOK, env.environment, incident, ops_target) as triage:
            try:
                alerts: list[dict[str, Any]] | None = firing_alerts(env.prometheus_url)
            except OpsError:
                alerts = None
            connections = read_connections(pg)
            pools = read_pools(env)
            decision = decide_pool(env.environment, pools)
            triage.record(
                alert_check(alerts, env.environment),
                connections_check(connections),
                pool_check(pools),
            )
            # The evidence is on the timeline before anything changes: a restart drops it.
            triage.note(f"evidence before any change: {summary(triage.checks)}")
            triage.note(f"decided {decision.action}: {decision.reason}")
            rec.details.update(
                decision=decision.as_dict(),
                connections=connections.as_dict() if connections else None,
                pools=[p.as_dict() for p in pools or ()],
            )
            if decision.action == "none":
                rec.impact = f"no change: {decision.reason}"
                return {"action": "none", "reason": decision.reason}
            if decision.action == "escalate":
                return escalate(triage, decision.reason, PROBLEM)
            with change_slot(env.environment, lock_timeout_s):
                again = decide_pool(env.environment, read_pools(env))
                if again != decision:
                    triage.note(f"decided again under the change slot: {again.action}")
                    rec.details["decision"] = again.as_dict()
                if again.action == "none":
                    triage.record(Check("recovered before the change", True, again.reason))
                    rec.impact = f"no change: {again.reason}"
                    return {"action": "none", "reason": again.reason}
                if again.action == "escalate":
                    return escalate(triage, again.reason, PROBLEM)

                def new_pools(old: Sequence[str]) -> Check:
                    now = serving_pods(env)
                    pools = read_pools(env)
                    alive = [p for p in pools or () if now is None or p.pod in now]
                    return pool_recovered(alive, old)

                return restart_and_verify(triage, env, again, verify_seconds, new_pools, PROBLEM)


def read_connections(pg: PostgresTarget) -> Connections | None:
    try:
        return connections_by_state(pg)
    except OpsError:
        return None


def read_pools(env: KubeEnvironment) -> tuple[PoolUse, ...] | None:
    """Each pod's pool use as Prometheus scraped it from the app."""
    sel = f'job="web-app", env="{env.environment}"'
    try:
        size = vector_by(env.prometheus_url, f"sampleapp_db_pool_size{{{sel}}}", "pod")
        used = vector_by(env.prometheus_url, f"sampleapp_db_pool_in_use{{{sel}}}", "pod")
    except OpsError:
        return None
    return pool_use(size, used)
