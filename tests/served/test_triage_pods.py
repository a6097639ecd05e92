"""The one-pod-down and traffic-spike triage runbooks started as the incident flow and the UI
start them (REST ``create_flow_run``), on staging, against real faults:

* one pod taken down in the simulator (OOMKilled, crash looping) while the others serve: the
  runbook records its termination reason, deletes it, its ReplicaSet starts a clean one, the
  incident is mitigated;
* the same with the Ready pods over the CPU threshold (the app's traffic level spread over
  fewer pods): the runbook scales out first, then replaces the pod;
* a pod name that does not exist: a clear error naming it, nothing changed;
* a traffic spike (the app's traffic level: each pod at 95% CPU with a backlog): scaled up
  within max_replicas, available, CPU and queue verified, per-pod request rates balanced;
* already at max_replicas: no change, engineering paged with a recommendation;
* bad replica counts: refused naming the value, nothing changed;
* the scale-back check: keeps the replicas while the load is high, scales back to the
  recorded baseline once it has been normal for the calm window.

Alertmanager is silenced for staging during each case (the real alert chain would start the
same runbooks through the incident flow), and every case puts the replica count back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from blocks.kube import KubeEnvironment
from devstack.stack import StackInfo
from tests.incident_support import incident, sink_messages, timeline, wait_for
from tests.served_support import (
    SERVE_ONLY,
    RunPath,
    assert_completed,
    describe,
    kube_deployment,
    load_block,
)
from tests.support import oplog_row
from tests.triage_support import artifacts_of, checklist_of, open_incident, resolve, silenced

ENV = "staging"
POD_KEY = f"triage-one-pod-down-{ENV}"
SPIKE_KEY = f"triage-traffic-spike-{ENV}"
ONE_POD_DOWN = "one-pod-down/one-pod-down"
TRAFFIC_SPIKE = "traffic-spike/traffic-spike"
SCALE_BACK = "traffic-spike/scale-back"
LOAD_ALERTS = ("OnePodDown", "PodCpuHigh", "RequestQueueHigh")


def kube_url(stack: StackInfo, path: str) -> str:
    block = load_block(KubeEnvironment, ENV)
    if path.startswith("pods"):
        return f"{stack.kube_url}/api/v1/namespaces/{block.namespace}/{path}"
    return f"{stack.kube_url}/apis/apps/v1/namespaces/{block.namespace}/deployments/{path}"


def pods(stack: StackInfo) -> dict[str, bool]:
    """Pod name -> Ready, of staging's Deployment."""
    items = httpx.get(kube_url(stack, "pods"), params={"labelSelector": "app=web-app"}, timeout=10)
    return {
        p["metadata"]["name"]: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
        for p in items.json()["items"]
    }


def replicas(stack: StackInfo) -> int:
    return int(kube_deployment(stack, ENV)["spec"]["replicas"])


def set_replicas(stack: StackInfo, count: int) -> None:
    """Scale staging (the scale subresource) and wait until every pod is Ready."""
    headers = {"Content-Type": "application/merge-patch+json"}
    body = {"spec": {"replicas": count}}
    httpx.patch(kube_url(stack, "web-app/scale"), json=body, headers=headers, timeout=10)
    wait_for(
        lambda: (now := pods(stack)) and len(now) == count and all(now.values()),
        60,
        f"staging did not settle at {count} Ready pods",
    )
    # the app follows the Ready pods within its poll interval
    wait_for(lambda: app_traffic(stack)["ready_pods"] == count, 30, "the app did not follow")


def app_traffic(stack: StackInfo) -> Any:
    return httpx.get(stack.app_url(ENV) + "/_sim/traffic", timeout=10).json()


def prom(stack: StackInfo, promql: str) -> dict[str, float]:
    resp = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
    out: dict[str, float] = {}
    for series in resp.json()["data"]["result"]:
        out[series["metric"].get("pod", "")] = float(series["value"][1])
    return out


def ready_cpu_over(stack: StackInfo, threshold: float) -> bool:
    cpu = prom(stack, f'sampleapp_cpu_utilization_ratio{{job="web-app", env="{ENV}"}}')
    ready = {n for n, ok in pods(stack).items() if ok}
    seen = [v for n, v in cpu.items() if n in ready]
    return bool(seen) and len(seen) == len(ready) and min(seen) > threshold


def firing(stack: StackInfo) -> list[str]:
    alerts = httpx.get(f"{stack.prometheus_url}/api/v1/alerts", timeout=10).json()
    return [
        a["labels"]["alertname"]
        for a in alerts["data"]["alerts"]
        if a["labels"].get("environment") == ENV and a["labels"]["alertname"] in LOAD_ALERTS
    ]


