"""Runbook "One pod down": the service still serves; replace the pod, or scale out first.

The checklist, in order::

    ☐ Alerts firing                                 Prometheus' alerts for the environment
    ☐ Service still serves                          /health through the service
    ☐ Which pod is not Ready                        ``kubectl get pods`` through the client
    ☐ Its last termination reason                   ``lastState.terminated`` and the previous
                                                    log of each pod down (recorded either way)
    ☐ The Ready pods' CPU                           per-pod CPU in Prometheus, against the
                                                    CPU threshold (PodCpuHigh's 80%)
    ☐ Restart or scale out                          delete the pod (its ReplicaSet starts a
                                                    clean one); scale out first (within
                                                    max_replicas) when the Ready pods are over
                                                    the threshold or it keeps crashing
    ☐ Verify                                        every pod Ready, /health, the pods' CPU
                                                    under the threshold under probe traffic

The decision is :func:`decisions.triage_pods.decide_one_pod_down`; the change holds the
environment's change slot and is decided again under it. A scale-out records the replica count
it started from (``baseline_replicas``), so the traffic-spike scale-back check can return to it
once the load is normal. The checklist is the ``triage-one-pod-down-<environment>`` artifact.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

import time
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from prefect import flow

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.triage import Check, alert_check, summary
from decisions.triage_pods import (
    ONE_POD_DOWN,
    OnePodDownFacts,
    PodDecision,
    check_max,
    cpu_check,
    decide_one_pod_down,
    find_pod,
    pods_check,
    recent_replacements,
    termination_check,
)
from opsflows.errors import ConfigurationError, OpsError, VerificationFailed
from opsflows.thresholds import THRESHOLDS
from procedures.change_slot import change_slot, check_slots, require_slots
from procedures.operation import (
    OPS_DB,
    ROUTING,
    current_run,
    load_block,
    operation_log,
    try_load_ops_db,
    try_load_routing,
)
from procedures.release import ROLLOUT_TIMEOUT_S
from procedures.triage import VERIFY_RPS, TriageRun, read_run_incident, triage_run
from tasks.metrics import firing_alerts
from tasks.oplog import read_operations
from tasks.pod_load import pod_cpu
from tasks.pods import delete_pod, list_pods, wait_replaced
from tasks.probe_traffic import TrafficProbe
from tasks.rollout import current_release, scale_deployment, wait_for_rollout
from tasks.smoke import observe

RUNBOOK = ONE_POD_DOWN
MAX_REPEAT_WINDOW_H = 24 * 7


@flow(name="one-pod-down")
def one_pod_down(
    environment: str,
    pod: str | None = None,
    incident_id: int | None = None,
    max_replicas: int | None = None,
    repeat_window_h: float = 1.0,
    verify_seconds: float = 10.0,
    lock_timeout_s: float = 600,
    ops_db: str = OPS_DB,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Triage one pod that is down while the others serve: replace it, or scale out first.

    Args:
        environment: KubeEnvironment block of the environment.
        pod: The pod that is down (the alert may name it); empty: every pod not Ready. A name
            that is not a pod of the Deployment is refused before anything changes.
        incident_id: The incident this run works on (the incident flow gives it).
        max_replicas: A lower replica cap than the block's for this run (empty: the block's).
        repeat_window_h: A pod replaced here within this many hours means it keeps crashing:
            scale out as well.
        verify_seconds: How long the pods' CPU is watched under probe traffic afterwards.
        lock_timeout_s: How long to wait for another change of the environment to finish.
        ops_db: PostgresTarget block of the operations database (op log, incidents).
        routing: NotificationRouting block the escalation pages through.
    """
    what = f"{environment}: pod {pod or '(not Ready)'} down"
    what += f" (incident {incident_id})" if incident_id else ""
    ops_target = try_load_ops_db(ops_db)
    with operation_log(RUNBOOK, what, ops_target, try_load_routing(routing)) as rec:
        if not 1 <= verify_seconds <= 300:
            raise ConfigurationError(f"verify_seconds must be in [1, 300], got {verify_seconds}")
        if not 0 < repeat_window_h <= MAX_REPEAT_WINDOW_H:
            raise ConfigurationError(
                f"repeat_window_h must be in (0, {MAX_REPEAT_WINDOW_H}], got {repeat_window_h}"
            )
        env = load_block(KubeEnvironment, environment)
        cap = check_max(max_replicas, env.max_replicas)
        incident = read_run_incident(incident_id, env.environment, ops_target)
        require_slots(env.environment)
        rec.details.update(environment=env.environment, incident_id=incident_id, pod=pod)
        if pod is not None:
            find_pod(pod, list_pods(env, with_logs=False), env.environment)
        with triage_run(RUNBOOK, env.environment, incident, ops_target) as triage:
            facts = diagnose(env, pod, cap, ops_target, repeat_window_h)
            decision = decide_one_pod_down(facts)
            triage.record(*checks_of(facts, alerts=alerts_item(env)))
            triage.note(f"checked: {summary(triage.checks)}")
            triage.note(f"decided {decision.action}: {decision.reason}")
            rec.details["decision"] = decision.as_dict()
            if decision.action == "none":
                rec.impact = f"no change: {decision.reason}"
                return {"action": "none", "reason": decision.reason}
            if decision.action == "escalate":
                return escalate(triage, decision.reason)
            with change_slot(env.environment, lock_timeout_s):
                facts = diagnose(env, pod, cap, ops_target, repeat_window_h)
                again = decide_one_pod_down(facts)
                if again != decision:
                    triage.note(f"decided again under the change slot: {again.action}")
                    rec.details["decision"] = again.as_dict()
                if again.action == "none":
                    triage.record(Check("recovered before the change", True, again.reason))
                    rec.impact = f"no change: {again.reason}"
                    return {"action": "none", "reason": again.reason}
                if again.action == "escalate":
                    return escalate(triage, again.reason)
                return mitigate(triage, env, facts, again, verify_seconds)


