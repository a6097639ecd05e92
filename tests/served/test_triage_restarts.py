"""The restart runbooks (connection-pool-exhausted, memory-leak) started as the incident flow
and the UI start them (REST ``create_flow_run``), on staging, against the app's real faults:

* every pod's DB pool exhausted (``pool-exhausted``): the connections by state and
  application and the pool use are recorded, on the timeline before the restart; then the
  restart, verified (health, error rate, the new pods' pools), the incident mitigated;
* every pod leaking memory (``leak``): the memory trend is recorded first; then the restart,
  verified (the new pods back at their base), the incident mitigated;
* an unknown environment: a clear error naming it, nothing changed;
* (serve path only) the whole chain for each: the fault fires its alert (DbPoolExhausted,
  PodMemoryHigh), Alertmanager opens the incident, the incident flow starts the runbook its
  ``runbook`` label names, which restarts and mitigates it, and the alert's resolution closes it.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from devstack.stack import StackInfo
from tests.incident_support import (
    close_leftovers,
    group_key,
    incident,
    incidents_of,
    timeline,
    wait_for,
)
from tests.served_support import SERVE_ONLY, RunPath, assert_completed, describe, kube_deployment
from tests.support import oplog_row
from tests.triage_support import (
    app_fault,
    app_faults,
    checklist_of,
    open_incident,
    prometheus_value,
    resolve,
    silenced,
)

ENV = "staging"
POOL = "connection-pool-exhausted/connection-pool-exhausted"
LEAK = "memory-leak/memory-leak"
FAST = {"verify_seconds": 5, "lock_timeout_s": 120}
SEL = f'job="web-app", env="{ENV}"'


def notes(stack: StackInfo, incident_id: int) -> list[str]:
    return [e.text for e in timeline(stack, incident_id) if e.kind == "runbook"]


def test_pool_exhausted_records_evidence_then_restarts(runpath: RunPath) -> None:
    stack, api = runpath.stack, runpath.api
    full = f"min(sampleapp_db_pool_in_use{{{SEL}}} / sampleapp_db_pool_size{{{SEL}}})"
    with silenced(stack, ENV):
        opened = open_incident(
            stack,
            ENV,
            uuid.uuid4().hex[:10],
            alertname="DbPoolExhausted",
            severity="P2",
            runbook="connection-pool-exhausted",
        )
        try:
            with app_fault(stack, ENV, "pool-exhausted"):
                wait_for(lambda: prometheus_value(stack, full) == 1, 30, "pool never full")
                run = api.finish(POOL, environment=ENV, incident_id=opened.id, **FAST)
                assert_completed(run, runpath.log)
                assert not app_faults(stack, ENV), "the restart did not replace the pods"
            row = oplog_row(stack, run["id"])
            assert (row["operation"], row["status"]) == ("connection-pool-exhausted", "succeeded")
            assert row["details"]["decision"]["action"] == "restart"
            assert row["details"]["connections"]["groups"], row["details"]
            assert all(p["in_use"] == p["size"] for p in row["details"]["pools"])
            items = checklist_of(runpath, run["id"], f"triage-connection-pool-exhausted-{ENV}")
            assert "connections: " in items["connections by state and application"]["evidence"]
            assert "opsflows" in items["connections by state and application"]["evidence"]
            assert items["connection pools have room"]["result"] == "fail"
            assert "FULL" in items["connection pools have room"]["evidence"]
            assert items["restart"]["result"] == "pass"
            assert items["health verified"]["result"] == "pass"
            assert items["connection pools back down"]["result"] == "pass"
            now = incident(stack, opened.id)
            assert (now.status, now.mitigated_by) == ("mitigated", "connection-pool-exhausted")
            said = notes(stack, opened.id)
            evidence = next(i for i, n in enumerate(said) if "evidence before any change" in n)
            restarted = next(i for i, n in enumerate(said) if "restarted every pod" in n)
            assert evidence < restarted, said
        finally:
            resolve(stack, opened.id)


def test_memory_leak_records_the_trend_then_restarts(runpath: RunPath) -> None:
    stack, api = runpath.stack, runpath.api
    high = f"max(sampleapp_memory_bytes{{{SEL}}} / sampleapp_memory_limit_bytes{{{SEL}}})"
    with silenced(stack, ENV):
        opened = open_incident(
            stack,
            ENV,
            uuid.uuid4().hex[:10],
            alertname="PodMemoryHigh",
            severity="P2",
            runbook="memory-leak",
        )
        try:
            with app_fault(stack, ENV, "leak", leak_mb_per_s=20):
                wait_for(lambda: (prometheus_value(stack, high) or 0) > 0.85, 60, "no leak seen")
                run = api.finish(
                    LEAK, environment=ENV, incident_id=opened.id, trend_minutes=1, **FAST
                )
                assert_completed(run, runpath.log)
                assert not app_faults(stack, ENV), "the restart did not replace the pods"
            row = oplog_row(stack, run["id"])
            assert (row["operation"], row["status"]) == ("memory-leak", "succeeded")
            assert row["details"]["decision"]["action"] == "restart"
            trends = row["details"]["trends"]
            assert trends and all(t["last"] > t["first"] for t in trends), trends
            items = checklist_of(runpath, run["id"], f"triage-memory-leak-{ENV}")
            trend = items["memory trend of the pods (last 1 min)"]
            assert trend["result"] == "fail" and "MiB/min" in trend["evidence"], trend
            assert items["restart"]["result"] == "pass"
            assert items["memory back down"]["result"] == "pass"
            assert (prometheus_value(stack, high) or 1) < 0.5  # new pods at their base
            now = incident(stack, opened.id)
            assert (now.status, now.mitigated_by) == ("mitigated", "memory-leak")
            said = notes(stack, opened.id)
            evidence = next(i for i, n in enumerate(said) if "evidence before any change" in n)
            restarted = next(i for i, n in enumerate(said) if "restarted every pod" in n)
            assert evidence < restarted, said
        finally:
            resolve(stack, opened.id)


@SERVE_ONLY
def test_restart_runbooks_refuse_an_unknown_environment(runpath: RunPath) -> None:
    """Both restart runbooks, given an environment with no block, fail naming it and change
    nothing (no restart: the Deployment's generation stays); so does a negative trend
    window."""
    stack, api = runpath.stack, runpath.api
    generation = kube_deployment(stack, ENV)["metadata"]["generation"]
    nowhere = f"nowhere-{uuid.uuid4().hex[:6]}"
    for deployment in (POOL, LEAK):
        run = api.finish(deployment, environment=nowhere)
        assert run["state"]["type"] == "FAILED", describe(run)
        assert nowhere in (run["state"]["message"] or ""), describe(run)
        row = oplog_row(stack, run["id"])
        assert row["status"] == "failed" and row["impact"] == "no change", row
    bad = api.finish(LEAK, environment=ENV, trend_minutes=-5)
    assert bad["state"]["type"] == "FAILED", describe(bad)
    assert "trend_minutes must be in (0, 1440], got -5" in (bad["state"]["message"] or "")
    assert kube_deployment(stack, ENV)["metadata"]["generation"] == generation


@pytest.mark.parametrize(
    ("fault", "extra", "alertname", "runbook"),
    [
        ("pool-exhausted", {}, "DbPoolExhausted", "connection-pool-exhausted"),
        ("leak", {"leak_mb_per_s": 20}, "PodMemoryHigh", "memory-leak"),
    ],
)
@SERVE_ONLY
def test_a_real_alert_starts_the_runbook_that_restarts_and_mitigates(
    runpath: RunPath,
    webhook: str,
    fault: str,
    extra: dict[str, Any],
    alertname: str,
    runbook: str,
) -> None:
    """No silence, nobody starts the runbook: the fault fires ``alertname``, the incident flow
    starts ``runbook/runbook`` (the rule's label), which restarts staging; the alert resolves
    and Alertmanager closes the incident."""
    stack, api = runpath.stack, runpath.api
    key = group_key(alertname, ENV)
    close_leftovers(stack, key)
    with app_fault(stack, ENV, fault, **extra):
        found = wait_for(
            lambda: [i for i in incidents_of(stack, key) if i.is_open], 180, "no incident"
        )[0]
        assert (found.severity, found.runbook, found.environment) == ("P2", runbook, ENV)

        def started() -> Any:
            return [
                r for r in incident(stack, found.id).runbook_runs if r.get("runbook") == runbook
            ]

        run = api.wait(wait_for(started, 120, f"no runbook run; {runpath.log}")[0]["flow_run_id"])
        assert_completed(run, runpath.log)
        assert run["parameters"]["incident_id"] == found.id
        assert not app_faults(stack, ENV), "the restart did not replace the pods"
    row = oplog_row(stack, run["id"])
    assert (row["operation"], row["details"]["decision"]["action"]) == (runbook, "restart")

    def closed() -> Any:
        now = incident(stack, found.id)
        return None if now.is_open else now

    done = wait_for(closed, 180, "Alertmanager never resolved the incident")
    assert done.resolved_by == "alertmanager"
    said = notes(stack, found.id)
    assert any(n.startswith(f"{runbook}: evidence before any change") for n in said), said
