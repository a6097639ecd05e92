"""The rotation's Kubernetes steps against the simulator over HTTP: switching a consumer's
secret restarts only the deployments that use it, and a consumer stuck in its rollout fails
verification. Tasks run through ``.fn`` (no Prefect server needed).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from blocks.kube import KubeEnvironment
from decisions.facts import ConsumerState
from devstack.kubesim.seed import web_app_deployment
from devstack.stack import StackInfo
from tasks import consumers as kc
from tasks import rotation as t
from tests.role_pair_support import TOKEN, credential


@pytest.fixture
def kube_env(stack: StackInfo) -> Iterator[KubeEnvironment]:
    namespace = "rot-" + secrets.token_hex(4)
    base = stack.kube_url
    with httpx.Client(base_url=base, timeout=10) as http:
        http.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}).raise_for_status()
        manifest = web_app_deployment(name="rot-app", replicas=1)
        manifest["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"][
            "secretKeyRef"
        ]["name"] = "rot-db"
        other = web_app_deployment(name="bystander", replicas=1)
        for dep in (manifest, other):
            http.post(
                f"/apis/apps/v1/namespaces/{namespace}/deployments", json=dep
            ).raise_for_status()
        yield KubeEnvironment(
            environment=namespace, api_url=base, namespace=namespace, deployment="rot-app",
            service_url=stack.app_url("staging"), prometheus_url=stack.prometheus_url,
        )  # fmt: skip
        http.delete(f"/api/v1/namespaces/{namespace}")


def test_switching_a_consumer_updates_the_secret_and_restarts_only_its_users(
    stack: StackInfo, kube_env: KubeEnvironment, pair: tuple[str, str, str]
) -> None:
    database, role, password = pair
    cred = credential(stack, database, role, password)
    cred = t.DbCredential(**{**cred.__dict__, "version_id": TOKEN})
    state = kc.consumer_state.fn(kube_env, "rot-db", cred)
    assert state == ConsumerState(
        environment=kube_env.environment, secret=False, deployments=("rot-app",), switched=False
    )

    assert kc.update_secret.fn(kube_env, "rot-db", cred) == "created"
    assert kc.restart_consumers.fn(kube_env, "rot-db", TOKEN) == ["rot-app"]
    ready = kc.wait_for_consumers.fn(kube_env, "rot-db", TOKEN, timeout_s=30, poll_s=0.2)
    assert ready == [{"environment": kube_env.environment, "deployment": "rot-app", "ready": 1}]
    assert kc.consumer_state.fn(kube_env, "rot-db", cred).switched is True
    # switching again changes nothing
    assert kc.update_secret.fn(kube_env, "rot-db", cred) == "unchanged"
    assert kc.restart_consumers.fn(kube_env, "rot-db", TOKEN) == []

    with httpx.Client(base_url=stack.kube_url) as http:
        ns = kube_env.namespace
        stored = http.get(f"/api/v1/namespaces/{ns}/secrets/rot-db").json()
        bystander = http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/bystander").json()
    assert base64.b64decode(stored["data"]["password"]).decode() == password
    assert stored["metadata"]["annotations"][kc.VERSION_ANNOTATION] == TOKEN
    assert bystander["metadata"]["generation"] == 1  # it does not use the secret


def test_a_consumer_stuck_in_its_rollout_fails_verification(
    stack: StackInfo, kube_env: KubeEnvironment, pair: tuple[str, str, str]
) -> None:
    database, role, password = pair
    cred = t.DbCredential(**credential(stack, database, role, password).__dict__)
    with httpx.Client(base_url=stack.kube_url) as http:
        http.patch(
            f"/apis/apps/v1/namespaces/{kube_env.namespace}/deployments/rot-app",
            json={"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "registry.local/web-app:crashloop"}
            ]}}}},
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        ).raise_for_status()  # fmt: skip
    kc.restart_consumers.fn(kube_env, "rot-db", "v0")
    with pytest.raises(Exception, match="did not finish rolling out") as caught:
        kc.wait_for_consumers.fn(kube_env, "rot-db", "v0", timeout_s=2, poll_s=0.2)
    assert type(caught.value).__name__ == "VerificationFailed"
    assert password not in str(caught.value) and cred.version_id == "v0"


def test_uses_secret_finds_every_kind_of_reference() -> None:
    def pod(**spec: Any) -> dict[str, Any]:
        return {"containers": [{"name": "c", "image": "i"}], **spec}

    assert kc.uses_secret(pod(volumes=[{"name": "v", "secret": {"secretName": "s"}}]), "s")
    assert kc.uses_secret(
        pod(volumes=[{"name": "v", "projected": {"sources": [{"secret": {"name": "s"}}]}}]), "s"
    )
    env_from = {"name": "c", "image": "i", "envFrom": [{"secretRef": {"name": "s"}}]}
    assert kc.uses_secret({"containers": [env_from]}, "s")
    assert kc.uses_secret({"containers": [], "initContainers": [env_from]}, "s")
    assert not kc.uses_secret(pod(volumes=[{"name": "v", "secret": {"secretName": "x"}}]), "s")
