"""The control loops advanced by a fake clock: deterministic, no HTTP, no threads."""

from __future__ import annotations

import copy
from typing import Any

from devstack.kubesim import FakeClock, SimConfig, Simulator
from devstack.kubesim.kinds import DEPLOYMENTS, PODS, REPLICASETS
from devstack.kubesim.registry import Registry
from devstack.kubesim.seed import web_app_deployment

CONFIG = SimConfig(
    pod_start_seconds=1.0, crashloop_restart_seconds=1.0, image_pull_backoff_seconds=1.0
)
NS = "staging"


def simulator(rng_seed: int = 7) -> tuple[Simulator, FakeClock]:
    clock = FakeClock()
    return Simulator(clock=clock, config=CONFIG, rng_seed=rng_seed), clock


def deployment(sim: Simulator, name: str = "web-app") -> dict[str, Any]:
    return sim.call(lambda reg: reg.get(DEPLOYMENTS, NS, name))


def replicasets(sim: Simulator) -> dict[str, dict[str, Any]]:
    listed = sim.call(lambda reg: reg.list(REPLICASETS, NS, label_selector="app=web-app"))
    return {
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs
        for rs in listed["items"]
    }


def pods(sim: Simulator) -> list[dict[str, Any]]:
    return list(sim.call(lambda reg: reg.list(PODS, NS, label_selector="app=web-app"))["items"])


def set_image(sim: Simulator, image: str, name: str = "web-app") -> dict[str, Any]:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}}
    return sim.call(
        lambda reg: reg.patch(
            DEPLOYMENTS, NS, name, "application/strategic-merge-patch+json", patch
        )
    )


def reason(d: dict[str, Any], kind: str = "Progressing") -> str:
    return next(c["reason"] for c in d["status"]["conditions"] if c["type"] == kind)


def test_seed_is_fully_rolled_out_at_start() -> None:
    sim, _ = simulator()
    d = deployment(sim)
    assert d["status"]["updatedReplicas"] == d["status"]["availableReplicas"] == 2
    assert d["status"]["observedGeneration"] == d["metadata"]["generation"] == 1
    assert reason(d) == "NewReplicaSetAvailable"
    assert set(replicasets(sim)) == {"1"}
    assert all(p["status"]["phase"] == "Running" for p in pods(sim))


def test_rollout_moves_exactly_when_pods_become_ready() -> None:
    sim, clock = simulator()
    assert set_image(sim, "registry.local/web-app:1.1.0")["metadata"]["generation"] == 2

    d = deployment(sim)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert d["status"]["observedGeneration"] == 2
    assert (d["status"]["replicas"], d["status"]["updatedReplicas"]) == (3, 1)
    assert reason(d) == "ReplicaSetUpdated"

    clock.advance(0.999)
    assert deployment(sim)["status"]["replicas"] == 3, "nothing is ready before pod_start_seconds"
    clock.advance(0.001)
    # The first new pod is ready: one old pod goes, the second new pod is created.
    d = deployment(sim)
    assert (
        d["status"]["replicas"],
        d["status"]["updatedReplicas"],
        d["status"]["availableReplicas"],
    ) == (3, 2, 2)
    clock.advance(1.0)
    d = deployment(sim)
    assert (
        d["status"]["replicas"],
        d["status"]["updatedReplicas"],
        d["status"]["availableReplicas"],
    ) == (2, 2, 2)
    assert reason(d) == "NewReplicaSetAvailable"
    sets = replicasets(sim)
    assert sets["1"]["spec"]["replicas"] == 0 and sets["2"]["spec"]["replicas"] == 2


def test_outcome_does_not_depend_on_how_often_time_is_observed() -> None:
    def run(steps: int) -> list[dict[str, Any]]:
        sim, clock = simulator(rng_seed=3)
        set_image(sim, "registry.local/web-app:1.1.0")
        for _ in range(steps):
            clock.advance(5.0 / steps)
            sim.sync()
        return [deployment(sim), *pods(sim), *replicasets(sim).values()]

    coarse, fine = run(1), run(100)
    for a, b in zip(coarse, fine, strict=True):
        a, b = copy.deepcopy(a), copy.deepcopy(b)
        a["metadata"].pop("resourceVersion")
        b["metadata"].pop("resourceVersion")
        assert a == b


