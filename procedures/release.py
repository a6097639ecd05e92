"""Release an image to an environment and roll it back: the machinery the staged deploy and
the hotfix share.

Under the environment's change slot (:func:`change_lock`): set the image, wait for the rollout,
bake with synthetic probe traffic (health, error rate, p95 latency, readiness, restarts against
the block's thresholds; :mod:`procedures.bake_review`) and, when anything fails, roll back to the
recorded revision, verify it serves healthily, notify and end the run failed with the reason. A
bake that cannot judge the release (no metrics) pauses for a person: approve keeps it, reject or
timeout rolls back.
"""

import contextlib
import time
from typing import Any, NoReturn

from prefect.logging import get_run_logger

from blocks.kube import KubeEnvironment
from decisions.bake_review import bake_action
from decisions.releases import Release
from opsflows.errors import VerificationFailed
from procedures.bake_review import baked, review_inconclusive
from procedures.change_slot import change_slot, check_slots
from procedures.operation import current_run, safe_notify
from tasks.rollout import set_image, undo_rollout, wait_for_rollout
from tasks.smoke import verify_serving

ROLLOUT_TIMEOUT_S = 300.0
DEFAULT_PROBE_RPS = 5.0
"""Synthetic requests per second sent to production during the bake."""
DEFAULT_INCONCLUSIVE_TIMEOUT_S = 900
"""How long an inconclusive bake waits for a person before rolling back (15 min)."""


def change_lock(env: KubeEnvironment, timeout_s: float) -> contextlib.AbstractContextManager[Any]:
    """Hold ``change-<environment>`` for ``env`` (:func:`procedures.change_slot.change_slot`)."""
    return change_slot(env.environment, timeout_s)


def release_to_production(
    env: KubeEnvironment,
    image: str,
    target: Release,
    *,
    bake_seconds: float,
    bake_interval_s: float,
    metrics_window_s: float,
    probe_rps: float = DEFAULT_PROBE_RPS,
    inconclusive_timeout_s: int = DEFAULT_INCONCLUSIVE_TIMEOUT_S,
) -> dict[str, Any]:
    """Set the image, wait, bake with probe traffic; on failure roll back to ``target``.

    A failing bake rolls back at once; an inconclusive one pauses for a person
    (:func:`procedures.bake_review.review_inconclusive`): approve keeps the release, reject or no
    answer within ``inconclusive_timeout_s`` rolls back. Call it while holding
    :func:`change_lock`. Returns the bake summary on success.

    Raises:
        VerificationFailed: the release failed and was rolled back (or the rollback failed).
    """
    logger = get_run_logger()
    rec = current_run().record
    since = time.time()
    rec.details["production_started_at"] = since
    try:
        check_slots()  # safe point: nothing changed yet
        set_image(env, image)
        rollout = wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
        check_slots()  # safe point: rolled out, not yet judged (a lost slot rolls back)
        # Bake the new release, not the old pods the service may still route to for a moment.
        verify_serving(env.service_url, image, timeout_s=30.0, consecutive=3, healthy=False)
        report, probe = baked(
            env,
            image,
            since=since,
            bake_seconds=bake_seconds,
            bake_interval_s=bake_interval_s,
            metrics_window_s=metrics_window_s,
            probe_rps=probe_rps,
        )
        summary = {
            "rollout_s": rollout.seconds,
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
                "P2",
                f"{env.environment}: bake of {image} inconclusive, needs a decision",
                f"{failure}. Approve (keep) or reject (roll back) the paused run in the Prefect "
                f"UI within {inconclusive_timeout_s} s; no answer rolls back.",
            )
            outcome = review_inconclusive(env, image, report, probe, inconclusive_timeout_s)
            if outcome.keep:
                rec.issues.append(f"{failure} ({outcome.why})")
                rec.follow_up.append(f"{image} kept in {env.environment} without a full bake")
                safe_notify("P3", f"{env.environment}: {image} kept", outcome.why)
                return {**summary, "kept_by": outcome.approver}
            failure = f"{failure} ({outcome.why})"
    except Exception as exc:  # noqa: BLE001 - any failure after the change means roll back
        rec.details.setdefault("first_failure_at", time.time())
        failure = f"{type(exc).__name__}: {exc}"
    roll_back(env, image, target, failure)


def roll_back(
    env: KubeEnvironment,
    image: str,
    target: Release,
    failure: str,
) -> NoReturn:
    """Undo to the recorded revision, wait, verify it serves healthily, notify, raise."""
    logger = get_run_logger()
    rec = current_run().record
    revision, good = target.revision, target.image
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
    if undone.skipped:
        # The change never took effect (e.g. the image could not be set): nothing to undo.
        rec.impact = f"{env.environment} stayed on {good}"
        safe_notify("P3", f"{env.environment}: {image} not deployed", failure)
        raise VerificationFailed(
            f"{env.environment} release of {image} failed ({failure}); production stayed on "
            f"revision {revision} ({good}), which serves healthily",
            hint="fix the cause and deploy again",
        )
    rec.impact = f"{env.environment} briefly ran {image}; rolled back to {good}"
    rec.follow_up.append(f"find out why {image} failed in {env.environment} before retrying")
    safe_notify(
        "P2",
        f"{env.environment}: {image} rolled back",
        f"{failure}. Rolled back automatically to revision {revision} ({good}), serving healthy.",
    )
    raise VerificationFailed(
        f"{env.environment} release of {image} failed ({failure}); rolled back automatically "
        f"to revision {revision} ({good}), which serves healthily",
        hint="fix the release and deploy again",
    )
