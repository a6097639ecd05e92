"""The simulator's controllers: seed, rollouts, failing images, undo, restart, scale, healing."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.kubesim_support import (
    condition,
    deploy,
    manifest,
    pods,
    replica_sets,
    revision,
    rolled_out,
    set_image,
    wait_for,
)

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
