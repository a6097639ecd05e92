"""Runbook "Memory Leak" (RUNBOOK.md "Common Issues & Quick Fixes": service slow then
crashes → restart service), with the evidence kept first::

    ☐ alerts firing                   Prometheus' firing alerts for the environment
    ☐ memory trend of the pods        each serving pod's memory over the last
                                      ``trend_minutes`` (a Prometheus range query), recorded
                                      before the restart: a restart wipes the leak it shows
    ☐ host memory                     the machine's memory (node_exporter, HostMemoryHigh)
    ☐ restart the service             a pod leaks (grows by > 5% of its limit over the window,
                                      or above 85%) → ``kubectl rollout restart`` under the
                                      change slot, decided again under it
    ☐ verify                          rollout, health, error rate, and the new pods' memory
                                      back down; else page engineering

The checklist is the ``triage-memory-leak-<environment>`` table artifact.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

from collections.abc import Sequence
from typing import Any

from prefect import flow

from blocks.kube import KubeEnvironment
from decisions.triage import Check, alert_check, summary
from decisions.triage_restart import (
    MemoryTrend,
    decide_memory,
    host_memory_check,
    memory_check,
    memory_recovered,
    memory_trends,
)
from opsflows.errors import ConfigurationError, OpsError
from opsflows.thresholds import THRESHOLDS
from procedures.change_slot import change_slot, require_slots
from procedures.operation import (
    OPS_DB,
    ROUTING,
    load_block,
    operation_log,
    try_load_ops_db,
    try_load_routing,
)
from procedures.restart_triage import escalate, restart_and_verify, serving_pods
from procedures.triage import read_run_incident, triage_run
from tasks.metrics import firing_alerts, query
from tasks.prom_series import range_by, vector_by

RUNBOOK = "memory-leak"
PROBLEM = "memory still leaking"
MAX_TREND_MINUTES = 24 * 60


@flow(name="memory-leak")
def memory_leak(
    environment: str,
    incident_id: int | None = None,
    trend_minutes: float = 10.0,
    verify_seconds: float = 10.0,
    lock_timeout_s: float = 600,
    ops_db: str = OPS_DB,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Triage a memory leak: record the pods' memory trend, restart the service, verify.

    Args:
        environment: KubeEnvironment block of the environment that leaks.
        incident_id: The incident this run works on (the incident flow gives it).
        trend_minutes: How far back the pods' memory trend is read (Prometheus).
        verify_seconds: How long recovery is watched under probe traffic (error rate).
        lock_timeout_s: How long to wait for another change of the environment to finish.
        ops_db: PostgresTarget block of the operations database (op log, incidents).
        routing: NotificationRouting block the escalation pages through.
    """
    what = f"{environment} memory leak" + (f" (incident {incident_id})" if incident_id else "")
    ops_target = try_load_ops_db(ops_db)
    with operation_log(RUNBOOK, what, ops_target, try_load_routing(routing)) as rec:
        if not 0 < trend_minutes <= MAX_TREND_MINUTES:
            raise ConfigurationError(
                f"trend_minutes must be in (0, {MAX_TREND_MINUTES}], got {trend_minutes:g}",
                hint="how many minutes of the pods' memory the trend reads (10 by default)",
            )
        if not 1 <= verify_seconds <= 300:
            raise ConfigurationError(f"verify_seconds must be in [1, 300], got {verify_seconds}")
        env = load_block(KubeEnvironment, environment)
        incident = read_run_incident(incident_id, env.environment, ops_target)
        require_slots(env.environment)
        rec.details.update(environment=env.environment, incident_id=incident_id)
        threshold = THRESHOLDS.memory
        window = f"last {trend_minutes:g} min"
        with triage_run(RUNBOOK, env.environment, incident, ops_target) as triage:
            try:
                alerts: list[dict[str, Any]] | None = firing_alerts(env.prometheus_url)
            except OpsError:
                alerts = None
            trends = read_trends(env, trend_minutes)
            host = read_host_memory(env)
            decision = decide_memory(env.environment, trends, threshold, host)
            triage.record(
                alert_check(alerts, env.environment),
                memory_check(trends, threshold, window),
                host_memory_check(host, threshold),
            )
            # The evidence is on the timeline before anything changes: a restart wipes it.
            triage.note(f"evidence before any change: {summary(triage.checks)}")
            triage.note(f"decided {decision.action}: {decision.reason}")
            rec.details.update(
                decision=decision.as_dict(), trends=[t.as_dict() for t in trends or ()]
            )
            if decision.action == "none":
                rec.impact = f"no change: {decision.reason}"
                return {"action": "none", "reason": decision.reason}
            if decision.action == "escalate":
                return escalate(triage, decision.reason, PROBLEM)
            with change_slot(env.environment, lock_timeout_s):
                again = decide_memory(
                    env.environment, read_trends(env, trend_minutes), threshold, host
                )
                if again.action != decision.action:
                    triage.note(f"decided again under the change slot: {again.action}")
                    rec.details["decision"] = again.as_dict()
                if again.action == "none":
                    triage.record(Check("recovered before the change", True, again.reason))
                    rec.impact = f"no change: {again.reason}"
                    return {"action": "none", "reason": again.reason}
                if again.action == "escalate":
                    return escalate(triage, again.reason, PROBLEM)

                def new_memory(old: Sequence[str]) -> Check:
                    now = serving_pods(env)
                    memory = read_memory(env)
                    alive = {p: m for p, m in (memory or {}).items() if now is None or p in now}
                    return memory_recovered(alive, old, threshold)

                return restart_and_verify(triage, env, again, verify_seconds, new_memory, PROBLEM)


def _sel(env: KubeEnvironment) -> str:
    return f'job="web-app", env="{env.environment}"'


def read_trends(env: KubeEnvironment, minutes: float) -> tuple[MemoryTrend, ...] | None:
    """The serving pods' memory over the last ``minutes`` (pods gone since are left out)."""
    pods = serving_pods(env)
    seconds = minutes * 60
    step = max(1.0, seconds / 120)
    try:
        series = range_by(
            env.prometheus_url, f"sampleapp_memory_bytes{{{_sel(env)}}}", "pod", seconds, step
        )
        limits = vector_by(
            env.prometheus_url, f"sampleapp_memory_limit_bytes{{{_sel(env)}}}", "pod"
        )
    except OpsError:
        return None
    trends = memory_trends(series, limits)
    return tuple(t for t in trends if pods is None or t.pod in pods)


def read_memory(env: KubeEnvironment) -> dict[str, tuple[float, float]] | None:
    """Each pod's memory and limit now (Prometheus)."""
    try:
        used = vector_by(env.prometheus_url, f"sampleapp_memory_bytes{{{_sel(env)}}}", "pod")
        limits = vector_by(
            env.prometheus_url, f"sampleapp_memory_limit_bytes{{{_sel(env)}}}", "pod"
        )
    except OpsError:
        return None
    return {pod: (used[pod], limits[pod]) for pod in used if pod in limits}


def read_host_memory(env: KubeEnvironment) -> float | None:
    """The share of the host's memory in use (node_exporter), None when not reported."""
    sel = f'job="node", env="{env.environment}"'
    promql = (
        f"max(1 - node_memory_MemAvailable_bytes{{{sel}}} / node_memory_MemTotal_bytes{{{sel}}})"
    )
    try:
        return query(env.prometheus_url, promql)
    except OpsError:
        return None
