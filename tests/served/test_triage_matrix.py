"""The service-down triage runbook started as the incident flow and the UI start it (REST
``create_flow_run``), on staging, against real faults:

* a bad release (a crash-looping image shipped by a staged deploy, staging down under the
  Recreate strategy): rolled back to the previous revision, verified, incident mitigated;
* nothing deployed, the serving pods broken (the app's ``down`` fault): restarted, verified;
* a fault neither fixes (the Kubernetes API refuses every change of the Deployment): the
  engineering lead is paged, the incident stays unmitigated, the run fails;
* an unknown environment: a clear error naming it, nothing changed;
* (serve path only) the whole chain: the bad release fires ServiceDown, Alertmanager opens the
  incident, the incident flow starts this runbook, which rolls back and mitigates it.

Alertmanager is silenced for staging while the REST-started cases run, so the real alert
chain (which starts this same runbook through the incident flow) does not race them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from blocks.kube import KubeEnvironment
from devstack.stack import StackInfo
from tests.deploy_support import new_image
from tests.incident_support import (
    group_key,
    incident,
    incidents_of,
    sink_messages,
    timeline,
    wait_for,
)
from tests.outage_support import outage_story, quiet_for_service_down, settled_service_down_rows
from tests.served_support import (
    FAST_DEPLOY,
    SERVE_ONLY,
    RunPath,
    assert_completed,
    describe,
    kube_deployment,
    kube_image,
    load_block,
    served_image,
)
from tests.support import oplog_row
from tests.triage_support import artifacts_of, checklist_of, open_incident, resolve, silenced

DEPLOYMENT = "service-down/service-down"
ENV = "staging"
KEY = f"triage-service-down-{ENV}"
FAST = {"verify_seconds": 5, "lock_timeout_s": 120}


def checklist(runpath: RunPath, run_id: str) -> dict[str, dict[str, str]]:
    """The run's one checklist table artifact, by item."""
    return checklist_of(runpath, run_id, KEY)


def app_faults(stack: StackInfo, env: str) -> Any:
    return httpx.get(stack.app_url(env) + "/_sim/faults", timeout=10).json()


@contextmanager
def app_down(stack: StackInfo, env: str) -> Iterator[None]:
    app = stack.app_url(env)
    httpx.post(app + "/_sim/faults", json={"fault": "down"}, timeout=10).raise_for_status()
    try:
        yield
    finally:
        httpx.delete(app + "/_sim/faults", timeout=10).raise_for_status()


@contextmanager
def recreate_strategy(stack: StackInfo, env: str) -> Iterator[None]:
    """The Recreate strategy for the body: a crash-looping release takes every pod down."""
    block = load_block(KubeEnvironment, env)
    url = f"{stack.kube_url}/apis/apps/v1/namespaces/{block.namespace}/deployments/"
    url += block.deployment
    before = httpx.get(url, timeout=10).json()["spec"].get("strategy") or {"type": "RollingUpdate"}
    headers = {"Content-Type": "application/strategic-merge-patch+json"}

    def patch(strategy: dict[str, Any]) -> None:
        body = {"spec": {"strategy": strategy}}
        httpx.patch(url, json=body, headers=headers, timeout=10).raise_for_status()

    patch({"type": "Recreate", "rollingUpdate": None})
    try:
        yield
    finally:
        patch(before)