@contextmanager
def staging_case(stack: StackInfo, count: int) -> Iterator[None]:
    """Silenced staging at ``count`` replicas; afterwards the traffic level cleared, the
    replica count it had put back and the load alerts quiet before the silence ends."""
    before = replicas(stack)
    with silenced(stack, ENV):
        set_replicas(stack, count)
        try:
            yield
        finally:
            httpx.delete(stack.app_url(ENV) + "/_sim/traffic", timeout=10)
            set_replicas(stack, before)
            wait_for(lambda: not firing(stack), 90, "the load alerts did not resolve")


@contextmanager
def traffic(stack: StackInfo, level: float) -> Iterator[None]:
    app = stack.app_url(ENV)
    httpx.post(app + "/_sim/traffic", json={"level": level}, timeout=10).raise_for_status()
    try:
        yield
    finally:
        httpx.delete(app + "/_sim/traffic", timeout=10).raise_for_status()


def take_down(stack: StackInfo, reason: str = "OOMKilled") -> str:
    """Take one Ready pod of staging down in the simulator; its name once it is not Ready."""
    block = load_block(KubeEnvironment, ENV)
    victim = sorted(pods(stack))[0]
    body = {"namespace": block.namespace, "pod": victim, "reason": reason}
    httpx.post(f"{stack.kube_url}/_sim/pods", json=body, timeout=10).raise_for_status()
    wait_for(lambda: not pods(stack).get(victim, True), 30, f"{victim} did not go down")
    wait_for(lambda: app_traffic(stack)["ready_pods"] == len(pods(stack)) - 1, 30, "app")
    return victim


def test_one_pod_down_is_replaced_and_its_termination_recorded(runpath: RunPath) -> None:
    """One of three pods crash-loops (OOMKilled) while the others serve: the runbook records
    the reason, deletes the pod, its ReplicaSet starts a clean one, every pod is Ready again,
    CPU verified, the incident mitigated and the op log names the pod replaced."""
    stack, api = runpath.stack, runpath.api
    opened = open_incident(
        stack, ENV, uuid.uuid4().hex[:10], "OnePodDown", "P3", runbook="one-pod-down"
    )
    try:
        with staging_case(stack, 3):
            victim = take_down(stack)
            run = api.finish(
                ONE_POD_DOWN,
                environment=ENV,
                incident_id=opened.id,
                repeat_window_h=0.0005,  # 2 s: earlier cases' replacements do not count
                verify_seconds=5,
            )
            assert_completed(run, runpath.log)
            after = pods(stack)
            assert victim not in after and len(after) == 3 and all(after.values()), after
            assert replicas(stack) == 3
        row = oplog_row(stack, run["id"])
        assert (row["operation"], row["status"]) == ("one-pod-down", "succeeded")
        assert row["details"]["decision"]["action"] == "restart"
        assert row["details"]["replaced"] == [victim]
        assert victim in row["impact"]
        items = checklist_of(runpath, run["id"], POD_KEY)
        termination = items[f"last termination of {victim}"]
        assert termination["result"] == "pass"
        assert "OOMKilled (exit 137)" in termination["evidence"]
        assert "out of memory" in termination["evidence"]
        assert items["all pods Running and Ready"]["result"] == "fail"
        assert items["service still serves"]["result"] == "pass"
        assert items["restart"]["result"] == "pass"
        assert items["every pod Ready"]["result"] == "pass"
        assert items["pods under 80% CPU"]["result"] == "pass"
        now = incident(stack, opened.id)
        assert (now.status, now.mitigated_by) == ("mitigated", "one-pod-down")
        notes = [e.text for e in timeline(stack, opened.id) if e.kind == "runbook"]
        assert any("decided restart" in n for n in notes), notes
    finally:
        resolve(stack, opened.id)


@SERVE_ONLY
def test_one_pod_down_scales_out_when_the_others_are_overloaded(runpath: RunPath) -> None:
    """Traffic for 1.7 pods' CPU on three pods; one goes down and the two left run at 85%,
    over the 80% threshold: the runbook scales out to four, replaces the pod and verifies
    the pods' CPU back under the threshold; the op log keeps the baseline of 3."""
    stack, api = runpath.stack, runpath.api
    with staging_case(stack, 3), traffic(stack, 1.7):
        victim = take_down(stack, reason="Error")
        wait_for(lambda: ready_cpu_over(stack, 0.8), 30, "Prometheus did not see the load")
        run = api.finish(
            ONE_POD_DOWN, environment=ENV, pod=victim, repeat_window_h=0.0005, verify_seconds=5
        )
        assert_completed(run, runpath.log)
        after = pods(stack)
        assert victim not in after and len(after) == 4 and all(after.values()), after
    row = oplog_row(stack, run["id"])
    assert row["details"]["decision"]["action"] == "scale-out", row["details"]
    assert (row["details"]["baseline_replicas"], row["details"]["to"]) == (3, 4)
    items = checklist_of(runpath, run["id"], POD_KEY)
    assert items["Ready pods under 80% CPU"]["result"] == "fail"
    assert "Error (exit 1)" in items[f"last termination of {victim}"]["evidence"]
    assert items["scale-out"]["result"] == "pass"
    assert items["pods under 80% CPU"]["result"] == "pass"


