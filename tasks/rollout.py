"""Rollout steps on a Deployment: set image, wait, undo, restart, scale, read the revision.

The same requests ``kubectl set image``, ``rollout status``, ``rollout undo``, ``rollout
restart`` and ``scale`` make, through the official client. Whether a rollout is done,
waiting or failed is decided by :func:`decisions.deploy.rollout_verdict`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from blocks.kube import KubeEnvironment
from decisions.deploy import (
    PodState,
    RolloutStatus,
    RolloutVerdict,
    rollout_verdict,
    undo_revision,
)
from decisions.releases import (
    ImageSet,
    Release,
    Restart,
    RevisionRecord,
    Rollback,
    RolloutResult,
    Scale,
)
from opsflows import retry
from opsflows.errors import ServiceUnavailable, TransientError, VerificationFailed
from tasks.kube import apps_api, core_api, kube_errors

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
HASH_LABEL = "pod-template-hash"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# Annotations ``kubectl rollout undo`` keeps from the Deployment instead of the ReplicaSet.
_UNDO_SKIP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def _revision(obj: dict[str, Any]) -> int:
    try:
        return int(_annotations(obj).get(REVISION, "0"))
    except ValueError:
        return 0


def _timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp of the API (``2026-01-01T00:00:00Z``), or None."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _revision_history(obj: dict[str, Any]) -> tuple[int, ...]:
    raw = _annotations(obj).get(REVISION_HISTORY, "")
    return tuple(int(r) for r in raw.split(",") if r.strip().isdigit())


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _raw(env: KubeEnvironment, action: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the official client and decode the JSON body ourselves.

    Skipping the client's model classes keeps a status poll cheap (they are built lazily
    and cost seconds of CPU on first use) and gives plain camelCase dicts as on the wire.
    """
    with kube_errors(env, action):
        response = call(*args, _preload_content=False, **kwargs)
        data = response.data
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ServiceUnavailable(
            f"{action} in {env.environment}: the API answered something that is not JSON"
        ) from exc


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _canonical(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _template_key(template: dict[str, Any]) -> str:
    meta = dict(template.get("metadata") or {})
    meta["labels"] = {k: v for k, v in (meta.get("labels") or {}).items() if k != HASH_LABEL}
    return json.dumps(_canonical({**template, "metadata": meta}), sort_keys=True)


def _image_of(env: KubeEnvironment, template: dict[str, Any]) -> str:
    containers = (template.get("spec") or {}).get("containers") or [{}]
    chosen = next((c for c in containers if c.get("name") == env.container), containers[0])
    return str(chosen.get("image", ""))


def _selector(dep: dict[str, Any]) -> str:
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _owned_by(obj: dict[str, Any], uid: str, controller: bool = True) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and (r.get("controller") or not controller) for r in refs)


def _owned_replicasets(env: KubeEnvironment, dep: dict[str, Any]) -> list[dict[str, Any]]:
    listing = _raw(
        env,
        "list replicasets",
        apps_api(env).list_namespaced_replica_set,
        env.namespace,
        label_selector=_selector(dep),
    )
    uid = dep["metadata"]["uid"]
    return [rs for rs in listing.get("items") or [] if _owned_by(rs, uid)]


def _read(env: KubeEnvironment) -> dict[str, Any]:
    result: dict[str, Any] = _raw(
        env,
        "read deployment",
        apps_api(env).read_namespaced_deployment,
        env.deployment,
        env.namespace,
    )
    return result


def _pod_state(pod: dict[str, Any]) -> PodState:
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    restarts, reason, message = 0, None, ""
    for cs in status.get("containerStatuses") or []:
        restarts += int(cs.get("restartCount") or 0)
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and reason is None:
            reason, message = waiting.get("reason"), str(waiting.get("message") or "")
    return PodState(str(pod["metadata"]["name"]), ready, restarts, reason, message)