def test_service_down_rolls_back_a_bad_release(runpath: RunPath) -> None:
    """A staged deploy ships a crash-looping image; staging is down. The runbook finds the
    deploy in the op log and the rollout history, rolls back to the previous revision,
    verifies health and error rate, and marks the incident mitigated."""
    stack, api = runpath.stack, runpath.api
    good, bad = kube_image(ENV), new_image("-crashloop")
    marker = uuid.uuid4().hex[:10]
    with silenced(stack, ENV), recreate_strategy(stack, ENV):
        deploy = api.finish("staged-deploy/staged-deploy", image=bad, **FAST_DEPLOY)
        assert deploy["state"]["type"] == "FAILED", describe(deploy)
        assert kube_image(ENV) == bad
        down = httpx.get(stack.app_url(ENV) + "/health", timeout=10)
        assert down.status_code == 503, down.text
        opened = open_incident(stack, ENV, marker)
        try:
            run = api.finish(DEPLOYMENT, environment=ENV, incident_id=opened.id, **FAST)
            assert_completed(run, runpath.log)
            assert kube_image(ENV) == good and served_image(stack, ENV) == good
            row = oplog_row(stack, run["id"])
            assert (row["operation"], row["status"]) == ("service-down", "succeeded")
            decision = row["details"]["decision"]
            assert (decision["action"], decision["to_image"]) == ("rollback", good), decision
            assert "rolled back" in row["impact"]
            items = checklist(runpath, run["id"])
            assert items["all pods Running and Ready"]["result"] == "fail"
            assert "CrashLoopBackOff" in items["all pods Running and Ready"]["evidence"]
            assert items["no deploy in the last 6 h"]["result"] == "fail"
            assert bad in items["no deploy in the last 6 h"]["evidence"]
            assert items["database up"]["result"] == "pass"
            assert items["rollback"]["result"] == "pass"
            assert items["health verified"]["result"] == "pass"
            assert items["error rate (probe)"]["result"] == "pass"
            now = incident(stack, opened.id)
            assert (now.status, now.mitigated_by) == ("mitigated", "service-down")
            notes = [e.text for e in timeline(stack, opened.id) if e.kind == "runbook"]
            assert any("decided rollback" in n for n in notes), notes
            assert any(n.startswith("service-down: verified") for n in notes), notes
        finally:
            resolve(stack, opened.id)


@SERVE_ONLY
def test_service_down_restarts_when_nothing_was_deployed(runpath: RunPath) -> None:
    """Every pod Ready but the serving pods broken (the app's ``down`` fault) and no deploy in
    the window: the runbook restarts, the new pods serve, the incident is mitigated."""
    stack, api = runpath.stack, runpath.api
    image = kube_image(ENV)
    opened = open_incident(stack, ENV, uuid.uuid4().hex[:10])
    try:
        with silenced(stack, ENV), app_down(stack, ENV):
            assert app_faults(stack, ENV)["faults"], "the fault did not take"
            run = api.finish(
                DEPLOYMENT,
                environment=ENV,
                incident_id=opened.id,
                deploy_window_h=0.005,  # 18 s: whatever earlier cases shipped is older
                **FAST,
            )
            assert_completed(run, runpath.log)
            assert not app_faults(stack, ENV)["faults"], "the restart did not replace the pods"
        assert kube_image(ENV) == image and served_image(stack, ENV) == image
        row = oplog_row(stack, run["id"])
        assert row["status"] == "succeeded" and row["details"]["decision"]["action"] == "restart"
        items = checklist(runpath, run["id"])
        assert items["all pods Running and Ready"]["result"] == "pass"
        assert items["service health"]["result"] == "fail"
        assert items["restart"]["result"] == "pass"
        assert items["health verified"]["result"] == "pass"
        assert incident(stack, opened.id).status == "mitigated"
    finally:
        resolve(stack, opened.id)


@SERVE_ONLY
def test_service_down_decides_again_under_the_change_slot(runpath: RunPath) -> None:
    """Another change holds staging's slot when the runbook decides to restart; the service
    comes back meanwhile. Under the slot the runbook looks again, finds it healthy and
    changes nothing (no second restart on top of someone else's fix)."""
    from prefect.concurrency.sync import concurrency

    stack, api = runpath.stack, runpath.api
    opened = open_incident(stack, ENV, uuid.uuid4().hex[:10])
    generation = kube_deployment(stack, ENV)["metadata"]["generation"]
    try:
        with silenced(stack, ENV), app_down(stack, ENV):
            with concurrency(f"change-{ENV}", occupy=1, strict=True):
                run_id = api.start(
                    DEPLOYMENT, environment=ENV, incident_id=opened.id, deploy_window_h=0.005
                )

                def decided() -> Any:
                    return [e for e in timeline(stack, opened.id) if "decided restart" in e.text]

                wait_for(decided, 120, f"the runbook decided nothing; {runpath.log}")
                httpx.delete(stack.app_url(ENV) + "/_sim/faults", timeout=10).raise_for_status()
                wait_for(
                    lambda: httpx.get(stack.app_url(ENV) + "/health", timeout=5).is_success,
                    30,
                    "staging did not come back",
                )
            run = api.wait(run_id)
        assert_completed(run, runpath.log)
        assert kube_deployment(stack, ENV)["metadata"]["generation"] == generation
        row = oplog_row(stack, run_id)
        assert row["details"]["decision"]["action"] == "none", row["details"]
        assert row["impact"].startswith("no change")
        assert checklist(runpath, run_id)["recovered before the change"]["result"] == "pass"
        assert incident(stack, opened.id).status == "triggered"
    finally:
        resolve(stack, opened.id)