@SERVE_ONLY
def test_one_pod_down_refuses_a_pod_that_does_not_exist(runpath: RunPath) -> None:
    """A pod name that is not a pod of staging: the run fails naming it; nothing changed."""
    stack, api = runpath.stack, runpath.api
    before, count = pods(stack), replicas(stack)
    ghost = f"web-app-ghost-{uuid.uuid4().hex[:5]}"
    run = api.finish(ONE_POD_DOWN, environment=ENV, pod=ghost)
    assert run["state"]["type"] == "FAILED", describe(run)
    assert ghost in (run["state"]["message"] or ""), describe(run)
    row = oplog_row(stack, run["id"])
    assert row["status"] == "failed" and row["impact"] == "no change"
    assert pods(stack) == before and replicas(stack) == count
    assert not artifacts_of(runpath, run["id"], POD_KEY)


def test_traffic_spike_scales_up_within_max_and_the_load_is_balanced(runpath: RunPath) -> None:
    """Traffic for 1.9 pods' CPU on two pods (95% each, a backlog over 1000): the runbook
    scales to four (1.9 CPU at 60% per pod), waits until available, and verifies CPU and
    queue under their thresholds and every pod's request rate within ±50% of the mean."""
    stack, api = runpath.stack, runpath.api
    opened = open_incident(
        stack, ENV, uuid.uuid4().hex[:10], "PodCpuHigh", "P2", runbook="traffic-spike"
    )
    try:
        with staging_case(stack, 2), traffic(stack, 1.9):
            wait_for(lambda: ready_cpu_over(stack, 0.9), 30, "Prometheus did not see the load")
            run = api.finish(
                TRAFFIC_SPIKE,
                environment=ENV,
                incident_id=opened.id,
                max_replicas=6,
                verify_seconds=8,
            )
            assert_completed(run, runpath.log)
            assert replicas(stack) == 4 and all(pods(stack).values())
            assert app_traffic(stack)["cpu_per_pod"] < 0.8
        row = oplog_row(stack, run["id"])
        assert (row["operation"], row["status"]) == ("traffic-spike", "succeeded")
        details = row["details"]
        assert (details["mode"], details["baseline_replicas"], details["to"]) == ("scale-up", 2, 4)
        items = checklist_of(runpath, run["id"], SPIKE_KEY)
        assert items["pods under 80% CPU"]["result"] == "pass"  # the last check: after
        assert items["request queue under 1000"]["result"] == "pass"
        assert items["scale up"]["result"] == "pass"
        assert items["replicas available"]["result"] == "pass"
        assert items["load balanced"]["result"] == "pass", items["load balanced"]
        assert items["health verified"]["result"] == "pass"
        assert incident(stack, opened.id).status == "mitigated"
        notes = [e.text for e in timeline(stack, opened.id) if e.kind == "runbook"]
        assert any("decided scale" in n and "95%" in n for n in notes), notes
    finally:
        resolve(stack, opened.id)


