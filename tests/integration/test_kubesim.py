"""The Kubernetes simulator, driven over HTTP by the official ``kubernetes`` client.

One simulator is served in-process for the module (fast kubelet timings); every test works in
its own namespace, so tests do not see each other's objects.  Only the ``/_sim`` admin API
and the ``/_sink`` notification sink are called with plain httpx, since they are not
Kubernetes APIs.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.kubesim import SimConfig, SimServer, run_in_thread

T = TypeVar("T")
TIMING = SimConfig(
    pod_start_seconds=0.1, crashloop_restart_seconds=0.1, image_pull_backoff_seconds=0.2
)
_names = itertools.count(1)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    server = run_in_thread(config=TIMING)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_client(sim: SimServer) -> Iterator[client.ApiClient]:
    with client.ApiClient(client.Configuration(host=sim.url)) as api:
        yield api


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="module")
def http(sim: SimServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=5) as plain:
        yield plain


@pytest.fixture
def admin(http: httpx.Client) -> Iterator[httpx.Client]:
    """Plain HTTP for ``/_sim`` and ``/_sink``; injected faults are cleared afterwards."""
    yield http
    http.delete("/_sim/faults")


@pytest.fixture
def ns(core: client.CoreV1Api) -> str:
    name = f"t{next(_names)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


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


# -- the seed -------------------------------------------------------------------------------


def test_seed_has_web_app_rolled_out_in_staging_and_production(
    apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    namespaces = {n.metadata.name for n in core.list_namespace().items}
    assert {"staging", "production"} <= namespaces
    everywhere = apps.list_deployment_for_all_namespaces(label_selector="app=web-app")
    assert {d.metadata.namespace for d in everywhere.items} >= {"staging", "production"}
    running = core.list_pod_for_all_namespaces(
        label_selector="app=web-app", field_selector="status.phase=Running"
    )
    assert len(running.items) >= 4 and running.kind == "PodList"
    for env in ("staging", "production"):
        d = apps.read_namespaced_deployment("web-app", env)
        assert isinstance(d, client.V1Deployment)
        assert d.metadata.uid and d.metadata.creation_timestamp and d.metadata.resource_version
        assert d.spec.replicas == 2 and d.metadata.labels == {"app": "web-app"}
        container = d.spec.template.spec.containers[0]
        assert (container.name, container.image) == ("web", "registry.local/web-app:1.0.0")
        assert container.env[0].value_from.secret_key_ref.name == "web-app-db"
        assert revision(d) == "1"
        assert rolled_out(apps, env, "web-app") is not None
        assert condition(d, "Available").status == "True"
        (rs,) = replica_sets(apps, env, "web-app")
        assert revision(rs) == "1"
        assert rs.metadata.owner_references[0].uid == d.metadata.uid
        assert rs.metadata.name == f"web-app-{rs.metadata.labels['pod-template-hash']}"
        ready = [p for p in pods(core, env, "web-app") if p.status.container_statuses[0].ready]
        assert len(ready) == 2
        assert core.read_namespaced_secret("web-app-db", env).data.keys() >= {"password"}


# -- rollouts -------------------------------------------------------------------------------


def test_rollout_to_a_new_image_completes(
    apps: client.AppsV1Api, core: client.CoreV1Api, ns: str
) -> None:
    before = deploy(apps, ns, "shop")
    patched = set_image(apps, ns, "shop", "registry.local/web-app:1.1.0")
    assert patched.metadata.generation == before.metadata.generation + 1

    d = wait_for(lambda: rolled_out(apps, ns, "shop"), what="rollout of 1.1.0")

    assert d.status.observed_generation == d.metadata.generation == 2
    assert d.status.updated_replicas == d.status.available_replicas == d.status.ready_replicas == 2
    assert revision(d) == "2"
    assert condition(d, "Available").reason == "MinimumReplicasAvailable"
    sets = {revision(rs): rs for rs in replica_sets(apps, ns, "shop")}
    assert set(sets) == {"1", "2"}
    assert sets["1"].spec.replicas == 0 and sets["2"].spec.replicas == 2
    assert sets["2"].spec.template.spec.containers[0].image.endswith(":1.1.0")
    running = wait_for(lambda: len(pods(core, ns, "shop")) == 2 and pods(core, ns, "shop"))
    assert {p.spec.containers[0].image for p in running} == {"registry.local/web-app:1.1.0"}
    assert all(p.status.phase == "Running" for p in running)
    state = running[0].status.container_statuses[0]
    assert state.ready and state.state.running is not None and state.restart_count == 0


def test_crashloop_image_fails_the_progress_deadline(
    apps: client.AppsV1Api, core: client.CoreV1Api, ns: str
) -> None:
    deploy(apps, ns, "crashy", progress_deadline_seconds=1)
    set_image(apps, ns, "crashy", "registry.local/web-app:2.0.0-crashloop")

    def crashing() -> list[client.V1ContainerStatus]:
        statuses = [
            s
            for p in pods(core, ns, "crashy")
            for s in p.status.container_statuses or []
            if s.state.waiting is not None and s.state.waiting.reason == "CrashLoopBackOff"
        ]
        return [s for s in statuses if s.restart_count >= 2]

    statuses = wait_for(crashing, what="CrashLoopBackOff with restarts")
    assert not any(s.ready for s in statuses)

    def deadline_exceeded() -> client.V1Deployment | None:
        d = apps.read_namespaced_deployment("crashy", ns)
        cond = condition(d, "Progressing")
        return d if cond and cond.reason == "ProgressDeadlineExceeded" else None

    d = wait_for(deadline_exceeded, timeout=4, what="ProgressDeadlineExceeded")
    progressing = condition(d, "Progressing")
    assert progressing.status == "False"
    assert "timed out progressing" in progressing.message
    # maxUnavailable 25% of 2 rounds down to 0: the old pods keep serving.
    assert d.status.available_replicas == 2 and d.status.updated_replicas == 1
    assert condition(d, "Available").status == "True"


def test_bad_image_pull_goes_from_err_image_pull_to_back_off(
    apps: client.AppsV1Api, core: client.CoreV1Api, ns: str
) -> None:
    apps.create_namespaced_deployment(
        ns, manifest("nopull", image="nonexistent.invalid/app:1.0", replicas=1)
    )

    def reason() -> str | None:
        found = pods(core, ns, "nopull")
        statuses = found[0].status.container_statuses if found else None
        waiting = statuses[0].state.waiting if statuses else None
        return waiting.reason if waiting else None

    wait_for(lambda: reason() == "ErrImagePull", what="ErrImagePull")
    wait_for(lambda: reason() == "ImagePullBackOff", what="ImagePullBackOff")
    (pod,) = pods(core, ns, "nopull")
    assert pod.status.phase == "Pending"
    assert core.list_namespaced_pod(ns, field_selector="status.phase=Pending").items
    assert not core.list_namespaced_pod(ns, field_selector="status.phase=Running").items


def test_undo_restores_the_previous_revision_by_reusing_its_replicaset(
    apps: client.AppsV1Api, core: client.CoreV1Api, ns: str
) -> None:
    deploy(apps, ns, "undo")
    set_image(apps, ns, "undo", "registry.local/web-app:2.0.0")
    wait_for(lambda: rolled_out(apps, ns, "undo"), what="rollout of 2.0.0")

    # What `kubectl rollout undo --to-revision=1` does: find the ReplicaSet, copy its template.
    (previous,) = [rs for rs in replica_sets(apps, ns, "undo") if revision(rs) == "1"]
    template = api_template(apps.api_client, previous)
    template["metadata"]["labels"].pop("pod-template-hash")
    apps.patch_namespaced_deployment(
        "undo", ns, [{"op": "replace", "path": "/spec/template", "value": template}]
    )

    d = wait_for(lambda: rolled_out(apps, ns, "undo"), what="rollback rollout")
    assert d.spec.template.spec.containers[0].image == "registry.local/web-app:1.0.0"
    assert revision(d) == "3"
    sets = replica_sets(apps, ns, "undo")
    assert len(sets) == 2, "the old ReplicaSet is reused, not duplicated"
    reused = next(rs for rs in sets if rs.metadata.uid == previous.metadata.uid)
    assert revision(reused) == "3" and reused.spec.replicas == 2
    assert reused.metadata.annotations["deployment.kubernetes.io/revision-history"] == "1"
    images = {p.spec.containers[0].image for p in pods(core, ns, "undo")}
    assert images == {"registry.local/web-app:1.0.0"}


def test_undo_after_a_failed_rollout_with_a_strategic_merge_patch(
    apps: client.AppsV1Api, ns: str
) -> None:
    deploy(apps, ns, "rescue", progress_deadline_seconds=30)
    set_image(apps, ns, "rescue", "registry.local/web-app:3.0.0-crashloop")
    wait_for(lambda: revision(apps.read_namespaced_deployment("rescue", ns)) == "2")

    (good,) = [rs for rs in replica_sets(apps, ns, "rescue") if revision(rs) == "1"]
    apps.patch_namespaced_deployment(
        "rescue", ns, {"spec": {"template": api_template(apps.api_client, good)}}
    )

    d = wait_for(lambda: rolled_out(apps, ns, "rescue"), what="rollout back to revision 1")
    assert revision(d) == "3"
    assert d.spec.template.spec.containers[0].image == "registry.local/web-app:1.0.0"
    broken = next(
        rs for rs in replica_sets(apps, ns, "rescue") if rs.metadata.uid != good.metadata.uid
    )
    assert broken.spec.replicas == 0


def api_template(api: client.ApiClient, rs: client.V1ReplicaSet) -> dict[str, Any]:
    template: dict[str, Any] = api.sanitize_for_serialization(rs.spec.template)
    return template


def test_restart_with_restarted_at_annotation_makes_a_new_replicaset(
    apps: client.AppsV1Api, core: client.CoreV1Api, ns: str
) -> None:
    deploy(apps, ns, "restart")
    old_pods = {p.metadata.name for p in pods(core, ns, "restart")}
    stamp = "2025-01-01T00:00:00Z"
    apps.patch_namespaced_deployment(
        "restart",
        ns,
        {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}
                }
            }
        },
    )

    d = wait_for(lambda: rolled_out(apps, ns, "restart"), what="restart rollout")
    assert revision(d) == "2"
    assert len(replica_sets(apps, ns, "restart")) == 2
    current = wait_for(lambda: len(pods(core, ns, "restart")) == 2 and pods(core, ns, "restart"))
    assert not old_pods & {p.metadata.name for p in current}
    assert all(
        p.metadata.annotations["kubectl.kubernetes.io/restartedAt"] == stamp for p in current
    )


def test_scale_subresource_drives_the_pod_count(
    apps: client.AppsV1Api, core: client.CoreV1Api, ns: str
) -> None:
    deploy(apps, ns, "scaled")
    scale = apps.read_namespaced_deployment_scale("scaled", ns)
    assert isinstance(scale, client.V1Scale)
    assert (
        scale.spec.replicas == 2
        and scale.status.replicas == 2
        and scale.status.selector == "app=scaled"
    )

    apps.patch_namespaced_deployment_scale("scaled", ns, {"spec": {"replicas": 4}})
    d = wait_for(lambda: rolled_out(apps, ns, "scaled"), what="scale up")
    assert d.spec.replicas == 4 and revision(d) == "1"
    assert len(pods(core, ns, "scaled")) == 4

    scale = apps.read_namespaced_deployment_scale("scaled", ns)
    scale.spec.replicas = 1
    apps.replace_namespaced_deployment_scale("scaled", ns, scale)
    wait_for(lambda: len(pods(core, ns, "scaled")) == 1, what="scale down to 1 pod")
    assert apps.read_namespaced_deployment_status("scaled", ns).status.replicas == 1


def test_deleted_pod_is_replaced(apps: client.AppsV1Api, core: client.CoreV1Api, ns: str) -> None:
    deploy(apps, ns, "heal")
    victim = pods(core, ns, "heal")[0].metadata.name
    deleted = core.delete_namespaced_pod(victim, ns)
    assert deleted.metadata.name == victim

    def healed() -> bool:
        names = {
            p.metadata.name for p in pods(core, ns, "heal") if p.status.container_statuses[0].ready
        }
        return len(names) == 2 and victim not in names

    wait_for(healed, what="a replacement pod")


# -- API semantics ----------------------------------------------------------------------------


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
