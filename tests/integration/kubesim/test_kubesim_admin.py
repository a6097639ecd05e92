"""The simulator's non-Kubernetes side: injected faults, the admin API and the notification sink."""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.kubesim import SimServer, run_in_thread
from tests.kubesim_support import TIMING, deploy, revision, rolled_out, status_body, wait_for


def test_injected_faults_reach_the_client(apps: client.AppsV1Api, admin: httpx.Client) -> None:
    rule = {"status": 503, "method": "GET", "path": "/deployments/web-app$", "count": 1}
    assert admin.post("/_sim/faults", json=rule).status_code == 200

    with pytest.raises(ApiException) as raised:
        apps.read_namespaced_deployment("web-app", "staging")
    assert raised.value.status == 503
    assert status_body(raised.value)["reason"] == "ServiceUnavailable"
    assert apps.read_namespaced_deployment("web-app", "staging").metadata.name == "web-app"

    admin.post("/_sim/faults", json={"down": True})
    with pytest.raises(ApiException) as raised:
        apps.list_namespaced_replica_set("production")
    assert raised.value.status == 503
    admin.delete("/_sim/faults")
    assert apps.list_namespaced_replica_set("production").items


def test_fault_after_the_write_applies_it_but_loses_the_answer(
    apps: client.AppsV1Api, admin: httpx.Client, ns: str
) -> None:
    deploy(apps, ns, "lost")
    admin.post(
        "/_sim/faults", json={"status": 500, "method": "PATCH", "path": "/lost$", "after": True}
    )
    with pytest.raises(ApiException) as raised:
        apps.patch_namespaced_deployment("lost", ns, {"metadata": {"labels": {"seen": "yes"}}})
    assert raised.value.status == 500
    assert apps.read_namespaced_deployment("lost", ns).metadata.labels["seen"] == "yes"
    log = admin.get("/_sim/requests").json()
    assert any(r["method"] == "PATCH" and r["fault"] and r["status"] == 500 for r in log)


def test_admin_config_and_reset(sim: SimServer, admin: httpx.Client) -> None:
    assert admin.get("/_sim/config").json()["pod_start_seconds"] == TIMING.pod_start_seconds
    assert admin.post("/_sim/config", json={"bogus": 1}).status_code == 400
    assert admin.get("/healthz").text == "ok"
    assert admin.get("/api/v1/nothing-here").json()["reason"] == "NotFound"

    with run_in_thread(tick=0) as own, client.ApiClient(client.Configuration(host=own.url)) as api:
        apps = client.AppsV1Api(api)
        apps.delete_namespaced_deployment("web-app", "staging")
        with pytest.raises(ApiException):
            apps.read_namespaced_deployment("web-app", "staging")
        assert httpx.post(f"{own.url}/_sim/reset").status_code == 200
        assert revision(apps.read_namespaced_deployment("web-app", "staging")) == "1"


def test_notification_sink_stores_posts_per_channel(admin: httpx.Client) -> None:
    admin.delete("/_sink")
    assert admin.post("/_sink/page", json={"subject": "P1", "body": "down"}).text == "ok"
    admin.post("/_sink/page", content="plain text", headers={"content-type": "text/plain"})
    admin.post("/_sink/notify", data={"text": "hi"})
    page = admin.get("/_sink/page").json()
    assert [entry["body"] for entry in page] == [{"subject": "P1", "body": "down"}, "plain text"]
    assert all(entry["received_at"] for entry in page)
    assert admin.get("/_sink/notify").json()[0]["body"] == {"text": "hi"}
    assert admin.get("/_sink").json() == {"notify": 1, "page": 2}
    assert admin.delete("/_sink").status_code == 200
    assert admin.get("/_sink/page").json() == []


def test_injected_faults_are_counted_and_the_count_survives_clear_and_reset(
    apps: client.AppsV1Api, admin: httpx.Client
) -> None:
    before = admin.get("/_sim/faults").json()["injected"]
    rule = {"status": 503, "method": "GET", "path": "/deployments/web-app$", "count": 2}
    admin.post("/_sim/faults", json=rule)
    admin.post("/_sim/faults", json={"status": None, "delay_seconds": 0.01, "path": "/replicasets"})
    for _ in range(2):
        with pytest.raises(ApiException):
            apps.read_namespaced_deployment("web-app", "staging")
    apps.list_namespaced_replica_set("staging")  # slowed, then answered
    admin.post("/_sim/faults", json={"down": True})
    with pytest.raises(ApiException):
        apps.list_namespaced_replica_set("production")
    admin.delete("/_sim/faults")
    admin.post("/_sim/reset")
    apps.read_namespaced_deployment("web-app", "staging")  # no fault: not counted
    after = admin.get("/_sim/faults").json()["injected"]
    added = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert {k: n for k, n in added.items() if n} == {"503": 2, "delay": 1, "down": 1}


def _pods(core: client.CoreV1Api, ns: str) -> dict[str, client.V1Pod]:
    return {
        p.metadata.name: p for p in core.list_namespaced_pod(ns, label_selector="app=one").items
    }


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_one_pod_taken_down_crash_loops_and_its_replacement_starts_clean(
    apps: client.AppsV1Api, core: client.CoreV1Api, admin: httpx.Client, ns: str
) -> None:
    """``POST /_sim/pods`` takes one pod down (OOMKilled, exit 137, never Ready again, the
    others untouched); deleting it lets the ReplicaSet start a clean pod in its place."""
    deploy(apps, ns, "one", replicas=3)
    victim, *others = sorted(_pods(core, ns))
    answer = admin.post("/_sim/pods", json={"namespace": ns, "pod": victim, "reason": "OOMKilled"})
    assert answer.status_code == 200, answer.text

    def down() -> client.V1Pod | None:
        pod = _pods(core, ns)[victim]
        status = pod.status.container_statuses[0]
        return pod if status.last_state.terminated and not _ready(pod) else None

    pod = wait_for(down, what=f"{victim} down")
    status = pod.status.container_statuses[0]
    assert (status.last_state.terminated.reason, status.last_state.terminated.exit_code) == (
        "OOMKilled",
        137,
    )
    assert status.state.waiting.reason == "CrashLoopBackOff" and status.restart_count >= 1
    log = core.read_namespaced_pod_log(victim, ns, container="web", previous=True)
    assert "out of memory" in log
    assert all(_ready(_pods(core, ns)[name]) for name in others)
    d = apps.read_namespaced_deployment("one", ns)
    assert (d.status.ready_replicas, d.status.available_replicas) == (2, 2)

    core.delete_namespaced_pod(victim, ns)
    after = wait_for(
        lambda: (
            (pods := _pods(core, ns))
            and len(pods) == 3
            and all(map(_ready, pods.values()))
            and pods
        ),
        what="a clean replacement",
    )
    assert victim not in after and set(others) < set(after)
    (fresh,) = set(after) - set(others)
    assert not after[fresh].status.container_statuses[0].last_state.terminated
    assert rolled_out(apps, ns, "one") is not None


def test_taking_down_a_pod_that_does_not_exist_is_refused(admin: httpx.Client, ns: str) -> None:
    missing = admin.post("/_sim/pods", json={"namespace": ns, "pod": "web-app-nope"})
    assert missing.status_code == 404 and "web-app-nope" in missing.json()["error"]
    assert admin.post("/_sim/pods", json={"pod": "x"}).status_code == 400
    bad = admin.post("/_sim/pods", json={"namespace": ns, "pod": "x", "reason": "Bored"})
    assert bad.status_code == 400 and "OOMKilled" in bad.json()["error"]