@SERVE_ONLY
def test_service_down_escalates_when_nothing_helps(runpath: RunPath) -> None:
    """The serving pods are broken and the Kubernetes API refuses every change of the
    Deployment: the restart cannot happen, the lead is paged, the incident stays as it was
    (not mitigated), the run fails saying staging is still down."""
    stack, api = runpath.stack, runpath.api
    block = load_block(KubeEnvironment, ENV)
    image = kube_image(ENV)
    marker = uuid.uuid4().hex[:10]
    opened = open_incident(stack, ENV, marker)
    rule = {
        "status": 503,
        "method": "PATCH",
        "path": f"namespaces/{block.namespace}/deployments/{block.deployment}$",
        "count": None,
    }
    faults = f"{stack.kube_url}/_sim/faults"
    try:
        with silenced(stack, ENV), app_down(stack, ENV):
            httpx.post(faults, json=rule, timeout=10).raise_for_status()
            try:
                run = api.finish(
                    DEPLOYMENT, environment=ENV, incident_id=opened.id, deploy_window_h=0.005
                )
            finally:
                httpx.delete(faults, timeout=10).raise_for_status()
        assert run["state"]["type"] == "FAILED", describe(run)
        assert "still down" in (run["state"]["message"] or ""), describe(run)
        assert kube_image(ENV) == image
        row = oplog_row(stack, run["id"])
        assert row["status"] == "failed" and row["details"]["escalated"]["level"] == "lead"
        items = checklist(runpath, run["id"])
        assert items["restart"]["result"] == "fail"
        after = incident(stack, opened.id)
        assert after.status == "triggered" and after.mitigated_at is None
        kinds = [e.kind for e in timeline(stack, opened.id)]
        assert "paged lead" in kinds and "runbook" in kinds
        pages = wait_for(
            lambda: sink_messages(stack, "page-lead", f"incident {opened.id}"), 30, "no page"
        )
        assert "ESCALATED by service-down" in str(pages[-1])
    finally:
        resolve(stack, opened.id)


@SERVE_ONLY
def test_service_down_refuses_an_unknown_environment(runpath: RunPath) -> None:
    """An environment with no block: the run fails naming it before anything changes."""
    stack, api = runpath.stack, runpath.api
    opened = open_incident(stack, ENV, uuid.uuid4().hex[:10])
    image, events = kube_image(ENV), len(timeline(stack, opened.id))
    nowhere = f"nowhere-{uuid.uuid4().hex[:6]}"
    try:
        run = api.finish(DEPLOYMENT, environment=nowhere, incident_id=opened.id)
        assert run["state"]["type"] == "FAILED", describe(run)
        assert nowhere in (run["state"]["message"] or ""), describe(run)
        row = oplog_row(stack, run["id"])
        assert row["status"] == "failed" and row["impact"] == "no change"
        assert len(timeline(stack, opened.id)) == events
        assert incident(stack, opened.id).status == "triggered"
        assert kube_image(ENV) == image
        assert not artifacts_of(runpath, run["id"], f"triage-service-down-{nowhere}")
    finally:
        resolve(stack, opened.id)