def diagnose(
    env: KubeEnvironment,
    pod: str | None,
    cap: int,
    ops_db: PostgresTarget | None,
    repeat_window_h: float,
) -> OnePodDownFacts:
    """Read the pods, their CPU and the service (read-only)."""
    health = observe(env.service_url.rstrip("/") + "/health", 5.0)
    try:
        pods: Any = list_pods(env)
        replicas = current_release(env).replicas
    except OpsError:
        pods, replicas = None, 0
    try:
        cpu: dict[str, float] | None = pod_cpu(env.prometheus_url, env.environment)
    except OpsError:
        cpu = None
    replaced = 0
    if ops_db is not None:
        since = datetime.now(UTC) - timedelta(hours=repeat_window_h)
        try:
            replaced = recent_replacements(
                read_operations(ops_db, [RUNBOOK], since), env.environment
            )
        except OpsError:
            replaced = 0
    return OnePodDownFacts(
        environment=env.environment,
        healthy=None if health.status is None else health.status == 200,
        pods=pods,
        replicas=replicas,
        max_replicas=cap,
        cpu_threshold=THRESHOLDS.cpu,
        cpu=cpu,
        named=pod,
        recent_replacements=replaced,
    )


def alerts_item(env: KubeEnvironment) -> Check:
    try:
        return alert_check(firing_alerts(env.prometheus_url), env.environment)
    except OpsError as exc:
        return Check("alerts firing", None, f"Prometheus: {exc.message}")


def checks_of(facts: OnePodDownFacts, alerts: Check) -> list[Check]:
    """The diagnosis items, in the runbook's order (each pod down's termination recorded)."""
    health = {True: "/health 200", False: "/health failing", None: "unreachable"}
    ready_cpu = facts.ready_cpu
    return [
        alerts,
        Check("service still serves", facts.healthy, health[facts.healthy]),
        pods_check(facts.pods),
        *[termination_check(p) for p in facts.down],
        cpu_check(
            f"Ready pods under {facts.cpu_threshold:.0%} CPU", ready_cpu, facts.cpu_threshold
        ),
        Check(
            "not replaced recently",
            not facts.recent_replacements,
            f"{facts.recent_replacements} pod(s) replaced by this runbook in the repeat window",
        ),
    ]