def new_pods(env: KubeEnvironment, dep: dict[str, Any]) -> tuple[PodState, ...]:
    """The pods of the Deployment's current ReplicaSet (the one with its revision)."""
    revision = _revision(dep)
    new = [rs for rs in _owned_replicasets(env, dep) if _revision(rs) == revision]
    if not new:
        return ()
    uid = new[0]["metadata"]["uid"]
    pods = _raw(
        env,
        "list pods",
        core_api(env).list_namespaced_pod,
        env.namespace,
        label_selector=_selector(dep),
    )
    return tuple(_pod_state(p) for p in pods.get("items") or [] if _owned_by(p, uid, False))


def rollout_status(env: KubeEnvironment) -> RolloutStatus:
    """The Deployment's rollout status and (once the spec is observed) its new pods."""
    dep = _read(env)
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    generation = int(dep["metadata"].get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    conditions = status.get("conditions") or []
    progressing: dict[str, Any] = next(
        (c for c in conditions if c.get("type") == "Progressing"), {}
    )
    return RolloutStatus(
        generation=generation,
        observed_generation=observed,
        desired=int(spec.get("replicas", 1)),
        replicas=int(status.get("replicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        progressing_reason=progressing.get("reason"),
        progressing_message=str(progressing.get("message") or ""),
        pods=new_pods(env, dep) if observed >= generation else (),
    )


@task(name="read current release", **retry.NETWORK)
def current_release(env: KubeEnvironment) -> Release:
    """The Deployment's revision, image and replicas: the target of a later rollback."""
    dep = _read(env)
    return Release(
        environment=env.environment,
        revision=_revision(dep),
        image=_image_of(env, dep["spec"]["template"]),
        replicas=int(dep["spec"].get("replicas", 1)),
    )


@task(name="rollout history", **retry.NETWORK)
def rollout_history(env: KubeEnvironment) -> list[RevisionRecord]:
    """Every recorded revision with its image (``kubectl rollout history``), oldest first."""
    dep = _read(env)
    rows = [
        RevisionRecord(
            revision=_revision(rs),
            image=_image_of(env, rs["spec"]["template"]),
            replicaset=rs["metadata"]["name"],
            replicas=int(rs["spec"].get("replicas") or 0),
            created_at=_timestamp(rs["metadata"].get("creationTimestamp")),
            earlier_revisions=_revision_history(rs),
        )
        for rs in _owned_replicasets(env, dep)
    ]
    return sorted(rows, key=lambda row: row.revision)


def _patch(env: KubeEnvironment, action: str, body: Any, content_type: str) -> dict[str, Any]:
    result: dict[str, Any] = _raw(
        env,
        action,
        apps_api(env).patch_namespaced_deployment,
        env.deployment,
        env.namespace,
        body,
        _content_type=content_type,
    )
    return result


@task(name="set image", **retry.NETWORK)
def set_image(env: KubeEnvironment, image: str) -> ImageSet:
    """Point the Deployment's container at ``image`` (``kubectl set image``; idempotent)."""
    containers = [{"name": env.container, "image": image}]
    dep = _patch(
        env, "set image", {"spec": {"template": {"spec": {"containers": containers}}}}, STRATEGIC
    )
    get_run_logger().info("%s: image set to %s", env.environment, image)
    generation = dep["metadata"].get("generation")
    return ImageSet(env.environment, image, int(generation) if generation is not None else None)


@task(name="wait for rollout", **retry.ONCE)
def wait_for_rollout(
    env: KubeEnvironment,
    timeout_s: float = 300.0,
    poll_s: float = 0.5,
    api_outage_s: float = 30.0,
    fail_fast: bool = True,
) -> RolloutResult:
    """Poll until the rollout is done, failing fast on crash-looping or unpullable pods.

    An unreachable API is tolerated for ``api_outage_s`` (the rollout goes on without us);
    longer, the step fails as transient. ``fail_fast=False`` waits for the Deployment's
    progress deadline instead, as ``kubectl rollout status`` does.

    Raises:
        VerificationFailed: the rollout failed, or did not finish within ``timeout_s``.
        ServiceUnavailable: the API stayed unreachable for ``api_outage_s``.
    """
    logger = get_run_logger()
    started = time.monotonic()
    failing_since: float | None = None
    last: RolloutVerdict | None = None
    while True:
        try:
            verdict = rollout_verdict(rollout_status(env), fail_fast)
            failing_since = None
        except TransientError as exc:
            now = time.monotonic()
            failing_since = failing_since if failing_since is not None else now
            logger.warning(
                "%s: rollout status unavailable (%s); still waiting", env.environment, exc
            )
            if now - failing_since >= api_outage_s:
                raise ServiceUnavailable(
                    f"{env.environment}: the Kubernetes API was unreachable for "
                    f"{now - failing_since:.0f}s while waiting for the rollout",
                    hint="check the API server; the rollout itself may still be progressing",
                ) from exc
            verdict = None
        if verdict is not None:
            if verdict != last:
                logger.info("%s rollout: %s", env.environment, verdict.message)
            last = verdict
            elapsed = round(time.monotonic() - started, 2)
            if verdict.done:
                return RolloutResult(env.environment, elapsed, verdict.message)
            if verdict.failed:
                raise VerificationFailed(
                    f"{env.environment} rollout failed after {elapsed}s: {verdict.message}",
                    hint="look at the pods of the new ReplicaSet; the release is not healthy",
                )
        if time.monotonic() - started >= timeout_s:
            seen = last.message if last else "no status could be read"
            raise VerificationFailed(
                f"{env.environment} rollout did not finish within {timeout_s:g}s ({seen})"
            )
        time.sleep(poll_s)


@task(name="undo rollout", **retry.NETWORK)
def undo_rollout(env: KubeEnvironment, to_revision: int | None = None) -> Rollback:
    """Roll back as ``kubectl rollout undo [--to-revision=N]`` does.

    Finds the ReplicaSet carrying that revision and patches the Deployment's pod template
    (and annotations) back to its template; the controller then rolls it out as a new
    revision. A Deployment already on that template is left alone.

    Raises:
        ConfigurationError: the revision is not in the history.
    """
    logger = get_run_logger()
    dep = _read(env)
    current = _revision(dep)
    by_revision = {_revision(rs): rs for rs in _owned_replicasets(env, dep)}
    target = undo_revision(list(by_revision), current, to_revision)
    rs = by_revision[target]
    template = rs["spec"]["template"]
    labels = (template.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    image = _image_of(env, template)
    if _template_key(template) == _template_key(dep["spec"]["template"]):
        logger.info("%s: skipped rollback (already on revision %s)", env.environment, target)
        return Rollback(env.environment, current, target, image, skipped=True)
    annotations = {k: v for k, v in _annotations(dep).items() if k in _UNDO_SKIP}
    annotations.update({k: v for k, v in _annotations(rs).items() if k not in _UNDO_SKIP})
    patch = [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]
    _patch(env, "undo rollout", patch, JSON_PATCH)
    logger.info(
        "%s: rolled back from revision %s to %s (%s)", env.environment, current, target, image
    )
    return Rollback(env.environment, current, target, image, skipped=False)


@task(name="rollout restart", **retry.NETWORK)
def restart_rollout(env: KubeEnvironment) -> Restart:
    """Replace every pod, one by one (``kubectl rollout restart``: a restartedAt stamp)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    _patch(env, "rollout restart", body, STRATEGIC)
    get_run_logger().info("%s: rollout restart requested at %s", env.environment, stamp)
    return Restart(env.environment, stamp)


@task(name="scale deployment", **retry.NETWORK)
def scale_deployment(env: KubeEnvironment, replicas: int) -> Scale:
    """Set the replica count through the scale subresource (``kubectl scale``)."""
    api = apps_api(env)
    name, namespace = env.deployment, env.namespace
    before = _raw(env, "read scale", api.read_namespaced_deployment_scale, name, namespace)
    body = {"spec": {"replicas": replicas}}
    _raw(
        env,
        "scale",
        api.patch_namespaced_deployment_scale,
        name,
        namespace,
        body,
        _content_type=MERGE,
    )
    previous = int((before.get("spec") or {}).get("replicas") or 0)
    get_run_logger().info("%s: scaled from %s to %s replicas", env.environment, previous, replicas)
    return Scale(env.environment, previous, replicas)
