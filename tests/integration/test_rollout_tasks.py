"""Rollout tasks against the Kubernetes simulator, in a namespace of this module's own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from prefect.logging import disable_run_logger

from blocks.kube import KubeEnvironment
from decisions.releases import Rollback, Scale
from devstack.kubesim.seed import web_app_deployment
from devstack.stack import StackInfo
from opsflows.errors import ConfigurationError, VerificationFailed
from tasks import rollout

GOOD = "registry.local/web-app:1.0.0"


@pytest.fixture(scope="module")
def env(stack: StackInfo) -> Iterator[KubeEnvironment]:
    """A scratch namespace with the sample app's Deployment (2 replicas, rolled out)."""
    namespace = f"deploy-it-{uuid.uuid4().hex[:6]}"
    kube = KubeEnvironment(
        environment="scratch",
        api_url=stack.kube_url,
        namespace=namespace,
        service_url="http://127.0.0.1:9",
        prometheus_url=stack.prometheus_url,
        verify_ssl=False,
    )
    core = client.CoreV1Api(kube.api_client())
    core.create_namespace({"metadata": {"name": namespace}})
    client.AppsV1Api(kube.api_client()).create_namespaced_deployment(
        namespace, web_app_deployment()
    )
    with disable_run_logger():
        rollout.wait_for_rollout.fn(kube, timeout_s=30)
    yield kube
    core.delete_namespace(namespace)


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    """Tasks are called through ``.fn``, outside a run: their run logger is a null one."""
    with disable_run_logger():
        yield


@pytest.fixture
def healthy(env: KubeEnvironment) -> Iterator[KubeEnvironment]:
    """Each test starts and ends on a rolled-out healthy image."""
    yield env
    if rollout.current_release.fn(env).image != GOOD:
        rollout.set_image.fn(env, GOOD)
    rollout.wait_for_rollout.fn(env, timeout_s=30)


def deployment(env: KubeEnvironment) -> Any:
    return client.AppsV1Api(env.api_client()).read_namespaced_deployment(
        env.deployment, env.namespace
    )


def test_set_image_rolls_out_and_records_a_revision(healthy: KubeEnvironment) -> None:
    before = rollout.current_release.fn(healthy)
    rollout.set_image.fn(healthy, "registry.local/web-app:1.1.0")
    done = rollout.wait_for_rollout.fn(healthy, timeout_s=30)
    after = rollout.current_release.fn(healthy)
    assert done.message == "successfully rolled out"
    assert after.image == "registry.local/web-app:1.1.0"
    assert after.revision == before.revision + 1
    history = rollout.rollout_history.fn(healthy)
    assert history[-1].image == "registry.local/web-app:1.1.0"
    assert {before.image, after.image} <= {row.image for row in history}
    status = rollout.rollout_status(healthy)
    assert status.updated == status.available == 2 and len(status.pods) == 2
    assert all(p.ready for p in status.pods)


def test_same_image_twice_is_a_no_op(healthy: KubeEnvironment) -> None:
    generation = deployment(healthy).metadata.generation
    rollout.set_image.fn(healthy, rollout.current_release.fn(healthy).image)
    assert deployment(healthy).metadata.generation == generation


@pytest.mark.parametrize(
    ("image", "reasons"),
    [
        ("registry.local/web-app:9.9.9-crashloop", ("CrashLoopBackOff",)),
        ("registry.local/web-app:9.9.9-badpull", ("ErrImagePull", "ImagePullBackOff")),
    ],
)
def test_broken_pods_fail_fast(healthy: KubeEnvironment, image: str, reasons: tuple[str]) -> None:
    rollout.set_image.fn(healthy, image)
    started = time.monotonic()
    with pytest.raises(VerificationFailed) as info:
        rollout.wait_for_rollout.fn(healthy, timeout_s=60)
    assert time.monotonic() - started < 15, "should fail long before the progress deadline"
    assert any(reason in str(info.value) for reason in reasons)
    assert "rollout failed" in str(info.value)