def test_crashloop_stalls_until_the_progress_deadline_then_undo_recovers() -> None:
    sim, clock = simulator()
    patch = {"spec": {"progressDeadlineSeconds": 5}}
    sim.call(
        lambda reg: reg.patch(DEPLOYMENTS, NS, "web-app", "application/merge-patch+json", patch)
    )
    clock.advance(1)
    set_image(sim, "registry.local/web-app:2.0.0-crashloop")

    clock.advance(4.9)
    d = deployment(sim)
    assert reason(d) == "ReplicaSetUpdated"
    crashing = [p for p in pods(sim) if p["spec"]["containers"][0]["image"].endswith("crashloop")]
    (status,) = crashing[0]["status"]["containerStatuses"]
    assert (
        status["state"]["waiting"]["reason"] == "CrashLoopBackOff" and status["restartCount"] == 4
    )
    clock.advance(0.1)
    d = deployment(sim)
    progressing = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert d["status"]["availableReplicas"] == 2, "old pods keep serving"

    # Undo: copy revision 1's template back (what `kubectl rollout undo` does).
    good = replicasets(sim)["1"]
    template = copy.deepcopy(good["spec"]["template"])
    template["metadata"]["labels"].pop("pod-template-hash")
    ops = [{"op": "replace", "path": "/spec/template", "value": template}]
    sim.call(lambda reg: reg.patch(DEPLOYMENTS, NS, "web-app", "application/json-patch+json", ops))
    d = deployment(sim)
    assert reason(d) == "NewReplicaSetAvailable", "the old pods were ready all along"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    sets = replicasets(sim)
    assert set(sets) == {"2", "3"}
    assert sets["3"]["metadata"]["uid"] == good["metadata"]["uid"]
    assert sets["3"]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert sets["2"]["spec"]["replicas"] == 0


def test_deleted_pods_are_replaced_and_the_history_is_capped() -> None:
    sim, clock = simulator()
    sim.call(
        lambda reg: reg.patch(
            DEPLOYMENTS,
            NS,
            "web-app",
            "application/merge-patch+json",
            {"spec": {"revisionHistoryLimit": 1}},
        )
    )
    for version in ("1.1", "1.2", "1.3"):
        set_image(sim, f"registry.local/web-app:{version}")
        clock.advance(3)
    assert set(replicasets(sim)) == {"3", "4"}, "one old ReplicaSet kept beside the current one"

    victim = pods(sim)[0]["metadata"]["name"]
    sim.call(lambda reg: reg.delete(PODS, NS, victim))
    names = {p["metadata"]["name"] for p in pods(sim)}
    assert len(names) == 2 and victim not in names


def test_recreate_strategy_and_pause() -> None:
    sim, clock = simulator()
    manifest = web_app_deployment(name="batch")
    manifest["spec"]["strategy"] = {"type": "Recreate"}
    sim.call(lambda reg: reg.create(DEPLOYMENTS, NS, manifest))
    clock.advance(1)
    set_image(sim, "registry.local/web-app:2", name="batch")
    d = deployment(sim, "batch")
    assert d["status"]["updatedReplicas"] == 2 and "availableReplicas" not in d["status"]

    paused = {"spec": {"paused": True}}
    sim.call(
        lambda reg: reg.patch(DEPLOYMENTS, NS, "batch", "application/merge-patch+json", paused)
    )
    set_image(sim, "registry.local/web-app:3", name="batch")
    clock.advance(5)
    d = deployment(sim, "batch")
    assert reason(d) == "DeploymentPaused"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


def test_deleting_a_deployment_collects_its_replicasets_and_pods() -> None:
    sim, _ = simulator()
    sim.call(lambda reg: reg.delete(DEPLOYMENTS, NS, "web-app"))
    assert replicasets(sim) == {} and pods(sim) == []
    assert sim.call(lambda reg: reg.list(DEPLOYMENTS, "production"))["items"], (
        "other namespaces stay"
    )


def test_registry_is_usable_without_a_clock() -> None:
    sim, _ = simulator()
    assert isinstance(sim.registry, Registry)
    sim.reset()
    assert set(replicasets(sim)) == {"1"}
