"""The consumers of a database credential: a Kubernetes Secret and the Deployments using it,
and the saved ``PostgresTarget`` blocks our own runbooks log in with.

Switching a consumer to a credential version means: the Secret carries that version's fields
(and the version id in the ``opsflows.io/credential-version`` annotation), every Deployment
whose pods reference the Secret is rollout-restarted with the same annotation on its pod
template (plus ``kubectl.kubernetes.io/restartedAt``, as ``kubectl rollout restart`` does), the
rollout completes and every pod is Ready on the new template. Each part checks before it
writes, so switching again is a no-op; the annotation makes the state observable after a crash.
"""

from __future__ import annotations

import base64
import hmac
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from prefect import task

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.facts import ConsumerState
from opsflows import retry
from opsflows.errors import ConfigurationError, NotFoundError, VerificationFailed
from tasks.http import http_errors
from tasks.kube import kube_errors
from tasks.rotation import DbCredential

VERSION_ANNOTATION = "opsflows.io/credential-version"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
MERGE_PATCH = "application/merge-patch+json"


def secret_fields(cred: DbCredential) -> dict[str, str]:
    """The Secret's keys (contains the password: never log it)."""
    return {
        "username": cred.username,
        "password": cred.password.get_secret_value(),
        "host": cred.host,
        "port": str(cred.port),
        "dbname": cred.dbname,
    }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class _Kube:
    """One API client per task (building one loads the CA bundle: too slow per call)."""

    def __init__(self, env: KubeEnvironment) -> None:
        self.env = env
        self.client = env.api_client()
        self.apps = client.AppsV1Api(self.client)
        self.core = client.CoreV1Api(self.client)

    def plain(self, obj: Any) -> dict[str, Any]:
        """A client model as the JSON dict the API sent."""
        data: dict[str, Any] = self.client.sanitize_for_serialization(obj)
        return data


def uses_secret(pod_spec: dict[str, Any], secret_name: str) -> bool:
    """Whether a pod spec reads ``secret_name`` (env, envFrom, volumes, projected volumes)."""
    containers = (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or [])
    for container in containers:
        for env in container.get("env") or []:
            ref = ((env.get("valueFrom") or {}).get("secretKeyRef")) or {}
            if ref.get("name") == secret_name:
                return True
        for source in container.get("envFrom") or []:
            if (source.get("secretRef") or {}).get("name") == secret_name:
                return True
    for volume in pod_spec.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName") == secret_name:
            return True
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name") == secret_name:
                return True
    return False


def _matches(secret: dict[str, Any] | None, cred: DbCredential) -> bool:
    if secret is None:
        return False
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    if annotations.get(VERSION_ANNOTATION) != cred.version_id:
        return False
    data = secret.get("data") or {}
    return all(
        hmac.compare_digest(str(data.get(key, "")).encode(), _b64(value).encode())
        for key, value in secret_fields(cred).items()
    )


def _read_secret(kube: _Kube, name: str) -> dict[str, Any] | None:
    try:
        with kube_errors(kube.env, f"read secret {name}"):
            return kube.plain(kube.core.read_namespaced_secret(name, kube.env.namespace))
    except NotFoundError:
        return None


def _rollout(dep: dict[str, Any]) -> dict[str, Any]:
    """Where a Deployment's rollout stands, like ``kubectl rollout status``."""
    meta, spec, status = dep["metadata"], dep.get("spec") or {}, dep.get("status") or {}
    template = (spec.get("template") or {}).get("metadata") or {}
    wanted = int(spec.get("replicas", 1))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    complete = (
        int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) == wanted
        and int(status.get("replicas") or 0) == wanted
        and int(status.get("availableReplicas") or 0) == wanted
    )
    return {
        "name": meta["name"],
        "version": (template.get("annotations") or {}).get(VERSION_ANNOTATION, ""),
        "complete": complete,
        "stalled": progressing.get("reason") == "ProgressDeadlineExceeded",
        "replicas": wanted,
        "available": int(status.get("availableReplicas") or 0),
        "selector": ",".join(
            f"{k}={v}" for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items()
        ),
    }


def _consumers(kube: _Kube, secret_name: str) -> list[dict[str, Any]]:
    with kube_errors(kube.env, "list deployments"):
        listing = kube.plain(kube.apps.list_namespaced_deployment(kube.env.namespace))
    return [
        _rollout(dep)
        for dep in listing.get("items") or []
        if uses_secret(
            ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}, secret_name
        )
    ]


@task(name="read consumer state", **retry.NETWORK)
def consumer_state(env: KubeEnvironment, secret_name: str, cred: DbCredential) -> ConsumerState:
    """Whether the environment's Secret and Deployments run on ``cred``'s version."""
    kube = _Kube(env)
    secret_ok = _matches(_read_secret(kube, secret_name), cred)
    deployments = _consumers(kube, secret_name)
    on_version = all(d["version"] == cred.version_id and d["complete"] for d in deployments)
    return ConsumerState(
        environment=env.environment,
        secret=secret_ok,
        deployments=tuple(d["name"] for d in deployments),
        switched=secret_ok and on_version,
    )


