"""The disk-full triage runbook started as the incident flow and the UI start it (REST
``create_flow_run``), on staging, against the app's real volume (a directory with a quota):

* filled past 80% with old logs: the policy clears them through the app's API, the use is
  verified under 80% (app and Prometheus), the incident is mitigated;
* filled with uploads and a fresh log, which the policy may not delete: nothing is deleted,
  "increase the volume" is recommended and engineering is paged;
* backups that retention keeps: reported as not deletable, none deleted;
* an unknown environment: a clear error naming it, nothing changed;
* (serve path only) the whole chain: the full volume fires VolumeFull, Alertmanager opens
  the incident, the incident flow starts this runbook, which clears the logs and mitigates
  it, and the alert's resolution closes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from prefect.logging import disable_run_logger

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from devstack.stack import StackInfo
from tests.incident_support import (
    close_leftovers,
    group_key,
    incident,
    incidents_of,
    sink_messages,
    timeline,
    wait_for,
)
from tests.served_support import SERVE_ONLY, RunPath, assert_completed, describe, load_block
from tests.support import oplog_row
from tests.triage_support import artifacts_of, checklist_of, open_incident, resolve, silenced

DEPLOYMENT = "disk-full/disk-full"
ENV = "staging"
KEY = f"triage-disk-full-{ENV}"
FAST = {"verify_seconds": 30, "lock_timeout_s": 120}
HOUR = 3600


def volume(stack: StackInfo) -> dict[str, Any]:
    return dict(httpx.get(stack.app_url(ENV) + "/_sim/volume", timeout=10).json())


def fill(stack: StackInfo, ratio: float, **extra: Any) -> None:
    size = volume(stack)["size_bytes"]
    body = {"bytes": int(ratio * size), **extra}
    httpx.post(stack.app_url(ENV) + "/_sim/volume", json=body, timeout=10).raise_for_status()


def volume_alert(stack: StackInfo) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{stack.prometheus_url}/api/v1/alerts", timeout=10).json()["data"]
    return [
        a
        for a in alerts["alerts"]
        if a["labels"].get("alertname") == "VolumeFull" and a["labels"].get("env") == ENV
    ]


@contextmanager
def full_volume_silenced(stack: StackInfo) -> Iterator[None]:
    """Staging's alerts silenced and its volume empty before the body; after it, the volume
    is emptied and VolumeFull gone from Prometheus before the silence ends (else the real
    chain would start this runbook after the case)."""
    with silenced(stack, ENV):
        httpx.delete(stack.app_url(ENV) + "/_sim/volume", timeout=10).raise_for_status()
        try:
            yield
        finally:
            httpx.delete(stack.app_url(ENV) + "/_sim/volume", timeout=10).raise_for_status()
            wait_for(lambda: not volume_alert(stack), 60, "VolumeFull did not resolve")


def test_disk_full_clears_old_logs_by_policy_and_verifies(runpath: RunPath) -> None:
    """85% full: two log files of 30 and 48 hours and a fresh one. The old ones are cleared
    (the policy: older than 24 h, never the newest), the use is verified under 80% in the app
    and in Prometheus, the incident is mitigated, the op log says what was cleared."""
    stack, api = runpath.stack, runpath.api
    with full_volume_silenced(stack):
        fill(stack, 0.45, age_s=48 * HOUR)
        fill(stack, 0.35, age_s=30 * HOUR)
        fill(stack, 0.05)
        before = volume(stack)
        assert before["used_bytes"] / before["size_bytes"] > 0.8
        fresh = before["logs"][0]["name"]
        opened = open_incident(
            stack,
            ENV,
            uuid.uuid4().hex[:10],
            alertname="VolumeFull",
            severity="P2",
            runbook="disk-full",
        )
        try:
            run = api.finish(DEPLOYMENT, environment=ENV, incident_id=opened.id, **FAST)
            assert_completed(run, runpath.log)
            after = volume(stack)
            assert after["used_bytes"] / after["size_bytes"] < 0.8
            assert [f["name"] for f in after["logs"]] == [fresh]  # the newest stays
            row = oplog_row(stack, run["id"])
            assert (row["operation"], row["status"]) == ("disk-full", "succeeded")
            assert row["details"]["decision"]["action"] == "clear-logs"
            assert sorted(row["details"]["cleared"]) == sorted(
                f["name"] for f in before["logs"][1:]
            )
            assert "cleared 2 old log files" in row["impact"]
            items = checklist_of(runpath, run["id"], KEY)
            assert items["app volume under 80%"]["result"] == "fail"
            assert "85.0% used" in items["app volume under 80%"]["evidence"]
            assert "logs/" in items["largest directories of the volume"]["evidence"]
            assert "databases: " in items["PostgreSQL sizes"]["evidence"]
            assert items["WAL size"]["result"] == "pass"
            assert "segment files" in items["WAL size"]["evidence"]
            assert items["old logs the policy may clear"]["result"] == "pass"
            assert items["clear old logs"]["result"] == "pass"
            assert items["volume under 80% (verified)"]["result"] == "pass"
            assert items["Prometheus sees the volume under 80%"]["result"] == "pass"
            now = incident(stack, opened.id)
            assert (now.status, now.mitigated_by) == ("mitigated", "disk-full")
            notes = [e.text for e in timeline(stack, opened.id) if e.kind == "runbook"]
            assert any("decided clear-logs" in n for n in notes), notes
        finally:
            resolve(stack, opened.id)


@SERVE_ONLY
def test_disk_full_escalates_when_the_policy_may_delete_nothing(runpath: RunPath) -> None:
    """85% full of uploads and a fresh log: nothing the policy may delete. Nothing is
    deleted, the run recommends increasing the volume, pages the lead and fails."""
    stack, api = runpath.stack, runpath.api
    with full_volume_silenced(stack):
        fill(stack, 0.8, dir="uploads", age_s=72 * HOUR)
        fill(stack, 0.05)
        before = volume(stack)
        opened = open_incident(
            stack,
            ENV,
            uuid.uuid4().hex[:10],
            alertname="VolumeFull",
            severity="P2",
            runbook="disk-full",
        )
        try:
            run = api.finish(DEPLOYMENT, environment=ENV, incident_id=opened.id, **FAST)
            assert run["state"]["type"] == "FAILED", describe(run)
            assert "disk still full" in (run["state"]["message"] or ""), describe(run)
            after = volume(stack)
            assert after["used_bytes"] == before["used_bytes"]
            assert after["dirs"] == before["dirs"]
            row = oplog_row(stack, run["id"])
            assert row["status"] == "failed" and row["details"]["decision"]["action"] == "escalate"
            assert row["details"]["escalated"]["level"] == "lead"
            items = checklist_of(runpath, run["id"], KEY)
            assert items["old logs the policy may clear"]["result"] == "fail"
            recommended = items["recommendations for a person"]
            assert recommended["result"] == "fail"
            assert "increase the volume" in recommended["evidence"]
            assert "uploads/" in recommended["evidence"]
            assert "clear old logs" not in items
            assert incident(stack, opened.id).status == "triggered"
            pages = wait_for(
                lambda: sink_messages(stack, "page-lead", f"incident {opened.id}"), 30, "no page"
            )
            assert "ESCALATED by disk-full" in str(pages[-1])
            assert "increase the volume" in str(pages[-1])
        finally:
            resolve(stack, opened.id)


def backups_of(stack: StackInfo) -> list[str]:
    from tasks.catalog import list_backups

    store = load_block(BackupStore, "backups")
    database = load_block(PostgresTarget, "app-db").database
    with disable_run_logger():
        return sorted(r.backup_id for r in list_backups.fn(store, database))


@SERVE_ONLY
def test_disk_full_never_deletes_backups_retention_keeps(runpath: RunPath) -> None:
    """Backups within 30 days and the minimum count: the runbook reports that retention
    forbids deleting any, and every backup is still there afterwards."""
    stack, api = runpath.stack, runpath.api
    if not backups_of(stack):
        backup = api.finish("backup-database/backup-daily", reason="disk-full served case")
        assert_completed(backup, runpath.log)
    kept = backups_of(stack)
    with full_volume_silenced(stack):
        run = api.finish(DEPLOYMENT, environment=ENV, **FAST)
    assert_completed(run, runpath.log)
    assert backups_of(stack) == kept
    row = oplog_row(stack, run["id"])
    assert row["details"]["decision"]["action"] == "none" and row["impact"].startswith("no change")
    evidence = checklist_of(runpath, run["id"], KEY)["old backups (retention)"]["evidence"]
    assert "retention forbids deleting any" in evidence and "none deleted" in evidence, evidence


@SERVE_ONLY
def test_disk_full_refuses_an_unknown_environment(runpath: RunPath) -> None:
    """An environment with no block, or a log policy below zero hours: the run fails naming
    it before anything changes (old logs still there)."""
    stack, api = runpath.stack, runpath.api
    nowhere = f"nowhere-{uuid.uuid4().hex[:6]}"
    with full_volume_silenced(stack):
        fill(stack, 0.5, age_s=48 * HOUR)
        before = volume(stack)
        run = api.finish(DEPLOYMENT, environment=nowhere)
        assert run["state"]["type"] == "FAILED", describe(run)
        assert nowhere in (run["state"]["message"] or ""), describe(run)
        # a policy that would clear every log: refused naming the parameter
        bad = api.finish(DEPLOYMENT, environment=ENV, log_max_age_h=-1)
        assert bad["state"]["type"] == "FAILED", describe(bad)
        assert "log_max_age_h must be in (0, 8760], got -1" in (bad["state"]["message"] or "")
        after = volume(stack)
        assert [f["name"] for f in after["logs"]] == [f["name"] for f in before["logs"]]
        assert after["used_bytes"] == before["used_bytes"]
    for failed in (run, bad):
        row = oplog_row(stack, failed["id"])
        assert row["status"] == "failed" and row["impact"] == "no change"
    assert not artifacts_of(runpath, run["id"], f"triage-disk-full-{nowhere}")
    assert not artifacts_of(runpath, bad["id"], KEY)


@SERVE_ONLY
def test_a_real_volume_full_alert_is_cleared_by_the_runbook_the_incident_starts(
    runpath: RunPath, webhook: str
) -> None:
    """No silence, nobody starts the runbook: old logs fill staging's volume to 85%,
    VolumeFull fires, the incident flow starts disk-full/disk-full, which clears them; the
    alert resolves and Alertmanager closes the incident."""
    stack, api = runpath.stack, runpath.api
    key = group_key("VolumeFull", ENV)
    close_leftovers(stack, key)
    httpx.delete(stack.app_url(ENV) + "/_sim/volume", timeout=10).raise_for_status()
    try:
        fill(stack, 0.8, age_s=48 * HOUR)
        fill(stack, 0.05)
        found = wait_for(
            lambda: [i for i in incidents_of(stack, key) if i.is_open], 180, "no incident"
        )[0]
        assert (found.severity, found.runbook, found.environment) == ("P2", "disk-full", ENV)

        def started() -> Any:
            runs = incident(stack, found.id).runbook_runs
            return [r for r in runs if r.get("runbook") == "disk-full"]

        run = api.wait(wait_for(started, 120, f"no runbook run; {runpath.log}")[0]["flow_run_id"])
        assert_completed(run, runpath.log)
        assert run["parameters"]["incident_id"] == found.id
        assert volume(stack)["used_bytes"] / volume(stack)["size_bytes"] < 0.8
        assert oplog_row(stack, run["id"])["details"]["decision"]["action"] == "clear-logs"

        def closed() -> Any:
            now = incident(stack, found.id)
            return None if now.is_open else now

        assert wait_for(closed, 180, "never resolved").resolved_by == "alertmanager"
    finally:
        httpx.delete(stack.app_url(ENV) + "/_sim/volume", timeout=10).raise_for_status()
