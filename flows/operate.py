"""Runbook quick fixes on one environment: rollback, hotfix, scale, restart.

Also the production release machinery the staged deploy shares with the hotfix: under the
environment's change lock, set the image, wait for the rollout, bake with synthetic probe
traffic (health, error rate, p95 latency, readiness, restarts against the block's thresholds;
:mod:`flows.bake_review`) and, when anything fails, roll back to the recorded revision, verify
it serves healthily, notify and end the run failed with the reason. A bake that cannot judge
the release (no metrics) pauses for a person: approve keeps it, reject or timeout rolls back.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

import contextlib
import time
from typing import Any, NoReturn

from prefect import flow
from prefect.logging import get_run_logger

from blocks.kube import KubeEnvironment
from blocks.notify import NotificationRouting
from decisions.bake_review import bake_action, validate_probe
from decisions.deploy import check_replicas, parse_image
from flows.bake_review import baked, review_inconclusive
from flows.common import (
    OperationRecord,
    load_block,
    operation_log,
    safe_notify,
    try_load_ops_db,
    try_load_routing,
)
from flows.locks import change_slot
from opsflows.errors import ConfigurationError, VerificationFailed
from tasks.rollout import (
    current_release,
    restart_rollout,
    scale_deployment,
    set_image,
    undo_rollout,
    wait_for_rollout,
)
from tasks.smoke import verify_serving

ROLLOUT_TIMEOUT_S = 300.0
DEFAULT_PROBE_RPS = 5.0
"""Synthetic requests per second sent to production during the bake."""
DEFAULT_INCONCLUSIVE_TIMEOUT_S = 900
"""How long an inconclusive bake waits for a person before rolling back (15 min)."""


def change_lock(env: KubeEnvironment, timeout_s: float) -> contextlib.AbstractContextManager[None]:
    """Hold ``change-<environment>`` for ``env`` (see :func:`flows.locks.change_slot`)."""
    return change_slot(env.environment, timeout_s)


def release_to_production(
    env: KubeEnvironment,
    image: str,
    target: dict[str, Any],
    routing: NotificationRouting | None,
    rec: OperationRecord,
    *,
    bake_seconds: float,
    bake_interval_s: float,
    metrics_window_s: float,
    probe_rps: float = DEFAULT_PROBE_RPS,
    inconclusive_timeout_s: int = DEFAULT_INCONCLUSIVE_TIMEOUT_S,
) -> dict[str, Any]:
    """Set the image, wait, bake with probe traffic; on failure roll back to ``target``.

    A failing bake rolls back at once; an inconclusive one pauses for a person
    (:func:`flows.bake_review.review_inconclusive`): approve keeps the release, reject or no
    answer within ``inconclusive_timeout_s`` rolls back. Call it while holding
    :func:`change_lock`. Returns the bake summary on success.

    Raises:
        VerificationFailed: the release failed and was rolled back (or the rollback failed).
    """
    logger = get_run_logger()
    since = time.time()
    rec.details["production_started_at"] = since
    try:
        set_image(env, image)
        rollout = wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
        # Bake the new release, not the old pods the service may still route to for a moment.
        verify_serving(env.service_url, image, timeout_s=30.0, consecutive=3, healthy=False)
        report, probe = baked(
            env,
            image,
            rec,
            since=since,
            bake_seconds=bake_seconds,
            bake_interval_s=bake_interval_s,
            metrics_window_s=metrics_window_s,
            probe_rps=probe_rps,
        )
        summary = {
            "rollout_s": rollout["seconds"],
            "bake_rounds": len(report.rounds),
            "bake_verdict": report.verdict,
            "probe": probe.as_dict() if probe is not None else None,
        }
        action = bake_action(report.verdict)
        if action == "keep":
            logger.info("%s baked %d rounds: pass", env.environment, len(report.rounds))
            return summary
        bad = report.first_bad
        rec.details["first_failure_at"] = bad.at if bad else None
        failure = f"bake {report.verdict}: " + "; ".join(report.reasons())
        if action == "ask":
            safe_notify(
                routing,
                "P2",
                f"{env.environment}: bake of {image} inconclusive, needs a decision",
                f"{failure}. Approve (keep) or reject (roll back) the paused run in the Prefect "
                f"UI within {inconclusive_timeout_s} s; no answer rolls back.",
            )
            outcome = review_inconclusive(env, image, report, probe, rec, inconclusive_timeout_s)
            if outcome.keep:
                rec.issues.append(f"{failure} ({outcome.why})")
                rec.follow_up.append(f"{image} kept in {env.environment} without a full bake")
                safe_notify(routing, "P3", f"{env.environment}: {image} kept", outcome.why)
                return {**summary, "kept_by": rec.details["bake_review"]["approver"]}
            failure = f"{failure} ({outcome.why})"
    except Exception as exc:  # noqa: BLE001 - any failure after the change means roll back
        rec.details.setdefault("first_failure_at", time.time())
        failure = f"{type(exc).__name__}: {exc}"
    roll_back(env, image, target, failure, routing, rec)


def roll_back(
    env: KubeEnvironment,
    image: str,
    target: dict[str, Any],
    failure: str,
    routing: NotificationRouting | None,
    rec: OperationRecord,
) -> NoReturn:
    """Undo to the recorded revision, wait, verify it serves healthily, notify, raise."""
    logger = get_run_logger()
    revision, good = int(target["revision"]), str(target["image"])
    logger.error(
        "%s: %s; rolling back to revision %s (%s)", env.environment, failure, revision, good
    )
    rec.issues.append(failure)
    rec.details["rollback_started_at"] = time.time()
    try:
        undone = undo_rollout(env, revision)
        wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
        verify_serving(env.service_url, good)
    except Exception as exc:  # noqa: BLE001 - escalate whatever stopped the rollback
        rec.impact = f"{env.environment} may still run {image}: the automatic rollback failed"
        rec.follow_up.append(
            f"{env.environment} needs a person: the automatic rollback failed ({exc}); roll back "
            f"by hand to revision {revision} ({good}), e.g. run the rollback flow with "
            f"environment={env.environment}, revision={revision}"
        )
        safe_notify(
            routing,
            "P1",
            f"{env.environment}: rollback of {image} FAILED",
            f"{failure}. Rolling back to revision {revision} ({good}) failed: {exc}",
        )
        raise VerificationFailed(
            f"{env.environment} release of {image} failed ({failure}) and the automatic "
            f"rollback to revision {revision} failed: {exc}",
            hint="production may still run the bad release: roll back by hand now",
        ) from exc
    rec.details["recovered_at"] = time.time()
    if undone["skipped"]:
        # The change never took effect (e.g. the image could not be set): nothing to undo.
        rec.impact = f"{env.environment} stayed on {good}"
        safe_notify(routing, "P3", f"{env.environment}: {image} not deployed", failure)
        raise VerificationFailed(
            f"{env.environment} release of {image} failed ({failure}); production stayed on "
            f"revision {revision} ({good}), which serves healthily",
            hint="fix the cause and deploy again",
        )
    rec.impact = f"{env.environment} briefly ran {image}; rolled back to {good}"
    rec.follow_up.append(f"find out why {image} failed in {env.environment} before retrying")
    safe_notify(
        routing,
        "P2",
        f"{env.environment}: {image} rolled back",
        f"{failure}. Rolled back automatically to revision {revision} ({good}), serving healthy.",
    )
    raise VerificationFailed(
        f"{env.environment} release of {image} failed ({failure}); rolled back automatically "
        f"to revision {revision} ({good}), which serves healthily",
        hint="fix the release and deploy again",
    )


@flow(name="rollback")
def rollback(
    environment: str = "production", revision: int | None = None, lock_timeout_s: float = 600
) -> dict[str, Any]:
    """Roll a Deployment back to the previous (or a given) revision and verify it is healthy.

    Args:
        environment: KubeEnvironment block of the environment.
        revision: Revision to return to (``kubectl rollout undo --to-revision``); the
            previous one when empty.
        lock_timeout_s: How long to wait for another change to this environment to finish.
    """
    reason = f"roll {environment} back to " + (f"revision {revision}" if revision else "previous")
    with operation_log("rollback", reason, try_load_ops_db()) as rec:
        if revision is not None and revision < 1:
            raise ConfigurationError(f"revision must be >= 1, got {revision}")
        env = load_block(KubeEnvironment, environment)
        routing = try_load_routing()
        with change_lock(env, lock_timeout_s):
            before = current_release(env)
            undone = undo_rollout(env, revision)
            wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
            verify_serving(env.service_url, undone["image"])
            after = current_release(env)
        rec.impact = (
            f"{environment}: {before['image']} (rev {before['revision']}) -> "
            f"{after['image']} (rev {after['revision']})"
        )
        rec.details.update(before=before, after=after, skipped=undone["skipped"])
        safe_notify(routing, "P3", f"{environment} rolled back", rec.impact)
        return {"before": before, "after": after, "skipped": undone["skipped"]}


@flow(name="hotfix")
def hotfix(
    image: str,
    environment: str = "production",
    commit: str | None = None,
    bake_seconds: float = 60,
    bake_interval_s: float = 5,
    metrics_window_s: float = 30,
    lock_timeout_s: float = 900,
    probe_rps: float = DEFAULT_PROBE_RPS,
    inconclusive_timeout_s: int = DEFAULT_INCONCLUSIVE_TIMEOUT_S,
) -> dict[str, Any]:
    """Deploy a fix straight to production, baked and rolled back automatically on failure.

    Args:
        image: The fixed image (pinned tag or digest).
        environment: KubeEnvironment block; must be a production environment.
        commit: The commit being shipped, for the operation log.
        bake_seconds: How long production is watched after the rollout.
        bake_interval_s: Seconds between bake measurements.
        metrics_window_s: Longest PromQL range judged (the bake never looks before the release).
        lock_timeout_s: How long to wait for another change to production to finish.
        probe_rps: Synthetic requests per second sent to production during the bake, so it
            always has traffic to judge (0: none, rely on real traffic).
        inconclusive_timeout_s: How long a bake that could not judge the release waits for
            a person to keep it; no answer rolls back.
    """
    reason = f"hotfix {image}" + (f" ({commit})" if commit else "")
    with operation_log("hotfix", reason, try_load_ops_db()) as rec:
        ref = parse_image(image)
        if bake_seconds < 0 or bake_interval_s <= 0 or metrics_window_s < 5:
            raise ConfigurationError("bake_seconds >= 0, bake_interval_s > 0, window >= 5 s")
        validate_probe(probe_rps, inconclusive_timeout_s)
        env = load_block(KubeEnvironment, environment)
        if env.environment != "production":
            raise ConfigurationError(
                f"hotfix goes to production only; block {environment} is {env.environment}",
                hint="use staged_deploy for other environments",
            )
        routing = try_load_routing()
        rec.details.update(image=str(ref), commit=commit)
        with change_lock(env, lock_timeout_s):
            target = current_release(env)
            rec.details["rollback_target"] = target
            safe_notify(routing, "P3", f"hotfix {image} started", f"{reason}; from {target}")
            result = release_to_production(
                env,
                image,
                target,
                routing,
                rec,
                bake_seconds=bake_seconds,
                bake_interval_s=bake_interval_s,
                metrics_window_s=metrics_window_s,
                probe_rps=probe_rps,
                inconclusive_timeout_s=inconclusive_timeout_s,
            )
        rec.impact = f"{env.environment}: {target['image']} -> {image}"
        return {"image": image, "previous": target, **result}


@flow(name="scale")
def scale(environment: str, replicas: int, lock_timeout_s: float = 600) -> dict[str, Any]:
    """Scale the Deployment (bounded by the block's max_replicas) and wait until available.

    Args:
        environment: KubeEnvironment block of the environment.
        replicas: Wanted replica count (1..max_replicas).
        lock_timeout_s: How long to wait for another change to this environment to finish.
    """
    with operation_log("scale", f"scale {environment} to {replicas}", try_load_ops_db()) as rec:
        env = load_block(KubeEnvironment, environment)
        check_replicas(replicas, env.max_replicas)
        with change_lock(env, lock_timeout_s):
            scaled = scale_deployment(env, replicas)
            rollout = wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
        rec.impact = f"{environment}: {scaled['from']} -> {scaled['to']} replicas"
        return {**scaled, "seconds": rollout["seconds"]}


@flow(name="restart")
def restart(environment: str, lock_timeout_s: float = 600) -> dict[str, Any]:
    """Restart every pod of the Deployment (``kubectl rollout restart``) and verify health.

    Args:
        environment: KubeEnvironment block of the environment.
        lock_timeout_s: How long to wait for another change to this environment to finish.
    """
    with operation_log("restart", f"rollout restart {environment}", try_load_ops_db()) as rec:
        env = load_block(KubeEnvironment, environment)
        with change_lock(env, lock_timeout_s):
            before = current_release(env)
            stamp = restart_rollout(env)
            rollout = wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
            verify_serving(env.service_url, before["image"])
        rec.impact = f"{environment}: every pod of {before['image']} replaced"
        return {**stamp, "seconds": rollout["seconds"], "image": before["image"]}
