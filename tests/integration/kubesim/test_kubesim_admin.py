"""The simulator's non-Kubernetes side: injected faults, the admin API and the notification sink."""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.kubesim import SimServer, run_in_thread
from tests.kubesim_support import TIMING, deploy, revision, status_body


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