def test_progress_deadline_without_fail_fast(healthy: KubeEnvironment) -> None:
    patch = {"spec": {"progressDeadlineSeconds": 2}}
    client.AppsV1Api(healthy.api_client()).patch_namespaced_deployment(
        healthy.deployment,
        healthy.namespace,
        patch,
        _content_type="application/merge-patch+json",
    )
    try:
        rollout.set_image.fn(healthy, "registry.local/web-app:9.9.8-crashloop")
        with pytest.raises(VerificationFailed, match="progress deadline"):
            rollout.wait_for_rollout.fn(healthy, timeout_s=20, fail_fast=False)
    finally:
        patch["spec"]["progressDeadlineSeconds"] = 600
        client.AppsV1Api(healthy.api_client()).patch_namespaced_deployment(
            healthy.deployment,
            healthy.namespace,
            patch,
            _content_type="application/merge-patch+json",
        )


def test_undo_returns_to_the_previous_template_like_kubectl(healthy: KubeEnvironment) -> None:
    good = rollout.current_release.fn(healthy)
    rollout.set_image.fn(healthy, "registry.local/web-app:9.9.7-crashloop")
    with pytest.raises(VerificationFailed):
        rollout.wait_for_rollout.fn(healthy, timeout_s=30)
    bad = rollout.current_release.fn(healthy)
    undone = rollout.undo_rollout.fn(healthy, None)
    assert undone == Rollback(
        environment="scratch",
        from_revision=bad.revision,
        to_revision=good.revision,
        image=good.image,
        skipped=False,
    )
    rollout.wait_for_rollout.fn(healthy, timeout_s=30)
    after = rollout.current_release.fn(healthy)
    # The old ReplicaSet is reused and gets the next revision number, as in Kubernetes.
    assert after.image == good.image and after.revision == bad.revision + 1
    revisions = {row.revision: row.image for row in rollout.rollout_history.fn(healthy)}
    assert good.revision not in revisions and revisions[after.revision] == good.image
    labels = deployment(healthy).spec.template.metadata.labels
    assert "pod-template-hash" not in labels


def test_undo_to_a_named_revision_and_refusals(healthy: KubeEnvironment) -> None:
    first = rollout.current_release.fn(healthy)
    for tag in ("2.0.1", "2.0.2"):
        rollout.set_image.fn(healthy, f"registry.local/web-app:{tag}")
        rollout.wait_for_rollout.fn(healthy, timeout_s=30)
    generation = deployment(healthy).metadata.generation
    with pytest.raises(ConfigurationError, match="not in the rollout history"):
        rollout.undo_rollout.fn(healthy, 999)
    current = rollout.current_release.fn(healthy)
    skipped = rollout.undo_rollout.fn(healthy, current.revision)
    assert skipped.skipped is True
    assert deployment(healthy).metadata.generation == generation
    rollout.undo_rollout.fn(healthy, first.revision)
    rollout.wait_for_rollout.fn(healthy, timeout_s=30)
    assert rollout.current_release.fn(healthy).image == first.image


def test_restart_replaces_every_pod(healthy: KubeEnvironment) -> None:
    before = {p.name for p in rollout.rollout_status(healthy).pods}
    stamp = rollout.restart_rollout.fn(healthy)
    rollout.wait_for_rollout.fn(healthy, timeout_s=30)
    after = {p.name for p in rollout.rollout_status(healthy).pods}
    assert before and after and not before & after
    annotations = deployment(healthy).spec.template.metadata.annotations
    assert annotations["kubectl.kubernetes.io/restartedAt"] == stamp.restarted_at


def test_scale_through_the_subresource_waits_until_available(healthy: KubeEnvironment) -> None:
    try:
        assert rollout.scale_deployment.fn(healthy, 3) == Scale("scratch", previous=2, replicas=3)
        rollout.wait_for_rollout.fn(healthy, timeout_s=30)
        status = rollout.rollout_status(healthy)
        assert status.desired == status.available == status.ready == 3
    finally:
        rollout.scale_deployment.fn(healthy, 2)
        rollout.wait_for_rollout.fn(healthy, timeout_s=30)
    assert rollout.current_release.fn(healthy).replicas == 2
