"""The simulator's API semantics: conflicts, not found, bad bodies, patches, secrets, selectors."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kubesim_support import deploy, manifest, status_body


def test_replace_with_a_stale_resource_version_conflicts(apps: client.AppsV1Api, ns: str) -> None:
    stale = deploy(apps, ns, "cas")
    apps.patch_namespaced_deployment("cas", ns, {"metadata": {"labels": {"owner": "someone-else"}}})
    stale.spec.replicas = 3

    with pytest.raises(ApiException) as raised:
        apps.replace_namespaced_deployment("cas", ns, stale)

    assert raised.value.status == 409
    body = status_body(raised.value)
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert (body["reason"], body["code"]) == ("Conflict", 409)
    assert "the object has been modified" in body["message"]
    fresh = apps.read_namespaced_deployment("cas", ns)
    fresh.spec.replicas = 3
    assert apps.replace_namespaced_deployment("cas", ns, fresh).metadata.generation == 2


def test_missing_objects_get_a_not_found_status(
    apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    with pytest.raises(ApiException) as raised:
        apps.read_namespaced_deployment("no-such-app", "staging")
    assert raised.value.status == 404
    body = status_body(raised.value)
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["code"] == 404
    assert body["message"] == 'deployments.apps "no-such-app" not found'
    assert body["details"] == {"name": "no-such-app", "group": "apps", "kind": "deployments"}
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_secret("nope", "staging")
    assert raised.value.status == 404
    with pytest.raises(ApiException) as raised:
        apps.create_namespaced_deployment("no-such-namespace", manifest("x"))
    assert raised.value.status == 404


def test_create_twice_and_invalid_bodies_are_refused(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, manifest("twice"))
    with pytest.raises(ApiException) as raised:
        apps.create_namespaced_deployment(ns, manifest("twice"))
    assert raised.value.status == 409 and status_body(raised.value)["reason"] == "AlreadyExists"

    broken = manifest("mismatch")
    broken.spec.template.metadata.labels = {"app": "other"}
    with pytest.raises(ApiException) as raised:
        apps.create_namespaced_deployment(ns, broken)
    assert raised.value.status == 422 and status_body(raised.value)["reason"] == "Invalid"

    with pytest.raises(ApiException) as raised:
        apps.patch_namespaced_deployment(
            "twice", ns, [{"op": "replace", "path": "/spec/nope", "value": 1}]
        )
    assert raised.value.status == 422


def test_merge_and_json_patches(apps: client.AppsV1Api, ns: str) -> None:
    deploy(apps, ns, "patchy")
    merged = apps.patch_namespaced_deployment(
        "patchy",
        ns,
        {"metadata": {"annotations": {"team": "ops"}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.annotations["team"] == "ops"
    assert merged.metadata.generation == 1, "metadata changes do not bump the generation"
    patched = apps.patch_namespaced_deployment(
        "patchy",
        ns,
        [
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "remove", "path": "/metadata/annotations/team"},
        ],
    )
    assert patched.spec.replicas == 3 and "team" not in patched.metadata.annotations
    assert patched.metadata.generation == 2


def test_secrets_merge_string_data_into_base64_data(core: client.CoreV1Api, ns: str) -> None:
    created = core.create_namespaced_secret(
        ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="db"),
            string_data={"username": "app", "password": "first"},
        ),
    )
    assert created.type == "Opaque" and created.string_data is None
    assert base64.b64decode(created.data["password"]).decode() == "first"

    core.patch_namespaced_secret("db", ns, {"stringData": {"password": "second"}})
    secret = core.read_namespaced_secret("db", ns)
    decoded = {k: base64.b64decode(v).decode() for k, v in secret.data.items()}
    assert decoded == {"username": "app", "password": "second"}
    assert secret.metadata.resource_version != created.metadata.resource_version

    listed = core.list_namespaced_secret(ns, field_selector="metadata.name=db")
    assert listed.kind == "SecretList" and [s.metadata.name for s in listed.items] == ["db"]
    core.delete_namespaced_secret("db", ns)
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_secret("db", ns)
    assert raised.value.status == 404


def test_tls_secrets_need_a_certificate_and_a_key(core: client.CoreV1Api, ns: str) -> None:
    """``kubernetes.io/tls`` as the apiserver validates it: tls.crt and tls.key required."""
    data = {"tls.crt": base64.b64encode(b"cert").decode(), "tls.key": "a2V5"}
    created = core.create_namespaced_secret(
        ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="web-tls"), type="kubernetes.io/tls", data=data
        ),
    )
    assert created.type == "kubernetes.io/tls" and set(created.data) == {"tls.crt", "tls.key"}
    created.data = {**data, "ca.crt": "Y2E="}
    replaced = core.replace_namespaced_secret("web-tls", ns, created)
    assert set(replaced.data) == {"tls.crt", "tls.key", "ca.crt"}

    for name, body in (("no-key", {"tls.crt": "Y2VydA=="}), ("none", {})):
        with pytest.raises(ApiException) as raised:
            core.create_namespaced_secret(
                ns,
                client.V1Secret(
                    metadata=client.V1ObjectMeta(name=name), type="kubernetes.io/tls", data=body
                ),
            )
        assert raised.value.status == 422
        assert "data[tls.key]: Required value" in raised.value.body
    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_secret("web-tls", ns, [{"op": "remove", "path": "/data/tls.crt"}])
    assert raised.value.status == 422 and "data[tls.crt]: Required value" in raised.value.body
    assert core.read_namespaced_secret("web-tls", ns).data["tls.crt"] == data["tls.crt"]


def test_label_selectors(apps: client.AppsV1Api, ns: str) -> None:
    for name, tier in (("a", "web"), ("b", "api"), ("c", "db")):
        body = manifest(name, replicas=0)
        body.metadata.labels["tier"] = tier
        apps.create_namespaced_deployment(ns, body)
    apps.create_namespaced_deployment(ns, manifest("d", replicas=0))

    def names(selector: str) -> list[str]:
        listed = apps.list_namespaced_deployment(ns, label_selector=selector)
        assert listed.kind == "DeploymentList" and listed.metadata.resource_version
        return [d.metadata.name for d in listed.items]

    assert names("tier=web") == ["a"]
    assert names("tier in (web,api)") == ["a", "b"]
    assert names("tier notin (web,api)") == ["c", "d"]
    assert names("tier!=db") == ["a", "b", "d"]
    assert names("tier") == ["a", "b", "c"]
    assert names("!tier") == ["d"]
    assert names("app=a,tier=web") == ["a"]
    assert names("app=a,tier=api") == []
    with pytest.raises(ApiException) as raised:
        names("tier in (web")
    assert raised.value.status == 400


def test_pod_logs_through_the_client(
    apps: client.AppsV1Api, core: client.CoreV1Api, ns: str
) -> None:
    """``kubectl logs [--previous]``: a crash-looping container's previous run says why it
    exited; a healthy one has no previous run (400, as the apiserver answers)."""
    from tests.kubesim_support import manifest, pods, wait_for

    bad = manifest("bad", image="registry.local/web-app:2.0-crashloop", replicas=1)
    apps.create_namespaced_deployment(ns, bad)  # never rolls out
    crashing = wait_for(
        lambda: [
            p
            for p in pods(core, ns, "bad")
            if p.status.container_statuses and p.status.container_statuses[0].last_state.terminated
        ],
        what="a terminated container",
    )[0]
    log = core.read_namespaced_pod_log(
        crashing.metadata.name, ns, container="web", previous=True, tail_lines=2
    )
    assert "crashed during startup" in log and log.endswith("exiting with code 1\n")
    assert len(log.splitlines()) == 2
    deploy(apps, ns, "good", replicas=1)
    running = wait_for(
        lambda: [p for p in pods(core, ns, "good") if p.status.phase == "Running"],
        what="a running pod",
    )[0]
    assert "listening on :8080" in core.read_namespaced_pod_log(running.metadata.name, ns)
    with pytest.raises(ApiException) as refused:
        core.read_namespaced_pod_log(running.metadata.name, ns, previous=True)
    assert refused.value.status == 400
    assert "previous terminated container" in status_body(refused.value)["message"]
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod_log("no-such-pod", ns)
    assert missing.value.status == 404
