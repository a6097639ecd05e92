"""The traffic-spike runbook's scheduled scale-back: read the baseline the last scale-up
recorded and the load over the calm window, decide (:mod:`decisions.scale_back`), and under
the change slot decide again, scale back and verify the pods left carry the load."""

# No `from __future__ import annotations`: served runs pickle flow functions by value.

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.scale_back import CalmFacts, baseline, calm_checks, decide_scale_back
from decisions.triage import Check
from decisions.triage_pods import ONE_POD_DOWN, TRAFFIC_SPIKE, cpu_check
from opsflows.errors import ConfigurationError, OpsError, VerificationFailed
from opsflows.thresholds import THRESHOLDS
from procedures.change_slot import change_slot, check_slots
from procedures.operation import current_run
from procedures.release import ROLLOUT_TIMEOUT_S
from procedures.triage import TriageRun
from tasks.oplog import read_operations
from tasks.pod_load import load_peak, pod_cpu
from tasks.rollout import current_release, scale_deployment, wait_for_rollout
from tasks.smoke import observe

RUNBOOK = TRAFFIC_SPIKE
#: How far back the op log is read for the scale-up a scale-back returns from.
BASELINE_LOOKBACK_H = 24 * 14


def scale_back(
    triage: TriageRun,
    env: KubeEnvironment,
    ops_db: PostgresTarget | None,
    calm_s: float,
    target_utilization: float,
    lock_timeout_s: float,
    verify_s: float,
) -> dict[str, Any]:
    """The scheduled check: back to the baseline once the load has been calm."""
    rec = current_run().record
    if ops_db is None:
        raise ConfigurationError(
            "scale-back needs the operations database: the baseline is in the op log",
            hint="create the ops-db block (opsflows bootstrap)",
        )
    facts = calm_facts(env, ops_db, calm_s, target_utilization)
    decision = decide_scale_back(facts)
    triage.record(*calm_checks(facts))
    rec.details["decision"] = decision.as_dict()
    if decision.action != "scale":
        rec.impact = f"no change: {decision.reason}"
        return {"action": "none", "reason": decision.reason}
    with change_slot(env.environment, lock_timeout_s):
        facts = calm_facts(env, ops_db, calm_s, target_utilization)
        again = decide_scale_back(facts)
        rec.details["decision"] = again.as_dict()
        if again.action != "scale" or again.to_replicas is None:
            rec.impact = f"no change: {again.reason}"
            return {"action": "none", "reason": again.reason}
        check_slots()
        scaled = scale_deployment(env, again.to_replicas)
        rec.details.update(baseline_replicas=facts.baseline, to=scaled.replicas)
        done = f"scaled {env.environment} back from {scaled.previous} to {scaled.replicas}"
        rec.impact = f"{env.environment}: {scaled.previous} -> {scaled.replicas} replicas"
        triage.record(Check("scale back", True, f"{done}: {again.reason}"))
        try:
            rollout = wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
            ready = Check("replicas available", True, rollout.message)
        except OpsError as exc:
            ready = Check("replicas available", False, exc.message)
        health = observe(env.service_url.rstrip("/") + "/health", 5.0)
        served = Check("health verified", health.status == 200, f"/health {health.status}")
        time.sleep(min(verify_s, 5.0))  # a scrape of the pods left
        try:
            cpu = pod_cpu(env.prometheus_url, env.environment)
        except OpsError:
            cpu = {}
        threshold = THRESHOLDS.cpu
        checks = [ready, served, cpu_check(f"pods under {threshold:.0%} CPU", cpu, threshold)]
        triage.record(*checks)
        if not all(c.passed is True for c in checks):
            failed = "; ".join(f"{c.item}: {c.evidence}" for c in checks if c.passed is not True)
            triage.escalate(f"{done}, but {failed}", problem="overloaded after a scale-back")
            raise VerificationFailed(
                f"{done}, but {failed}",
                hint="scale up again (traffic-spike) and look at the checklist artifact",
            )
        return {"action": "scale-back", "from": scaled.previous, "to": scaled.replicas}


def calm_facts(
    env: KubeEnvironment, ops_db: PostgresTarget, calm_s: float, target_utilization: float
) -> CalmFacts:
    since = datetime.now(UTC) - timedelta(hours=BASELINE_LOOKBACK_H)
    rows = read_operations(ops_db, [RUNBOOK, ONE_POD_DOWN], since)
    current = current_release(env)
    try:
        peak_cpu, peak_queue = load_peak(env.prometheus_url, env.environment, int(calm_s))
        total = sum(pod_cpu(env.prometheus_url, env.environment).values())
    except OpsError:
        peak_cpu, peak_queue, total = None, None, 0.0
    return CalmFacts(
        environment=env.environment,
        replicas=current.replicas,
        baseline=baseline(rows, env.environment),
        calm_s=calm_s,
        cpu_threshold=THRESHOLDS.cpu,
        queue_threshold=THRESHOLDS.request_queue,
        max_cpu=peak_cpu,
        max_queue=peak_queue,
        total_cpu=total,
        target_utilization=target_utilization,
    )
