"""Pre-shift check runbook (RUNBOOK.md "Before Your On-Call Shift").

Shortly before each shift change (the schedule of ``policy/oncall.yaml``), or when the
incoming engineer starts it from the UI, the seed's checklist runs as checks
(:mod:`decisions.preshift`); every check runs, one failing skips none:

1. monitoring reachable: Prometheus and Alertmanager answer ``/-/ready``;
2. test page acknowledged: a test page goes to the incoming engineer (the schedule's
   ``channels``, else the routing's page route) and the run pauses until they confirm it
   arrived (a form in the UI);
3. rollback reachable: in each environment the Deployment is read and the revision a
   rollback would return to is named (dry run, nothing changes);
4. recent incidents of the last 7 days (informational; open ones are named);
5. runbooks current: every catalog deployment is on the server and ready to run, and a
   watched runbook whose last run failed has its incident.

The ``pre-shift-check`` table artifact, a summary, an operation-log entry; the run fails
(red in the UI) naming the failed checks when any failed. Changes nothing.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from blocks.kube import KubeEnvironment
from blocks.notify import NotificationRouting
from blocks.postgres import PostgresTarget
from decisions.deploy_history import (
    DEPLOY_OPERATIONS,
    failed_images,
    oplog_deploys,
    rollback_target,
)
from decisions.incidents import Incident
from decisions.oncall import Schedule
from decisions.preshift import (
    MONITORING,
    ROLLBACK,
    RUNBOOKS,
    TEST_PAGE,
    CheckResult,
    Finding,
    PageRoute,
    ack_finding,
    failed_checks,
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
from opsflows.errors import OpsError, VerificationFailed, scrub
from procedures.oncall import load_schedule
from procedures.operation import (
    ROUTING,
    deliver,
    load_block,
    operation_log,
    try_load_ops_db,
    try_load_routing,
)
from procedures.page_ack import await_ack
from tasks.deployment_state import server_deployments
from tasks.incidents import list_incidents
from tasks.oplog import oplog_status, read_operations
from tasks.readiness import probe_ready
from tasks.rollout import current_release, rollout_history

#: How far back the op log is read for deploys that failed (their image is no target).
FAILED_DEPLOY_LOOKBACK_DAYS = 30


class PreShiftCheckFailed(VerificationFailed):
    """One or more pre-shift checks failed."""


@flow(name="pre-shift-check")
def pre_shift_check(
    engineer: str | None = None,
    test_page: bool = True,
    ack_timeout_s: int = 900,
    ack_poll_s: int = 5,
    monitoring: str = "production",
    environments: list[str] | None = None,
    runbooks: list[str] | None = None,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Check that the incoming on-call engineer can work the shift. Changes nothing.

    Args:
        engineer: who is paged (default: the primary of the shift about to start, per
            policy/oncall.yaml).
        test_page: send the test page and wait for its acknowledgement (off: skipped).
        ack_timeout_s: how long the engineer has to confirm the test page arrived.
        ack_poll_s: how often the paused run looks for the answer.
        monitoring: KubeEnvironment block whose prometheus_url and alertmanager_url are asked.
        environments: KubeEnvironment blocks whose rollback is checked (default staging and
            production).
        runbooks: the catalog's deployments ("flow/deployment") expected on the server (the
            deployment passes the catalog; empty: the check is skipped).
        routing: NotificationRouting block (the page route, when the engineer has no channel
            in the schedule).
    """
    ops_db, routes = try_load_ops_db(), try_load_routing(routing)
    with operation_log("pre-shift check", "before the on-call shift", ops_db, routes) as rec:
        now = datetime.now(UTC)
        schedule = _schedule(rec.issues)
        person = engineer.strip() if engineer and engineer.strip() else None
        if person is None and schedule is not None:
            try:
                person = incoming_engineer(schedule, now)[0]
            except OpsError as exc:
                rec.issues.append(f"the schedule cannot say who comes on call: {scrub(str(exc))}")
        incidents = _incidents(ops_db, rec.issues)
        results = [
            _monitoring(monitoring),
            _test_page(schedule, person, routes, test_page, ack_timeout_s, ack_poll_s, rec.details),
            _rollback(environments or ["staging", "production"], ops_db, now),
            incidents_check(None if incidents is None else recent_incidents(incidents, now)),
            _runbooks(runbooks, incidents, ops_db, now),
        ]
        create_table_artifact(
            key="pre-shift-check",
            table=table_rows(results),
            description=f"Pre-shift check for {person or 'the incoming engineer'}",
        )
        still_open = [i for i in recent_incidents(incidents or [], now) if i.is_open]
        summary = summary_markdown(results, person, still_open)
        create_markdown_artifact(
            key="pre-shift-check-summary", markdown=summary, description="Pre-shift check"
        )
        rec.impact = "no change (checks only)"
        failed = failed_checks(results)
        checks = {r.name: r.result for r in results}
        rec.details.update(
            engineer=person,
            checks=checks,
            failed=failed,
            open_incidents=[i.id for i in still_open],
        )
        message = verdict_message(results)
        if message is not None:
            rec.follow_up.append(f"fix {', '.join(failed)} and run pre-shift-check again")
            raise PreShiftCheckFailed(
                message, hint="fix what each failed check says, then run pre-shift-check again"
            )
        return {"engineer": person, "checks": checks}


