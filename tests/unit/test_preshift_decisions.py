"""The pre-shift check judged from what was read (decisions/preshift.py, pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from decisions.access import parse_policy
from decisions.incidents import Incident
from decisions.oncall import Schedule
from decisions.oncall_policy import parse_schedule
from decisions.preshift import (
    INCIDENTS,
    MONITORING,
    RUNBOOKS,
    TEST_PAGE,
    Ack,
    CheckResult,
    Finding,
    LastRun,
    PageRoute,
    ServerDeployment,
    ack_finding,
    incidents_check,
    incoming_engineer,
    page_route,
    readiness,
    recent_incidents,
    rollback_finding,
    runbooks_check,
    summary_markdown,
    table_rows,
    verdict_message,
)
from decisions.releases import Release, RevisionRecord

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)  # Monday 08:30 in Berlin


def _schedule(channels: dict[str, list[str]] | None = None) -> Schedule:
    roles = parse_policy(yaml.safe_load((REPO / "policy" / "roles.yaml").read_text()))
    raw: dict[str, Any] = {
        "version": 1,
        "timezone": "UTC",
        "rotation": {"start": "2026-11-16T08:00:00Z", "shift_days": 7,
                     "primary": ["alice", "bob", "carol"]},
        "overrides": [],
        "escalation": {"lead": "dave"},
        "channels": channels or {},
    }  # fmt: skip
    return parse_schedule(raw, roles)


def test_the_check_runs_half_an_hour_before_the_committed_rotations_shift_change() -> None:
    from deployments.catalog import PRESHIFT_CRON, PRESHIFT_LEAD_MIN, PRESHIFT_TZ

    roles = parse_policy(yaml.safe_load((REPO / "policy" / "roles.yaml").read_text()))
    raw = yaml.safe_load((REPO / "policy" / "oncall.yaml").read_text())
    rotation = parse_schedule(raw, roles).rotation
    start = rotation.shift_start(0).astimezone(ZoneInfo(PRESHIFT_TZ))
    before = start - timedelta(minutes=PRESHIFT_LEAD_MIN)
    minute, hour, _, _, weekday = PRESHIFT_CRON.split()
    assert rotation.timezone == PRESHIFT_TZ and rotation.shift_days == 7
    assert before.date() == start.date()  # same weekday as the change
    assert (before.hour, before.minute, before.isoweekday() % 7) == (
        int(hour),
        int(minute),
        int(weekday),
    )


def test_the_incoming_engineer_is_the_next_shifts_primary_until_an_hour_into_it() -> None:
    schedule = _schedule()
    change = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # shift 2 (carol) starts
    assert incoming_engineer(schedule, change - timedelta(minutes=30)) == ("carol", change)
    assert incoming_engineer(schedule, change + timedelta(minutes=20)) == ("carol", change)
    later = change + timedelta(days=2)  # mid-shift: the one after
    assert incoming_engineer(schedule, later) == ("alice", change + timedelta(days=7))


def test_the_page_goes_to_the_persons_channels_else_the_routings_page_route() -> None:
    schedule = _schedule({"carol": ["custom-webhook/page-carol"]})
    routed = ["custom-webhook/page", "custom-webhook/notify"]
    assert page_route(schedule, "carol", routed).refs == ("custom-webhook/page-carol",)
    assert page_route(schedule, "bob", routed).refs == tuple(routed)
    assert page_route(None, "bob", routed).refs == tuple(routed)


ROUTE = PageRoute("carol", ("custom-webhook/page",), "")


def test_an_unacknowledged_page_fails_with_what_to_do() -> None:
    finding = ack_finding(ROUTE, 1, None, 900)
    assert not finding.ok
    assert finding.text == (
        "the test page to carol (custom-webhook/page) was not acknowledged within 900 s: "
        "check the PagerDuty app's notification settings on your phone, then run "
        "pre-shift-check again"
    )


def test_only_the_paged_engineer_confirming_receipt_passes() -> None:
    assert ack_finding(ROUTE, 1, Ack(True, " Carol "), 900).ok
    other = ack_finding(ROUTE, 1, Ack(True, "bob"), 900)
    assert not other.ok and "acknowledged by bob, not by carol" in other.text
    missing = ack_finding(ROUTE, 1, Ack(False, "carol"), 900)
    assert not missing.ok and "did not arrive" in missing.text
    undelivered = ack_finding(ROUTE, 0, Ack(True, "carol"), 900)
    assert not undelivered.ok and "could not be sent" in undelivered.text


def test_a_service_not_ready_names_its_url_and_the_block_field() -> None:
    assert readiness("Prometheus", "http://p", 200, None, "production").ok
    down = readiness("Alertmanager", "http://a:1", None, "ConnectError refused", "production")
    assert not down.ok
    assert down.text.startswith("Alertmanager http://a:1 cannot be reached (ConnectError")
    assert "alertmanager_url of the KubeEnvironment block production" in down.text
    assert "answered 503" in readiness("Prometheus", "http://p", 503, None, "x").text


def rev(n: int, image: str) -> RevisionRecord:
    return RevisionRecord(revision=n, image=image, replicaset=f"rs-{n}", replicas=1)


def test_the_rollback_line_names_the_target_or_why_there_is_none() -> None:
    current = Release("staging", 3, "web:2", 2)
    ok = rollback_finding("staging", current, rev(2, "web:1"))
    assert ok.ok and "revision 3 (web:2) would roll back to revision 2 (web:1)" in ok.text
    none = rollback_finding("staging", current, None)
    assert none.ok and "no previous release to roll back to" in none.text  # reachable
    assert "would need a hotfix" in none.text
    down = rollback_finding("production", None, None, "cannot reach http://k")
    assert not down.ok and "could not be read (cannot reach http://k)" in down.text


def incident(i: int, hours_ago: float, status: str = "resolved", **kw: Any) -> Incident:
    return Incident(
        id=i, group_key=f"g{i}", source="watchdog", title=f"thing {i}", severity="P2",
        status=status, triggered_at=NOW - timedelta(hours=hours_ago), **kw,
    )  # fmt: skip


def test_recent_incidents_are_the_last_weeks_and_any_still_open() -> None:
    found = recent_incidents(
        [incident(1, 2, resolved_by="bob", runbook="service-down"), incident(2, 24 * 9),
         incident(3, 24 * 10, "acknowledged")], NOW,
    )  # fmt: skip
    assert [i.id for i in found] == [1, 3]
    check = incidents_check(found)
    assert check.ok and check.informational
    assert "P2 #1 thing 1 (resolved, runbook service-down, resolved by bob)" in check.detail
    assert incidents_check(()).detail == "no incident in 7 days"
    unknown = incidents_check(None)
    assert unknown.ok and unknown.detail == "incidents unknown: the ops-db could not be read"


DEP = "backup-database/backup-daily"


def last(state: str, minutes_ago: float = 60, oplog: str | None = None) -> LastRun:
    return LastRun(DEP, "run-1", "brave-owl", state, NOW - timedelta(minutes=minutes_ago), oplog)


def runbooks(
    deployments: dict[str, ServerDeployment] | None = None,
    runs: dict[str, LastRun] | None = None,
    incidents: list[Incident] | None = None,
    expected: tuple[str, ...] = (DEP,),
) -> CheckResult:
    deps = {DEP: ServerDeployment(DEP, "READY")} if deployments is None else deployments
    return runbooks_check(expected, deps, runs or {}, incidents or [], NOW)


def test_runbooks_missing_or_not_ready_fail_naming_them() -> None:
    assert runbooks().ok
    missing = runbooks(expected=(DEP, "scale/scale"))
    assert not missing.ok and "scale/scale is not on the Prefect server" in missing.detail
    assert "1/2 catalog deployments on the server" in missing.detail
    idle = runbooks({DEP: ServerDeployment(DEP, "NOT_READY", "pool-a", False)})
    assert not idle.ok and "prefect worker start --pool pool-a" in idle.detail
    worker = runbooks({DEP: ServerDeployment(DEP, "NOT_READY", "pool-a", True)})
    assert worker.ok  # its pool has a live worker
    unserved = runbooks({DEP: ServerDeployment(DEP, "NOT_READY")})
    assert not unserved.ok and "no process serves it" in unserved.detail


def test_a_failed_watched_run_needs_its_incident() -> None:
    runs = {DEP: last("FAILED")}
    alone = runbooks(runs=runs)
    assert not alone.ok
    assert "last run brave-owl failed and no incident records it" in alone.detail
    opened = incident(7, 1, "triggered", alerts=({"fingerprint": "run-1"},))
    assert runbooks(runs=runs, incidents=[opened]).ok
    ran = incident(8, 1, runbook_runs=({"flow_run_id": "run-1", "name": "brave-owl"},))
    assert runbooks(runs=runs, incidents=[ran]).ok
    assert runbooks(runs={DEP: last("CRASHED", oplog="rejected")}).ok
    assert runbooks(runs={DEP: last("FAILED", minutes_ago=1)}).ok  # the watchdog is on it
    assert runbooks(runs={DEP: last("COMPLETED")}).ok
    unread = runbooks_check((DEP,), {DEP: ServerDeployment(DEP, "READY")}, runs, None, NOW)
    assert not unread.ok and "failed and the incidents could not be read" in unread.detail


def test_a_failed_run_of_an_unwatched_runbook_is_noted_not_failed() -> None:
    name = "game-day/game-day"
    check = runbooks(
        {name: ServerDeployment(name, "READY")},
        {name: LastRun(name, "r", "calm-fox", "FAILED", NOW - timedelta(hours=3))},
        expected=(name,),
    )
    assert check.ok and "calm-fox failed (not watched" in check.detail


def test_one_failed_check_fails_the_run_naming_it_and_the_rest_still_show() -> None:
    results = [
        CheckResult(MONITORING, (Finding(True, "Prometheus ok"), Finding(False, "AM down"))),
        CheckResult(TEST_PAGE, (Finding(True, "skipped"),), skipped=True),
        CheckResult(INCIDENTS, (Finding(True, "1 incident"),), informational=True),
        CheckResult(RUNBOOKS, (Finding(True, "all there"),)),
    ]
    assert [r["Result"] for r in table_rows(results)] == ["FAILED", "SKIPPED", "OK", "OK"]
    assert table_rows(results)[0]["Detail"] == "Prometheus ok; AM down"
    assert verdict_message(results) == "pre-shift check failed: Monitoring reachable: AM down"
    summary = summary_markdown(results, "carol", [incident(4, 1, "triggered")])
    assert summary.startswith("# Pre-shift check for carol: FAILED")
    assert "Still open:\n- P2 #4 thing 4 (triggered)" in summary
    assert verdict_message(results[1:]) is None
    assert "all checks passed" in summary_markdown(results[1:], "carol", [])
