"""What the restart runbooks share (connection-pool-exhausted, memory-leak): the restart under
the change slot after the evidence is recorded, and its verification.

A runbook hands :func:`restart_and_verify` its own check of the new pods (pool back down,
memory back down), polled until it passes or the wait is over; the restart counts only when
that check and the service-down verification (rollout finished, health, error rate) pass.
"""

# No `from __future__ import annotations`: flows pickled by value call into this module.

import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from blocks.kube import KubeEnvironment
from decisions.triage import Check, summary
from decisions.triage_restart import RestartDecision
from opsflows.errors import OpsError, VerificationFailed
from procedures.change_slot import check_slots
from procedures.operation import current_run
from procedures.triage import TriageRun, verified, verify_recovery
from tasks.pods import list_pods
from tasks.rollout import current_release, restart_rollout

#: How long the new pods' own check is polled (a scrape or two after the rollout).
NEW_PODS_WAIT_S = 30.0


def serving_pods(env: KubeEnvironment) -> list[str] | None:
    """The names of the Deployment's pods now (None: the API did not answer)."""
    try:
        return [p.name for p in list_pods(env, with_logs=False)]
    except OpsError:
        return None


def restart_and_verify(
    triage: TriageRun,
    env: KubeEnvironment,
    decision: RestartDecision,
    verify_s: float,
    new_pods_check: Callable[[Sequence[str]], Check],
    problem: str,
) -> dict[str, Any]:
    """Restart every pod (holding the slot), verify, mark mitigated or escalate.

    ``new_pods_check`` gets the names of the pods that served before the restart.
    """
    rec = current_run().record
    check_slots()  # safe point: nothing changed yet
    before = current_release(env)
    old = serving_pods(env) or []
    try:
        restart_rollout(env)
    except OpsError as exc:
        rec.impact = f"no change: the restart of {env.environment} failed"
        triage.record(Check("restart", False, exc.message))
        return escalate(triage, f"the restart failed: {exc.message}", problem)
    done = f"restarted every pod of {before.image}"
    rec.impact = f"{env.environment}: {done} ({len(old)} pods replaced)"
    triage.record(Check("restart", True, done))
    triage.note(done)
    checks = verify_recovery(env, before.image, verify_s)
    if verified(checks):
        deadline = time.monotonic() + NEW_PODS_WAIT_S
        while True:
            own = new_pods_check(old)
            if own.passed or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        checks.append(own)
    triage.record(*checks)
    if not verified(checks) or not all(c.passed for c in checks[-1:]):
        failed = "; ".join(f"{c.item}: {c.evidence}" for c in checks if c.passed is not True)
        return escalate(triage, f"{done}, but {env.environment} is not back ({failed})", problem)
    moved = triage.mitigated(f"{done}; verified: {summary(checks)}")
    triage.note(f"verified: {summary(checks)}")
    if triage.incident is not None and not moved:
        triage.note("the incident was already resolved or mitigated; not marked again")
    rec.details.update(mitigated=moved, image=before.image, replaced=old)
    return {"action": "restart", "image": before.image, "verified": True, "mitigated": moved}


def escalate(triage: TriageRun, why: str, problem: str) -> NoReturn:
    """Page engineering and end the run failed."""
    triage.escalate(why, problem)
    raise VerificationFailed(
        f"{triage.environment} {problem}: {why}",
        hint="engineering was paged; look at the triage checklist artifact",
    )