def _schedule(issues: list[str]) -> Schedule | None:
    try:
        return load_schedule()
    except OpsError as exc:
        issues.append(f"on-call schedule unreadable: {scrub(str(exc))}")
        return None


def _incidents(ops_db: PostgresTarget | None, issues: list[str]) -> list[Incident] | None:
    if ops_db is None:
        return None
    try:
        return list_incidents(ops_db, recent=200)
    except OpsError as exc:
        issues.append(f"incidents unreadable: {scrub(str(exc))}")
        return None


def _monitoring(block: str) -> CheckResult:
    try:
        env = load_block(KubeEnvironment, block)
    except OpsError as exc:
        return CheckResult(MONITORING, (Finding(False, scrub(str(exc))),))
    findings = []
    for service, url in (
        ("Prometheus", env.prometheus_url),
        ("Alertmanager", env.alertmanager_url),
    ):
        status, error = probe_ready(url)
        findings.append(readiness(service, url, status, error, block))
    return CheckResult(MONITORING, tuple(findings))


def _test_page(
    schedule: Schedule | None,
    person: str | None,
    routes: NotificationRouting | None,
    enabled: bool,
    timeout_s: int,
    poll_s: int,
    details: dict[str, Any],
) -> CheckResult:
    if not enabled:
        return CheckResult(TEST_PAGE, (Finding(True, "skipped (test_page off)"),), skipped=True)
    if person is None:
        why = "nobody to page: no on-call schedule names the incoming engineer; give `engineer`"
        return CheckResult(TEST_PAGE, (Finding(False, why),))
    route: PageRoute = page_route(schedule, person, routes.targets("P1") if routes else [])
    run_name = str(flow_run.name or "")
    subject = f"TEST page for {person}: pre-shift check {run_name}"
    body = (
        f"This is a test page of the pre-shift check (run {run_name}). Nothing is wrong. "
        f"Confirm in the Prefect UI that it arrived (the run waits {timeout_s} s)."
    )
    try:
        delivered = deliver(list(route.refs), "P1", subject, body)
    except (OpsError, ValueError) as exc:  # ValueError: a channel's block does not exist
        details["page_error"] = scrub(str(exc))
        delivered = 0
    details.update(paged=person, page_channels=list(route.refs), page_route=route.why)
    ack = await_ack(route, timeout_s, poll_s) if delivered else None
    if ack is not None:
        details["ack"] = {"received": ack.received, "engineer": ack.engineer}
    return CheckResult(TEST_PAGE, (ack_finding(route, delivered, ack, timeout_s),))


def _rollback(environments: list[str], ops_db: PostgresTarget | None, now: datetime) -> CheckResult:
    rows: list[dict[str, Any]] = []
    if ops_db is not None:
        try:
            since = now - timedelta(days=FAILED_DEPLOY_LOOKBACK_DAYS)
            rows = read_operations(ops_db, list(DEPLOY_OPERATIONS), since)
        except OpsError:
            rows = []  # the rollout history still names a target
    findings = []
    for name in environments:
        try:
            env = load_block(KubeEnvironment, name)
            current = current_release(env)
            history = rollout_history(env)
        except OpsError as exc:
            findings.append(rollback_finding(name, None, None, scrub(str(exc))))
            continue
        bad = failed_images(oplog_deploys(rows, env.environment))
        target = rollback_target(history, current.revision, bad)
        findings.append(rollback_finding(name, current, target))
    return CheckResult(ROLLBACK, tuple(findings))


def _runbooks(
    expected: list[str] | None,
    incidents: list[Incident] | None,
    ops_db: PostgresTarget | None,
    now: datetime,
) -> CheckResult:
    if not expected:
        return CheckResult(RUNBOOKS, (Finding(True, "skipped (no catalog given)"),), skipped=True)
    try:
        deployments, last = server_deployments(expected)
    except OpsError as exc:
        return CheckResult(RUNBOOKS, (Finding(False, f"Prefect server: {scrub(str(exc))}"),))
    if ops_db is not None:
        for name, run in list(last.items()):
            if run.state in ("FAILED", "CRASHED"):
                try:
                    last[name] = replace(run, oplog_status=oplog_status(ops_db, run.run_id))
                except OpsError:
                    pass
    return runbooks_check(expected, deployments, last, incidents, now)
