"""The control loops: deployment controller, replicaset controller, kubelet and GC.

``advance(store, config, now)`` brings the cluster from ``store.time`` to ``now``.  It jumps
from one interesting moment to the next (a pod becoming ready, a progress deadline passing)
and runs every loop to a fixed point at each, so the outcome depends only on the inputs and
not on how often it is called.  That makes lazy evaluation on each request, a background
ticker, and a unit test with a fake clock all see the same cluster.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from devstack.kubesim.pods import PodRuntime, build_pod, pod_status, ready_at
from devstack.kubesim.rollout import (
    FOUND_NEW_RS,
    NEW_RS_AVAILABLE,
    NEW_RS_CREATED,
    PROGRESSING,
    TIMED_OUT,
    ReplicaSetView,
    RolloutFacts,
    fenceposts,
    find_condition,
    next_conditions,
    plan_recreate,
    plan_rolling_update,
    set_condition,
)
from devstack.kubesim.store import Store
from devstack.kubesim.workloads import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    REVISION,
    REVISION_HISTORY,
    build_replicaset,
    cached_template_key,
    controller_uid,
    is_owned_by,
    revision_of,
)

_MAX_PASSES = 200
_MAX_EVENTS = 100_000


@dataclass(frozen=True)
class SimConfig:
    """How fast the simulated kubelet works (all in seconds)."""

    pod_start_seconds: float = 1.0
    crashloop_restart_seconds: float = 1.0
    image_pull_backoff_seconds: float = 1.0


def _available(
    runtime: PodRuntime | None, pod: dict[str, Any], min_ready: int, t: float
) -> tuple[bool, bool]:
    """``(ready, available)`` for a pod at ``t``."""
    if runtime is None:
        return False, False
    when = ready_at(pod.get("spec") or {}, runtime)
    if when is None or t < when or runtime.is_down(t):
        return False, False
    return True, t >= when + min_ready


def sync_pods(store: Store, t: float) -> None:
    """The kubelet: refresh every pod's status for time ``t``."""
    for pod in store.list("pods"):
        runtime = store.pods.get(pod["metadata"]["uid"])
        if runtime is None:
            continue
        status = pod_status(pod, runtime, t)
        if status != pod.get("status"):
            store.save("pods", {**pod, "status": status})


def sync_replicaset(store: Store, config: SimConfig, rs: dict[str, Any], t: float) -> None:
    """The replicaset controller: make the pod count match ``spec.replicas``."""
    meta, spec = rs["metadata"], rs["spec"]
    uid, namespace = meta["uid"], meta["namespace"]
    pods = [p for p in store.list("pods", namespace) if is_owned_by(p, uid)]
    want = int(spec.get("replicas", 0))
    min_ready = int(spec.get("minReadySeconds", 0))
    for _ in range(want - len(pods)):
        name = f"{meta['name']}-{store.random_suffix()}"
        while store.get("pods", namespace, name) is not None:
            name = f"{meta['name']}-{store.random_suffix()}"
        pod = build_pod(rs, name)
        store.stamp_new(pod, generation=False)
        runtime = PodRuntime(
            created=t,
            start_at=t + config.pod_start_seconds,
            crashloop_restart_seconds=config.crashloop_restart_seconds,
            image_pull_backoff_seconds=config.image_pull_backoff_seconds,
            pod_ip=store.next_pod_ip(),
        )
        store.pods[pod["metadata"]["uid"]] = runtime
        pod["status"] = pod_status(pod, runtime, t)
        pods.append(store.save("pods", pod))
    if len(pods) > want:
        # Like the real controller: delete pods that are not ready first, newest first.
        def keep_score(pod: dict[str, Any]) -> tuple[bool, float]:
            runtime = store.pods.get(pod["metadata"]["uid"])
            ready, _ = _available(runtime, pod, 0, t)
            return ready, -(runtime.created if runtime else 0.0)

        for pod in sorted(pods, key=keep_score)[: len(pods) - want]:
            store.remove("pods", namespace, pod["metadata"]["name"])
            pods.remove(pod)
    flags = [_available(store.pods.get(p["metadata"]["uid"]), p, min_ready, t) for p in pods]
    status: dict[str, Any] = {
        "replicas": len(pods),
        "fullyLabeledReplicas": len(pods),
        "readyReplicas": sum(1 for ready, _ in flags if ready),
        "availableReplicas": sum(1 for _, available in flags if available),
        "observedGeneration": meta.get("generation", 1),
    }
    status = {k: v for k, v in status.items() if v or k == "replicas"}
    if status != rs.get("status"):
        store.save("replicasets", {**rs, "status": status})


