"""The game day, started as a person (or its weekly schedule) starts it, against staging on
the test stack: real faults, real monitoring, the real incident flow and triage runbooks.

* one fault (the crash loop): detected, paged, rolled back by service-down, resolved; its row
  in ``game_day_results`` and the ``game-day-staging`` table artifact hold the timings;
* production without the typed confirmation: refused before anything is injected;
* an unknown fault: refused naming it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from tests.incident_support import ops_target, start_quiet
from tests.served_support import (
    SERVE_ONLY,
    RunPath,
    assert_completed,
    describe,
    kube_image,
    served_image,
)
from tests.support import oplog_row

DEPLOYMENT = "game-day/game-day"
ENV = "staging"


def results_of(stack: Any, run_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(ops_target(stack).conninfo()) as conn:
        found = conn.execute("SELECT to_regclass('game_day_results')").fetchone()
        if found is None or found[0] is None:
            return []
        cur = conn.execute(
            "SELECT * FROM game_day_results WHERE game_day_run_id = %s ORDER BY id", (run_id,)
        )
        cols = [d.name for d in cur.description or ()]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def artifact_rows(runpath: RunPath, run_id: str) -> list[dict[str, str]]:
    body = {"artifacts": {"key": {"any_": [f"game-day-{ENV}"]}, "flow_run_id": {"any_": [run_id]}}}
    resp = runpath.api.http.post("/artifacts/filter", json=body)
    resp.raise_for_status()
    found = resp.json()
    assert len(found) == 1, found
    data = found[0]["data"]
    return list(json.loads(data) if isinstance(data, str) else data)


@SERVE_ONLY
def test_a_crash_loop_game_day_is_detected_rolled_back_and_recorded(
    runpath: RunPath, webhook: str
) -> None:
    stack, api = runpath.stack, runpath.api
    start_quiet(stack, "ServiceDown", ENV)
    good = kube_image(ENV)
    run = api.finish(
        DEPLOYMENT, timeout=600, environment=ENV, faults=["crash-loop"], fault_timeout_s=300
    )
    assert_completed(run, runpath.log)
    assert kube_image(ENV) == good and served_image(stack, ENV) == good
    [row] = results_of(stack, run["id"])
    assert (row["fault"], row["outcome"], row["alert"]) == ("crash-loop", "handled", "ServiceDown")
    assert (row["runbook"], row["action"], row["asked"]) == ("service-down", "rollback", False)
    assert 0 < row["alert_s"] <= row["page_s"] <= row["mitigated_s"], row
    assert row["resolved_s"] is not None and row["resolved_s"] > row["alert_s"], row
    [shown] = artifact_rows(runpath, run["id"])
    assert (shown["fault"], shown["outcome"], shown["incident"]) == (
        "crash-loop",
        "handled",
        str(row["incident_id"]),
    )
    entry = oplog_row(stack, run["id"])
    assert (entry["operation"], entry["status"]) == ("game day", "succeeded")
    assert "1/1 handled" in entry["impact"]


def test_production_needs_the_typed_confirmation(runpath: RunPath) -> None:
    stack, api = runpath.stack, runpath.api
    image = kube_image("production")
    run = api.finish(DEPLOYMENT, environment="production", faults=["crash-loop"], confirm="yes")
    assert run["state"]["type"] == "FAILED", describe(run)
    assert "typed confirmation" in (run["state"]["message"] or ""), describe(run)
    assert kube_image("production") == image
    assert results_of(stack, run["id"]) == []
    entry = oplog_row(stack, run["id"])
    assert (entry["status"], entry["impact"]) == ("failed", "no change")
    # The typed word is not enough: the person confirming must be allowed (devops).
    run = api.finish(
        DEPLOYMENT,
        environment="production",
        faults=["crash-loop"],
        confirm="production",
        confirmed_by="alice",
    )
    assert run["state"]["type"] == "FAILED", describe(run)
    assert "confirmation refused: alice holds on-call" in run["state"]["message"], describe(run)
    assert kube_image("production") == image
    assert results_of(stack, run["id"]) == []
    entry = oplog_row(stack, run["id"])
    assert (entry["status"], entry["impact"]) == ("rejected", "no change")
    assert entry["details"]["approval_refusals"][0]["approver"] == "alice"


def test_an_unknown_fault_is_refused_naming_it(runpath: RunPath) -> None:
    stack, api = runpath.stack, runpath.api
    fault = f"meteor-{uuid.uuid4().hex[:6]}"
    run = api.finish(DEPLOYMENT, environment=ENV, faults=["disk-full", fault])
    assert run["state"]["type"] == "FAILED", describe(run)
    assert fault in (run["state"]["message"] or ""), describe(run)
    assert results_of(stack, run["id"]) == []