@SERVE_ONLY
def test_traffic_spike_at_max_replicas_changes_nothing_and_escalates(runpath: RunPath) -> None:
    """The same spike with max_replicas 2: no scale, the lead is paged with a
    recommendation, the run fails, the incident stays unmitigated."""
    stack, api = runpath.stack, runpath.api
    opened = open_incident(
        stack, ENV, uuid.uuid4().hex[:10], "RequestQueueHigh", "P2", runbook="traffic-spike"
    )
    try:
        with staging_case(stack, 2), traffic(stack, 1.9):
            wait_for(lambda: ready_cpu_over(stack, 0.9), 30, "Prometheus did not see the load")
            generation = kube_deployment(stack, ENV)["metadata"]["generation"]
            run = api.finish(TRAFFIC_SPIKE, environment=ENV, incident_id=opened.id, max_replicas=2)
            assert run["state"]["type"] == "FAILED", describe(run)
            assert "max_replicas" in (run["state"]["message"] or ""), describe(run)
            assert replicas(stack) == 2
            assert kube_deployment(stack, ENV)["metadata"]["generation"] == generation
        row = oplog_row(stack, run["id"])
        assert row["status"] == "failed" and row["impact"] == "no change"
        assert row["details"]["escalated"]["level"] == "lead"
        assert "raise max_replicas" in row["follow_up"], row["follow_up"]
        items = checklist_of(runpath, run["id"], SPIKE_KEY)
        assert items["room to scale"]["result"] == "fail"
        assert items["pods under 80% CPU"]["result"] == "fail"
        after = incident(stack, opened.id)
        assert after.status == "triggered" and after.mitigated_at is None
        pages = wait_for(
            lambda: sink_messages(stack, "page-lead", f"incident {opened.id}"), 30, "no page"
        )
        assert "ESCALATED by traffic-spike" in str(pages[-1])
        assert "raise max_replicas" in str(pages[-1])
    finally:
        resolve(stack, opened.id)


@SERVE_ONLY
def test_traffic_spike_refuses_bad_replica_counts(runpath: RunPath) -> None:
    """Negative or zero replicas or max_replicas, or a count above the policy maximum: the
    run fails naming the value; nothing changed."""
    stack, api = runpath.stack, runpath.api
    generation = kube_deployment(stack, ENV)["metadata"]["generation"]
    for params, named in (
        ({"replicas": -1}, "-1"),
        ({"max_replicas": 0}, "max_replicas must be a whole number >= 1, got 0"),
        ({"replicas": 99}, "99 replicas is above the policy maximum"),
    ):
        run = api.finish(TRAFFIC_SPIKE, environment=ENV, **params)
        assert run["state"]["type"] == "FAILED", describe(run)
        assert named in (run["state"]["message"] or ""), describe(run)
        row = oplog_row(stack, run["id"])
        assert row["status"] == "failed" and row["impact"] == "no change"
    assert kube_deployment(stack, ENV)["metadata"]["generation"] == generation


def test_scale_back_waits_for_calm_then_returns_to_the_baseline(runpath: RunPath) -> None:
    """A spike scales staging from 2 to 4. The scale-back check while the load is still high
    keeps 4; once the traffic is normal for the calm window it scales back to 2 (the
    baseline the scale-up recorded), and a further check changes nothing."""
    stack, api = runpath.stack, runpath.api
    calm = {"environment": ENV, "calm_seconds": 5, "verify_seconds": 2}
    with staging_case(stack, 2):
        with traffic(stack, 1.9):
            wait_for(lambda: ready_cpu_over(stack, 0.9), 30, "Prometheus did not see the load")
            up = api.finish(TRAFFIC_SPIKE, environment=ENV, max_replicas=4, verify_seconds=5)
            assert_completed(up, runpath.log)
            assert replicas(stack) == 4
            httpx.post(
                stack.app_url(ENV) + "/_sim/traffic", json={"level": 3.6}, timeout=10
            ).raise_for_status()  # the spike grows: 90% on each of the four
            wait_for(lambda: ready_cpu_over(stack, 0.8), 30, "Prometheus did not see it grow")
            busy = api.finish(SCALE_BACK, **calm)
            assert_completed(busy, runpath.log)
            assert replicas(stack) == 4
            row = oplog_row(stack, busy["id"])
            assert row["details"]["decision"]["action"] == "none"
            assert "still high" in row["details"]["decision"]["reason"]
            items = checklist_of(runpath, busy["id"], SPIKE_KEY)
            assert items["a scale-up to return from"]["result"] == "pass"
            assert items["CPU under 80% for 5 s"]["result"] == "fail"
        time.sleep(7)  # the calm window: 5 s of scrapes without the spike
        back = api.finish(SCALE_BACK, **calm)
        assert_completed(back, runpath.log)
        assert replicas(stack) == 2 and all(pods(stack).values())
        row = oplog_row(stack, back["id"])
        details = row["details"]
        assert (details["mode"], details["baseline_replicas"], details["to"]) == (
            "scale-back",
            2,
            2,
        )
        assert row["impact"] == "staging: 4 -> 2 replicas"
        items = checklist_of(runpath, back["id"], SPIKE_KEY)
        assert items["CPU under 80% for 5 s"]["result"] == "pass"
        assert items["scale back"]["result"] == "pass"
        again = api.finish(SCALE_BACK, **calm)
        assert_completed(again, runpath.log)
        assert oplog_row(stack, again["id"])["details"]["decision"]["action"] == "none"
        assert replicas(stack) == 2
