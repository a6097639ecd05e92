"""Runbook "Traffic spike": scale up within max_replicas, verify, scale back down later.

``mode="scale-up"`` (the incident flow starts it for RequestQueueHigh, PodCpuHigh and
HostCpuHigh)::

    ☐ Alerts firing                                 Prometheus' alerts for the environment
    ☐ Pods' CPU and the request queue               per-pod CPU and the backlog in Prometheus
    ☐ Room to scale                                 replicas below max_replicas (at max: no
                                                    change, escalate with a recommendation)
    ☐ Scale up                                      enough pods for the measured CPU at the
                                                    target utilisation, within max_replicas
    ☐ Wait until available                          the rollout status of the Deployment
    ☐ Verify                                        under probe traffic: every pod's CPU and
                                                    the queue under their thresholds, the
                                                    per-pod request rates within the balance
                                                    tolerance of their mean, /health 200

The scale-up records the replica count it started from (``baseline_replicas`` in the op log).
``mode="scale-back"`` (the ``traffic-spike/scale-back`` deployment, on a schedule) finds that
baseline, and scales back to it only when no pod's CPU and no queue went over the thresholds
during the last ``calm_seconds``, and never below it (nor below what the CPU now needs at the
target utilisation). Both hold the environment's change slot and decide again under it; the
checklist is the ``triage-traffic-spike-<environment>`` artifact.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

import time
from typing import Any, NoReturn

from prefect import flow

from blocks.kube import KubeEnvironment
from decisions.deploy import check_replicas
from decisions.triage import Check, alert_check, summary
from decisions.triage_pods import (
    SCALE_BACK,
    SCALE_UP,
    TRAFFIC_SPIKE,
    LoadFacts,
    ScaleDecision,
    balance_check,
    check_max,
    check_mode,
    check_ratio,
    cpu_check,
    decide_traffic_spike,
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
from procedures.traffic_scale_back import scale_back
from procedures.triage import TriageRun, read_run_incident, triage_run
from tasks.metrics import firing_alerts
from tasks.pod_load import pod_cpu, pod_request_rates, request_queue
from tasks.pods import list_pods
from tasks.probe_traffic import TrafficProbe
from tasks.rollout import current_release, scale_deployment, wait_for_rollout
from tasks.smoke import observe

RUNBOOK = TRAFFIC_SPIKE
#: Probe requests per second while the balance is verified: enough for every pod's rate to
#: settle near the mean within the verification window.
BALANCE_RPS = 20.0
MAX_CALM_S = 24 * 3600


@flow(name="traffic-spike")
def traffic_spike(
    environment: str,
    mode: str = SCALE_UP,
    incident_id: int | None = None,
    replicas: int | None = None,
    max_replicas: int | None = None,
    target_utilization: float = 0.6,
    balance_tolerance: float = 0.5,
    calm_seconds: float = 600.0,
    verify_seconds: float = 10.0,
    lock_timeout_s: float = 600,
    ops_db: str = OPS_DB,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Scale up for a traffic spike within max_replicas, or (``mode="scale-back"``) scale
    back to the recorded baseline once the load has been normal for ``calm_seconds``.

    Args:
        environment: KubeEnvironment block of the environment.
        mode: ``scale-up`` (the incident's runbook) or ``scale-back`` (the scheduled check).
        incident_id: The incident this run works on (the incident flow gives it).
        replicas: Scale up to exactly this many (1..max_replicas); empty: what the CPU needs.
        max_replicas: A lower replica cap than the block's for this run (empty: the block's).
        target_utilization: CPU share per pod the scale-up sizes for (below the threshold).
        balance_tolerance: How far each pod's request rate may be from the mean (0.5: ±50%).
        calm_seconds: How long the load must have stayed under the thresholds before a
            scale-back.
        verify_seconds: How long the scaled environment is watched under probe traffic.
        lock_timeout_s: How long to wait for another change of the environment to finish.
        ops_db: PostgresTarget block of the operations database (op log, incidents).
        routing: NotificationRouting block the escalation pages through.
    """
    what = f"{mode} {environment}" + (f" (incident {incident_id})" if incident_id else "")
    ops_target = try_load_ops_db(ops_db)
    with operation_log(RUNBOOK, what, ops_target, try_load_routing(routing)) as rec:
        check_mode(mode)
        check_ratio("target_utilization", target_utilization, high=THRESHOLDS.cpu)
        check_ratio("balance_tolerance", balance_tolerance)
        if not 1 <= verify_seconds <= 300:
            raise ConfigurationError(f"verify_seconds must be in [1, 300], got {verify_seconds}")
        if not 1 <= calm_seconds <= MAX_CALM_S:
            raise ConfigurationError(
                f"calm_seconds must be in [1, {MAX_CALM_S}], got {calm_seconds}"
            )
        env = load_block(KubeEnvironment, environment)
        cap = check_max(max_replicas, env.max_replicas)
        if replicas is not None:
            check_replicas(replicas, cap)
        incident = read_run_incident(incident_id, env.environment, ops_target)
        require_slots(env.environment)
        rec.details.update(environment=env.environment, incident_id=incident_id, mode=mode)
        with triage_run(RUNBOOK, env.environment, incident, ops_target) as triage:
            if mode == SCALE_BACK:
                return scale_back(
                    triage,
                    env,
                    ops_target,
                    calm_seconds,
                    target_utilization,
                    lock_timeout_s,
                    verify_seconds,
                )
            facts = load_facts(env, cap, target_utilization)
            decision = decide_traffic_spike(facts, replicas)
            triage.record(alerts_item(env), *load_checks(facts))
            triage.note(f"checked: {summary(triage.checks)}")
            triage.note(f"decided {decision.action}: {decision.reason}")
            rec.details["decision"] = decision.as_dict()
            if decision.action == "none":
                rec.impact = f"no change: {decision.reason}"
                return {"action": "none", "reason": decision.reason}
            if decision.action == "escalate":
                rec.impact = "no change"
                return escalate(triage, decision)
            with change_slot(env.environment, lock_timeout_s):
                facts = load_facts(env, cap, target_utilization)
                again = decide_traffic_spike(facts, replicas)
                if again != decision:
                    triage.note(f"decided again under the change slot: {again.action}")
                    rec.details["decision"] = again.as_dict()
                if again.action == "none":
                    triage.record(Check("calm before the change", True, again.reason))
                    rec.impact = f"no change: {again.reason}"
                    return {"action": "none", "reason": again.reason}
                if again.action == "escalate":
                    rec.impact = "no change"
                    return escalate(triage, again)
                return scale_up(triage, env, facts, again, balance_tolerance, verify_seconds)