def _view(rs: dict[str, Any]) -> ReplicaSetView:
    status = rs.get("status") or {}
    return ReplicaSetView(
        name=rs["metadata"]["name"],
        replicas=int(rs["spec"].get("replicas", 0)),
        available=int(status.get("availableReplicas", 0)),
        pods=int(status.get("replicas", 0)),
    )


def _scale(store: Store, rs: dict[str, Any], replicas: int, desired: int, max_surge: int) -> None:
    meta, spec = rs["metadata"], rs["spec"]
    annotations = {
        **(meta.get("annotations") or {}),
        DESIRED_REPLICAS: str(desired),
        MAX_REPLICAS: str(desired + max_surge),
    }
    if spec.get("replicas") == replicas and annotations == meta.get("annotations"):
        return
    meta = {**meta, "annotations": annotations}
    if spec.get("replicas") != replicas:
        spec = {**spec, "replicas": replicas}
        meta["generation"] = meta.get("generation", 1) + 1
    store.save("replicasets", {**rs, "metadata": meta, "spec": spec})


def _new_replicaset(
    store: Store, d: dict[str, Any], owned: list[dict[str, Any]], t: float
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str | None]:
    """Find (or create) the ReplicaSet for the current template; returns (new, olds, event)."""
    wanted = cached_template_key(d["spec"]["template"])
    new = next((rs for rs in owned if cached_template_key(rs["spec"]["template"]) == wanted), None)
    olds = [rs for rs in owned if rs is not new]
    max_old = max((revision_of(rs) for rs in olds), default=0)
    if new is None:
        if d["spec"].get("paused"):
            return None, olds, None
        created = build_replicaset(d, max_old + 1)
        if store.get("replicasets", created["metadata"]["namespace"], created["metadata"]["name"]):
            created["metadata"]["name"] += f"-{store.random_suffix()}"  # hash collision
        store.stamp_new(created, generation=True)
        return store.save("replicasets", created), olds, NEW_RS_CREATED
    if revision_of(new) <= max_old:
        # Rolling back to an old template: the old ReplicaSet gets the next revision number.
        reused = copy.deepcopy(new)
        annotations = reused["metadata"].setdefault("annotations", {})
        history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
        annotations[REVISION_HISTORY] = ",".join([*history, str(revision_of(new))])
        annotations[REVISION] = str(max_old + 1)
        new = store.save("replicasets", reused)
    return new, olds, FOUND_NEW_RS