def mitigate(
    triage: TriageRun,
    env: KubeEnvironment,
    facts: OnePodDownFacts,
    decision: PodDecision,
    verify_s: float,
) -> dict[str, Any]:
    """Scale out (if decided), delete the pods down, verify; mitigated or escalate."""
    rec = current_run().record
    check_slots()  # safe point: nothing changed yet
    replicas = facts.replicas
    done: list[str] = []
    try:
        if decision.action == "scale-out" and decision.to_replicas is not None:
            scaled = scale_deployment(env, decision.to_replicas)
            replicas = scaled.replicas
            rec.details.update(mode="scale-out", baseline_replicas=scaled.previous, to=replicas)
            done.append(f"scaled out from {scaled.previous} to {replicas} replicas")
        for name in decision.pods:
            delete_pod(env, name)
            rec.details.setdefault("replaced", []).append(name)
        done.append(f"deleted {', '.join(decision.pods)} (its ReplicaSet replaces it)")
    except OpsError as exc:
        rec.impact = "; ".join(done) or "no change"
        triage.record(Check(decision.action, False, exc.message))
        return escalate(triage, f"the {decision.action} failed: {exc.message}")
    text = "; ".join(done)
    rec.impact = f"{env.environment}: {text}"
    triage.record(Check(decision.action, True, text))
    triage.note(text)
    checks = verify(env, decision.pods, replicas, verify_s)
    triage.record(*checks)
    if not all(c.passed is True for c in checks):
        failed = "; ".join(f"{c.item}: {c.evidence}" for c in checks if c.passed is not True)
        return escalate(triage, f"{text}, but {env.environment} did not recover ({failed})")
    moved = triage.mitigated(f"{text}; every pod Ready, health and CPU verified")
    triage.note(f"verified: {summary(checks)}")
    rec.details["mitigated"] = moved
    return {
        "action": decision.action,
        "replaced": list(decision.pods),
        "replicas": replicas,
        "verified": True,
        "mitigated": moved,
    }


def verify(
    env: KubeEnvironment, gone: tuple[str, ...], replicas: int, verify_s: float
) -> list[Check]:
    """Every pod Ready (the replaced ones gone), /health 200, the pods' CPU under the
    threshold after ``verify_s`` of probe traffic."""
    checks: list[Check] = []
    started = time.monotonic()
    try:
        wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
        pods = wait_replaced(env, gone, replicas)
    except OpsError as exc:
        return [Check("every pod Ready", False, exc.message)]
    seconds = round(time.monotonic() - started, 1)
    checks.append(
        Check("every pod Ready", True, f"{len(pods)}/{replicas} Ready in {seconds}s, no {gone}")
    )
    health = observe(env.service_url.rstrip("/") + "/health", 5.0)
    checks.append(
        Check(
            "health verified",
            health.status == 200,
            f"/health {health.status or health.error}",
        )
    )
    with TrafficProbe(env.service_url, VERIFY_RPS, verify_s + 5) as probe:
        time.sleep(verify_s)
    seen = probe.snapshot()
    names = {p.name for p in pods}
    try:
        cpu = {n: c for n, c in pod_cpu(env.prometheus_url, env.environment).items() if n in names}
    except OpsError:
        cpu = {}
    threshold = THRESHOLDS.cpu
    checks.append(cpu_check(f"pods under {threshold:.0%} CPU", cpu, threshold))
    checks.append(
        Check(
            "probe traffic served",
            seen.requests > 0 and seen.errors == 0,
            f"{seen.errors}/{seen.requests} requests to / failed",
        )
    )
    return checks


def escalate(triage: TriageRun, why: str) -> NoReturn:
    """Page engineering and end the run failed: the pod (or the service) needs a person."""
    triage.escalate(why, problem="has a pod down")
    raise VerificationFailed(
        f"{triage.environment} still has a pod down: {why}",
        hint="engineering was paged; look at the triage checklist artifact",
    )