def load_facts(env: KubeEnvironment, cap: int, target_utilization: float) -> LoadFacts:
    """The replicas and the load as Prometheus shows it now (read-only)."""
    current = current_release(env)
    try:
        cpu = pod_cpu(env.prometheus_url, env.environment)
        queue = request_queue(env.prometheus_url, env.environment)
    except OpsError:
        cpu, queue = {}, None
    return LoadFacts(
        environment=env.environment,
        replicas=current.replicas,
        max_replicas=cap,
        cpu_threshold=THRESHOLDS.cpu,
        queue_threshold=THRESHOLDS.request_queue,
        cpu=cpu,
        queue=queue,
        target_utilization=target_utilization,
    )


def alerts_item(env: KubeEnvironment) -> Check:
    try:
        return alert_check(firing_alerts(env.prometheus_url), env.environment)
    except OpsError as exc:
        return Check("alerts firing", None, f"Prometheus: {exc.message}")


def load_checks(facts: LoadFacts) -> list[Check]:
    queue = facts.queue
    return [
        cpu_check(f"pods under {facts.cpu_threshold:.0%} CPU", facts.cpu, facts.cpu_threshold),
        Check(
            f"request queue under {facts.queue_threshold}",
            None if queue is None else queue <= facts.queue_threshold,
            "no data" if queue is None else f"{queue:.0f} requests waiting",
        ),
        Check(
            "room to scale",
            facts.replicas < facts.max_replicas,
            f"{facts.replicas} replicas, max_replicas {facts.max_replicas}",
        ),
    ]