def _cleanup_history(store: Store, olds: list[dict[str, Any]], limit: int) -> None:
    drained = [
        rs
        for rs in olds
        if not rs["spec"].get("replicas") and not (rs.get("status") or {}).get("replicas")
    ]
    drained.sort(key=revision_of)
    for rs in drained[: max(len(drained) - limit, 0)]:
        store.remove("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])


def sync_deployment(store: Store, d: dict[str, Any], t: float) -> None:
    """The deployment controller, one pass for one Deployment at time ``t``."""
    meta, spec = dict(d["metadata"]), d["spec"]
    uid = meta["uid"]
    owned = [rs for rs in store.list("replicasets", meta["namespace"]) if is_owned_by(rs, uid)]
    owned.sort(key=lambda rs: (rs["metadata"]["creationTimestamp"], revision_of(rs)))
    status: dict[str, Any] = d.get("status") or {}
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    new, olds, event = _new_replicaset(store, d, owned, t)
    desired = int(spec["replicas"])
    max_surge, max_unavailable = fenceposts(spec.get("strategy") or {}, desired)
    progress_at = store.progress.get(uid, t)
    if event == NEW_RS_CREATED and new is not None:
        message = f'Created new replica set "{new["metadata"]["name"]}"'
        conditions = set_condition(conditions, PROGRESSING, "True", NEW_RS_CREATED, message, t)
        progress_at = t
    elif (
        event == FOUND_NEW_RS
        and new is not None
        and find_condition(conditions, PROGRESSING) is None
    ):
        message = f'Found new replica set "{new["metadata"]["name"]}"'
        conditions = set_condition(conditions, PROGRESSING, "True", FOUND_NEW_RS, message, t)
        progress_at = t
    if new is not None:
        meta["annotations"] = {**(meta.get("annotations") or {}), REVISION: str(revision_of(new))}
    by_name = {rs["metadata"]["name"]: rs for rs in [*olds, *([new] if new else [])]}
    if spec.get("paused"):
        targets = {new["metadata"]["name"]: desired} if new is not None else {}
    elif (spec.get("strategy") or {}).get("type") == "Recreate":
        targets = plan_recreate(desired, _view(new) if new else None, [_view(rs) for rs in olds])
    else:
        targets = plan_rolling_update(
            desired,
            max_surge,
            max_unavailable,
            _view(new) if new else None,
            [_view(rs) for rs in olds],
        )
    for name, replicas in targets.items():
        _scale(store, by_name[name], replicas, desired, max_surge)
    _cleanup_history(
        store,
        [store.get("replicasets", meta["namespace"], rs["metadata"]["name"]) or rs for rs in olds],
        int(spec.get("revisionHistoryLimit", 10)),
    )
    current = [rs for rs in (store.get("replicasets", meta["namespace"], n) for n in by_name) if rs]
    new_now = store.get("replicasets", meta["namespace"], new["metadata"]["name"]) if new else None
    counts = {
        "observedGeneration": meta.get("generation", 1),
        "replicas": sum((rs.get("status") or {}).get("replicas", 0) for rs in current),
        "updatedReplicas": (new_now.get("status") or {}).get("replicas", 0) if new_now else 0,
        "readyReplicas": sum((rs.get("status") or {}).get("readyReplicas", 0) for rs in current),
        "availableReplicas": sum(
            (rs.get("status") or {}).get("availableReplicas", 0) for rs in current
        ),
    }
    counts["unavailableReplicas"] = max(desired - counts["availableReplicas"], 0)
    facts = RolloutFacts(
        name=meta["name"],
        new_rs=new["metadata"]["name"] if new else None,
        desired=desired,
        generation=meta.get("generation", 1),
        max_unavailable=max_unavailable,
        paused=bool(spec.get("paused")),
        deadline_seconds=int(spec.get("progressDeadlineSeconds", 600)),
        progress_at=progress_at,
    )
    conditions, progress_at = next_conditions(conditions, facts, status, counts, t)
    store.progress[uid] = progress_at
    new_status = {k: v for k, v in counts.items() if v}
    new_status["conditions"] = conditions
    store.save("deployments", {**d, "metadata": meta, "status": new_status})


def collect_garbage(store: Store) -> None:
    """The garbage collector: dependents whose controlling owner is gone are deleted."""
    for plural, owner_plural in (("replicasets", "deployments"), ("pods", "replicasets")):
        owners = {o["metadata"]["uid"] for o in store.list(owner_plural)}
        for obj in store.list(plural):
            owner = controller_uid(obj)
            if owner is not None and owner not in owners:
                store.remove(plural, obj["metadata"]["namespace"], obj["metadata"]["name"])


def reconcile(store: Store, config: SimConfig, t: float) -> None:
    """Run every control loop at time ``t`` until nothing changes any more."""
    for _ in range(_MAX_PASSES):
        before = store.revision
        collect_garbage(store)
        for d in store.list("deployments"):
            sync_deployment(store, d, t)
        for rs in store.list("replicasets"):
            sync_replicaset(store, config, rs, t)
        sync_pods(store, t)
        if store.revision == before:
            return


def next_event(store: Store, after: float) -> float | None:
    """The earliest moment later than ``after`` at which a control loop would act differently."""
    moments: list[float] = []
    min_ready = {
        rs["metadata"]["uid"]: int(rs["spec"].get("minReadySeconds", 0))
        for rs in store.list("replicasets")
    }
    for pod in store.list("pods"):
        runtime = store.pods.get(pod["metadata"]["uid"])
        when = ready_at(pod.get("spec") or {}, runtime) if runtime else None
        if when is not None:
            moments.append(when)
            moments.append(when + min_ready.get(controller_uid(pod) or "", 0))
        if runtime is not None and runtime.down_at is not None:
            moments.append(runtime.down_at)
    for d in store.list("deployments"):
        spec, conditions = d["spec"], (d.get("status") or {}).get("conditions") or []
        uid = d["metadata"]["uid"]
        if spec.get("paused") or uid not in store.progress:
            continue
        current = find_condition(conditions, PROGRESSING)
        if current and current.get("reason") not in (NEW_RS_AVAILABLE, TIMED_OUT):
            deadline = int(spec.get("progressDeadlineSeconds", 600))
            moments.append(store.progress[uid] + deadline)
    later = [m for m in moments if m > after]
    return min(later) if later else None


def advance(store: Store, config: SimConfig, now: float) -> None:
    """Bring the cluster from ``store.time`` to ``now`` (a clock going backwards is ignored)."""
    for _ in range(_MAX_EVENTS):
        moment = next_event(store, store.time)
        if moment is None or moment > now:
            break
        store.time = moment
        reconcile(store, config, moment)
    store.time = max(store.time, now)
    reconcile(store, config, store.time)
