"""The restart runbooks (connection-pool-exhausted, memory-leak) started as the incident flow
and the UI start them (REST ``create_flow_run``), on staging, against the app's real faults:

* every pod's DB pool exhausted (``pool-exhausted``): the connections by state and
  application and the pool use are recorded, on the timeline before the restart; then the
  restart, verified (health, error rate, the new pods' pools), the incident mitigated;
* every pod leaking memory (``leak``): the memory trend is recorded first; then the restart,
  verified (the new pods back at their base), the incident mitigated;
* an unknown environment: a clear error naming it, nothing changed.
"""

from __future__ import annotations

import uuid

from devstack.stack import StackInfo
from tests.incident_support import incident, timeline, wait_for
from tests.served_support import RunPath, assert_completed, describe, kube_deployment
from tests.support import oplog_row
from tests.triage_support import (
    app_fault,
    app_faults,
    checklist,
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
            stack, ENV, uuid.uuid4().hex[:10], "DbPoolExhausted", "connection-pool-exhausted", "P2"
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
            items = checklist(runpath, run["id"], f"triage-connection-pool-exhausted-{ENV}")
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
            stack, ENV, uuid.uuid4().hex[:10], "PodMemoryHigh", "memory-leak", "P2"
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
            items = checklist(runpath, run["id"], f"triage-memory-leak-{ENV}")
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


def test_restart_runbooks_refuse_an_unknown_environment(runpath: RunPath) -> None:
    """Both restart runbooks, given an environment with no block, fail naming it and change
    nothing (no restart: the Deployment's generation stays)."""
    stack, api = runpath.stack, runpath.api
    generation = kube_deployment(stack, ENV)["metadata"]["generation"]
    nowhere = f"nowhere-{uuid.uuid4().hex[:6]}"
    for deployment in (POOL, LEAK):
        run = api.finish(deployment, environment=nowhere)
        assert run["state"]["type"] == "FAILED", describe(run)
        assert nowhere in (run["state"]["message"] or ""), describe(run)
        row = oplog_row(stack, run["id"])
        assert row["status"] == "failed" and row["impact"] == "no change", row
    assert kube_deployment(stack, ENV)["metadata"]["generation"] == generation