def scale_up(
    triage: TriageRun,
    env: KubeEnvironment,
    facts: LoadFacts,
    decision: ScaleDecision,
    tolerance: float,
    verify_s: float,
) -> dict[str, Any]:
    """Scale, wait until available, verify load and balance; mitigated or escalate."""
    rec = current_run().record
    check_slots()
    to = decision.to_replicas
    assert to is not None  # a "scale" decision always has its target
    try:
        scaled = scale_deployment(env, to)
    except OpsError as exc:
        rec.impact = "no change"
        triage.record(Check("scale up", False, exc.message))
        return escalate(triage, decision, f"the scale-up failed: {exc.message}")
    rec.details.update(baseline_replicas=scaled.previous, to=scaled.replicas)
    done = f"scaled {env.environment} from {scaled.previous} to {scaled.replicas} replicas"
    rec.impact = f"{env.environment}: {scaled.previous} -> {scaled.replicas} replicas"
    triage.record(Check("scale up", True, done))
    triage.note(done)
    checks = verify(env, scaled.replicas, tolerance, verify_s)
    triage.record(*checks)
    if not all(c.passed is True for c in checks):
        failed = "; ".join(f"{c.item}: {c.evidence}" for c in checks if c.passed is not True)
        return escalate(triage, decision, f"{done}, but the load is not handled ({failed})")
    moved = triage.mitigated(f"{done}; CPU, queue and balance verified")
    triage.note(
        f"verified: {summary(checks)}; the scale-back check returns it to "
        f"{scaled.previous} replicas once the load is normal"
    )
    rec.details["mitigated"] = moved
    if decision.recommendation:
        rec.follow_up.append(decision.recommendation)
    return {
        "action": "scale",
        "from": scaled.previous,
        "to": scaled.replicas,
        "verified": True,
        "mitigated": moved,
    }


def verify(env: KubeEnvironment, replicas: int, tolerance: float, verify_s: float) -> list[Check]:
    """Available, then under ``verify_s`` of probe traffic: CPU, queue, balance, health."""
    try:
        rollout = wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
    except OpsError as exc:
        return [Check("replicas available", False, exc.message)]
    checks = [Check("replicas available", True, f"{replicas} replicas: {rollout.message}")]
    time.sleep(2.0)  # the app's endpoints and a scrape follow the new pods
    with TrafficProbe(env.service_url, BALANCE_RPS, verify_s + 5) as probe:
        time.sleep(verify_s)
    seen = probe.snapshot()
    window = max(int(verify_s), 5)
    try:
        ready = {p.name for p in list_pods(env, with_logs=False) if p.ready}
        cpu = {n: c for n, c in pod_cpu(env.prometheus_url, env.environment).items() if n in ready}
        queue = request_queue(env.prometheus_url, env.environment)
        rates = pod_request_rates(env.prometheus_url, env.environment, window)
    except OpsError as exc:
        return [*checks, Check("load verified", None, exc.message)]
    threshold, most = THRESHOLDS.cpu, THRESHOLDS.request_queue
    checks.append(cpu_check(f"pods under {threshold:.0%} CPU", cpu, threshold))
    checks.append(
        Check(
            f"request queue under {most}",
            None if queue is None else queue <= most,
            "no data" if queue is None else f"{queue:.0f} requests waiting",
        )
    )
    checks.append(balance_check({n: r for n, r in rates.items() if n in ready}, ready, tolerance))
    health = observe(env.service_url.rstrip("/") + "/health", 5.0)
    checks.append(
        Check(
            "health verified",
            health.status == 200,
            f"/health {health.status or health.error}; probe: {seen.errors}/{seen.requests} "
            "requests failed",
        )
    )
    return checks


def escalate(triage: TriageRun, decision: ScaleDecision, why: str | None = None) -> NoReturn:
    """Page engineering with the recommendation; the run ends failed (load not handled)."""
    text = why or decision.reason
    if decision.recommendation:
        text += f". Recommendation: {decision.recommendation}"
    triage.escalate(text, problem="overloaded")
    raise VerificationFailed(
        f"{triage.environment} is overloaded: {text}",
        hint="engineering was paged; look at the triage checklist artifact",
    )