@pytest.mark.parametrize("runpath", ["serve"], indirect=True)
def test_a_real_outage_is_rolled_back_by_the_runbook_the_incident_starts(
    runpath: RunPath, webhook: str
) -> None:
    """No silence, nobody starts the runbook: a crash-looping release takes staging down,
    Prometheus' ServiceDown fires, Alertmanager opens a P1 incident through the receiver, the
    incident flow starts service-down/service-down with the incident's id and environment,
    the runbook rolls back, verifies and marks the incident mitigated; staging answers again
    and Alertmanager's resolution closes the incident. When another alert of the outage
    (HighErrorRate) opened its incident first, that incident's run rolls back, and this one
    changes nothing: one rollback per outage."""
    stack, api = runpath.stack, runpath.api
    key = group_key("ServiceDown", ENV)
    quiet_for_service_down(runpath, ENV)
    good, bad = kube_image(ENV), new_image("-crashloop")
    with recreate_strategy(stack, ENV):
        deploy = api.finish("staged-deploy/staged-deploy", image=bad, **FAST_DEPLOY)
        assert deploy["state"]["type"] == "FAILED", describe(deploy)
        found = wait_for(
            lambda: [i for i in incidents_of(stack, key) if i.is_open], 180, "no incident"
        )[0]
        assert (found.severity, found.runbook, found.environment) == ("P1", "service-down", ENV)

        def triage_run() -> Any:
            runs = incident(stack, found.id).runbook_runs
            return [r for r in runs if r.get("runbook") == "service-down"]

        started = wait_for(triage_run, 120, f"the incident started no runbook; {runpath.log}")
        run = api.wait(started[0]["flow_run_id"], timeout=240)
        assert_completed(run, runpath.log)
        assert run["parameters"]["incident_id"] == found.id
        assert kube_image(ENV) == good and served_image(stack, ENV) == good
        row = oplog_row(stack, run["id"])
        # Every service-down run of the outage writes its op-log row when it ends: wait for
        # all of them (a HighErrorRate incident's run may still be verifying its rollback).
        rows = settled_service_down_rows(runpath, ENV, deploy["start_time"])
        rollbacks = [
            r for r in rows if r["details"].get("decision", {}).get("action") == "rollback"
        ]
        # Exactly one rollback of the outage: by this run, or by the service-down run of
        # another alert of the same outage (HighErrorRate names the same runbook and can fire
        # first while the crash loop's probe flickers). This run then changed nothing: it
        # found staging back (nothing to mitigate), or it waited for the change slot and
        # decided again under it.
        assert len(rollbacks) == 1, outage_story(stack, ENV, deploy["start_time"], deploy)
        fixer = rollbacks[0]
        if fixer["flow_run_id"] != str(run["id"]):
            assert row["details"]["decision"]["action"] == "none", row
            mine = [e.text for e in timeline(stack, found.id) if e.kind == "runbook"]
            assert any(
                "decided again under the change slot: none" in n or "nothing to mitigate" in n
                for n in mine
            ), mine
        after = incident(stack, found.id)
        # The runbook marks it mitigated once its verification (10 s of probe traffic) is
        # over, unless Alertmanager, which sees the service back within seconds on the test
        # stack, resolved it first (states never go back).
        if row["details"].get("mitigated"):
            assert (after.mitigated_by, after.status) in {
                ("service-down", "mitigated"),
                ("service-down", "resolved"),
            }, after
        elif fixer["flow_run_id"] == str(run["id"]):
            assert after.resolved_by == "alertmanager" and after.mitigated_at is None, after
        else:
            assert after.mitigated_at is None, after  # Alertmanager closes it (below)

    def closed() -> Any:
        now = incident(stack, found.id)
        return None if now.is_open else now

    done = wait_for(closed, 180, "Alertmanager never resolved the incident")
    assert done.resolved_by == "alertmanager"
    events = timeline(stack, found.id)
    kinds = [e.kind for e in events]
    assert kinds.index("triage") < kinds.index("runbook")
    # The rollback, its verification and the mitigation are on the timeline of the incident
    # whose run rolled back (this one, or the other alert's).
    fixed = fixer["details"]["incident_id"]
    assert fixed is not None, fixer
    notes = [e.text for e in timeline(stack, fixed) if e.kind == "runbook"]
    assert any("decided rollback" in n or "under the change slot: rollback" in n for n in notes)
    assert any(n.startswith("service-down: verified") for n in notes), notes