@task(name="update consumer secret", **retry.NETWORK)
def update_secret(env: KubeEnvironment, secret_name: str, cred: DbCredential) -> str:
    """Write ``cred`` into the Kubernetes Secret (created when missing): what was done."""
    kube = _Kube(env)
    current = _read_secret(kube, secret_name)
    if _matches(current, cred):
        return "unchanged"
    metadata = {"name": secret_name, "annotations": {VERSION_ANNOTATION: cred.version_id}}
    data = {key: _b64(value) for key, value in secret_fields(cred).items()}
    api = kube.core
    with kube_errors(env, f"write secret {secret_name}"):
        if current is None:
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(**metadata), type="Opaque", data=data
            )
            api.create_namespaced_secret(env.namespace, body)
            return "created"
        api.patch_namespaced_secret(
            secret_name,
            env.namespace,
            {"metadata": {"annotations": metadata["annotations"]}, "data": data},
            _content_type=MERGE_PATCH,
        )
    return "updated"


@task(name="restart consumers", **retry.NETWORK)
def restart_consumers(
    env: KubeEnvironment, secret_name: str, version_id: str, only_from: str | None = None
) -> list[str]:
    """Rollout-restart every Deployment using the Secret whose pods are not on ``version_id``
    (with ``only_from``: only those whose pods are on that version, to undo a switch)."""
    restarted = []
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube = _Kube(env)
    for dep in _consumers(kube, secret_name):
        if dep["version"] == version_id:
            continue
        if only_from is not None and dep["version"] != only_from:
            continue
        patch = {
            "spec": {
                "template": {
                    "metadata": {
                        "annotations": {RESTARTED_AT: stamp, VERSION_ANNOTATION: version_id}
                    }
                }
            }
        }
        with kube_errors(env, f"restart deployment {dep['name']}"):
            kube.apps.patch_namespaced_deployment(
                dep["name"], env.namespace, patch, _content_type=MERGE_PATCH
            )
        restarted.append(str(dep["name"]))
    return restarted


@task(name="wait for consumers", **retry.NETWORK)
def wait_for_consumers(
    env: KubeEnvironment,
    secret_name: str,
    version_id: str,
    timeout_s: float = 300.0,
    names: list[str] | None = None,
    poll_s: float = 0.5,
) -> list[dict[str, Any]]:
    """Wait until every Deployment using the Secret (or those in ``names``) has rolled out
    ``version_id``, then check that each of its pods is Ready and runs that version."""
    deadline = time.monotonic() + timeout_s
    kube = _Kube(env)
    while True:
        deployments = [
            d for d in _consumers(kube, secret_name) if names is None or d["name"] in names
        ]
        stalled = [d["name"] for d in deployments if d["stalled"]]
        if stalled:
            raise VerificationFailed(
                f"{env.environment}: rollout of {', '.join(stalled)} passed its progress deadline",
                hint="look at the pods (kubectl describe) and fix them; AWSCURRENT is unchanged",
            )
        waiting = [d for d in deployments if d["version"] != version_id or not d["complete"]]
        if not waiting:
            break
        if time.monotonic() > deadline:
            late = ", ".join(f"{d['name']} ({d['available']}/{d['replicas']})" for d in waiting)
            raise VerificationFailed(
                f"{env.environment}: {late} did not finish rolling out in {timeout_s:.0f} s"
            )
        time.sleep(poll_s)
    for dep in deployments:
        _check_pods(kube, dep, version_id)
    return [
        {"environment": env.environment, "deployment": d["name"], "ready": d["available"]}
        for d in deployments
    ]


def _check_pods(kube: _Kube, dep: dict[str, Any], version_id: str) -> None:
    env = kube.env
    with kube_errors(env, f"list pods of {dep['name']}"):
        pods = kube.plain(
            kube.core.list_namespaced_pod(env.namespace, label_selector=dep["selector"])
        )
    bad = []
    for pod in pods.get("items") or []:
        meta, status = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        version = (meta.get("annotations") or {}).get(VERSION_ANNOTATION)
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if version != version_id or not ready:
            bad.append(str(meta["name"]))
    if bad:
        raise VerificationFailed(
            f"{env.environment}: pods of {dep['name']} not Ready on the new credential: "
            + ", ".join(bad[:5])
        )


def block_matches(block: PostgresTarget, cred: DbCredential) -> bool:
    """Whether a ``PostgresTarget`` block logs in as ``cred`` (role and password)."""
    return block.user == cred.username and hmac.compare_digest(
        block.password.get_secret_value().encode(), cred.password.get_secret_value().encode()
    )


@task(name="update database block", **retry.NETWORK)
def update_database_block(block: PostgresTarget, cred: DbCredential) -> str:
    """Save ``cred``'s role and password into a ``PostgresTarget`` block: what was done."""
    if block_matches(block, cred):
        return "unchanged"
    name = block._block_document_name
    if not name:
        raise ConfigurationError("a database block to update must be loaded by name")
    block.user = cred.username
    block.password = cred.password
    with http_errors(f"save block {name}", "the Prefect API"):
        block.save(name, overwrite=True)
    return "updated"
