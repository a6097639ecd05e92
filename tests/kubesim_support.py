"""Helpers for driving the Kubernetes simulator with the official ``kubernetes`` client.

Manifests, ``kubectl rollout status`` semantics, polling, and readers for the objects and
``Status`` bodies the simulator answers with. The fixtures that serve a simulator live in
``tests/integration/kubesim/conftest.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.kubesim import SimConfig

T = TypeVar("T")
TIMING = SimConfig(
    pod_start_seconds=0.1, crashloop_restart_seconds=0.1, image_pull_backoff_seconds=0.2
)


def wait_for(check: Callable[[], T | None], timeout: float = 5.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.03)


def manifest(
    name: str, image: str = "registry.local/web-app:1.0.0", replicas: int = 2, **spec: Any
) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image=image)]),
            ),
            **spec,
        ),
    )


def condition(d: client.V1Deployment, kind: str) -> client.V1DeploymentCondition | None:
    return next((c for c in d.status.conditions or [] if c.type == kind), None)


def rolled_out(apps: client.AppsV1Api, ns: str, name: str) -> client.V1Deployment | None:
    """The deployment if its rollout is complete (``kubectl rollout status`` semantics)."""
    d = apps.read_namespaced_deployment(name, ns)
    s = d.status
    progressing = condition(d, "Progressing")
    done = (
        s.observed_generation == d.metadata.generation
        and s.updated_replicas == d.spec.replicas
        and s.replicas == d.spec.replicas
        and s.available_replicas == d.spec.replicas
        and progressing is not None
        and progressing.reason == "NewReplicaSetAvailable"
    )
    return d if done else None


def deploy(apps: client.AppsV1Api, ns: str, name: str, **kwargs: Any) -> client.V1Deployment:
    apps.create_namespaced_deployment(ns, manifest(name, **kwargs))
    return wait_for(lambda: rolled_out(apps, ns, name), what=f"{name} rolled out")


def set_image(apps: client.AppsV1Api, ns: str, name: str, image: str) -> client.V1Deployment:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}}
    return apps.patch_namespaced_deployment(name, ns, body)


def replica_sets(apps: client.AppsV1Api, ns: str, name: str) -> list[client.V1ReplicaSet]:
    return list(apps.list_namespaced_replica_set(ns, label_selector=f"app={name}").items)


def pods(core: client.CoreV1Api, ns: str, name: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(ns, label_selector=f"app={name}").items)


def revision(obj: Any) -> str:
    return str((obj.metadata.annotations or {}).get("deployment.kubernetes.io/revision"))


def status_body(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body
