"""Runbook quick fixes on one environment: rollback, hotfix, scale, restart.

The hotfix releases through :func:`procedures.release.release_to_production`, the same bake
and automatic rollback as the staged deploy.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

from typing import Any

from prefect import flow

from blocks.kube import KubeEnvironment
from decisions.bake_review import validate_probe
from decisions.deploy import check_replicas, parse_image
from opsflows.errors import ConfigurationError
from procedures.operation import (
    load_block,
    operation_log,
    safe_notify,
    try_load_ops_db,
    try_load_routing,
)
from procedures.release import (
    DEFAULT_INCONCLUSIVE_TIMEOUT_S,
    DEFAULT_PROBE_RPS,
    ROLLOUT_TIMEOUT_S,
    change_lock,
    release_to_production,
)
from tasks.rollout import (
    current_release,
    restart_rollout,
    scale_deployment,
    undo_rollout,
    wait_for_rollout,
)
from tasks.smoke import verify_serving


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
    with operation_log("rollback", reason, try_load_ops_db(), try_load_routing()) as rec:
        if revision is not None and revision < 1:
            raise ConfigurationError(f"revision must be >= 1, got {revision}")
        env = load_block(KubeEnvironment, environment)
        with change_lock(env, lock_timeout_s):
            before = current_release(env)
            undone = undo_rollout(env, revision)
            wait_for_rollout(env, timeout_s=ROLLOUT_TIMEOUT_S)
            verify_serving(env.service_url, undone.image)
            after = current_release(env)
        rec.impact = f"{environment}: {before} -> {after}"
        result = {"before": before.as_dict(), "after": after.as_dict(), "skipped": undone.skipped}
        rec.details.update(result)
        safe_notify("P3", f"{environment} rolled back", rec.impact)
        return result


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
    with operation_log("hotfix", reason, try_load_ops_db(), try_load_routing()) as rec:
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
        rec.details.update(image=str(ref), commit=commit)
        with change_lock(env, lock_timeout_s):
            target = current_release(env)
            rec.details["rollback_target"] = target.as_dict()
            safe_notify("P3", f"hotfix {image} started", f"{reason}; from {target}")
            result = release_to_production(
                env,
                image,
                target,
                bake_seconds=bake_seconds,
                bake_interval_s=bake_interval_s,
                metrics_window_s=metrics_window_s,
                probe_rps=probe_rps,
                inconclusive_timeout_s=inconclusive_timeout_s,
            )
        rec.impact = f"{env.environment}: {target.image} -> {image}"
        return {"image": image, "previous": target.as_dict(), **result}


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
        rec.impact = f"{environment}: {scaled.previous} -> {scaled.replicas} replicas"
        return {
            "environment": scaled.environment,
            "from": scaled.previous,
            "to": scaled.replicas,
            "seconds": rollout.seconds,
        }


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
            verify_serving(env.service_url, before.image)
        rec.impact = f"{environment}: every pod of {before.image} replaced"
        return {**stamp.as_dict(), "seconds": rollout.seconds, "image": before.image}
