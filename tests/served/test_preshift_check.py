"""The pre-shift check started as the UI starts it (REST ``create_flow_run`` on the scheduled
deployment): the test page goes to the incoming engineer (the routing's page route: nobody has
a channel in the committed schedule), the run pauses for their confirmation and is resumed
through the form as the UI submits it; every check passes. An unanswered page and an
Alertmanager that does not answer fail the run, naming both, while the other checks still run
(serve path only: the worker path proves prefect.yaml with the happy path)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from blocks.kube import KubeEnvironment
from decisions.preshift import CHECKS, MONITORING, ROLLBACK, TEST_PAGE, incoming_engineer
from devstack import procs
from procedures.oncall import load_schedule
from tests.access_support import sink_mentions
from tests.deploy_support import environments
from tests.served_support import SERVE_ONLY, RunPath, assert_completed, describe
from tests.support import oplog_row
from tests.triage_support import artifacts_of

NAME = "pre-shift-check/pre-shift-check"


def checks_of(runpath: RunPath, run_id: str) -> dict[str, dict[str, str]]:
    (artifact,) = artifacts_of(runpath, run_id, "pre-shift-check")
    rows: Any = artifact["data"]
    rows = json.loads(rows) if isinstance(rows, str) else rows
    return {row["Check"]: row for row in rows}


def test_the_incoming_engineer_confirms_the_test_page_and_every_check_passes(
    runpath: RunPath,
) -> None:
    stack, api = runpath.stack, runpath.api
    schedule = load_schedule()
    assert schedule is not None
    engineer, _ = incoming_engineer(schedule, datetime.now(UTC))

    run_id = api.start(NAME, ack_timeout_s=180, ack_poll_s=1)
    paused = api.wait(run_id, until=("PAUSED",), timeout=120)
    (page,) = sink_mentions(stack, "page", paused["name"])
    assert f"TEST page for {engineer}" in json.dumps(page)
    api.resume(run_id, {"received": True, "engineer": engineer})
    run = api.wait(run_id, timeout=120)
    assert_completed(run, runpath.log)

    checks = checks_of(runpath, run_id)
    assert list(checks) == list(CHECKS)
    assert {c: row["Result"] for c, row in checks.items()} == dict.fromkeys(CHECKS, "OK"), checks
    assert f"{engineer} confirmed the test page" in checks[TEST_PAGE]["Detail"]
    assert "Alertmanager http://" in checks[MONITORING]["Detail"]
    for env in ("staging", "production"):
        assert f"{env}: revision" in checks[ROLLBACK]["Detail"]
    row = oplog_row(stack, run_id)
    assert row["operation"] == "pre-shift check" and row["status"] == "succeeded"
    assert row["details"]["ack"] == {"received": True, "engineer": engineer}
    assert row["details"]["failed"] == [] and row["impact"].startswith("no change")


@SERVE_ONLY
def test_an_unanswered_page_and_a_dead_alertmanager_fail_naming_both(runpath: RunPath) -> None:
    stack, api = runpath.stack, runpath.api
    production = environments()["production"]
    dead = f"http://127.0.0.1:{procs.free_port()}"
    block = f"preshift-dead-am-{uuid.uuid4().hex[:6]}"
    KubeEnvironment(
        environment=production.environment,
        api_url=production.api_url,
        namespace=production.namespace,
        service_url=production.service_url,
        prometheus_url=production.prometheus_url,
        alertmanager_url=dead,
        verify_ssl=False,
    ).save(block, overwrite=True)
    try:
        run = api.finish(NAME, timeout=180, monitoring=block, ack_timeout_s=5, ack_poll_s=1)
    finally:
        KubeEnvironment.delete(block)  # type: ignore[attr-defined]
    assert run["state"]["type"] == "FAILED", describe(run)
    message = run["state"]["message"]
    assert f"Alertmanager {dead} cannot be reached" in message, message
    assert "was not acknowledged within 5 s: check the PagerDuty app's notification" in message
    assert "then run pre-shift-check again" in message

    checks = checks_of(runpath, run["id"])
    assert list(checks) == list(CHECKS)  # one failing check skips none of the others
    assert checks[MONITORING]["Result"] == checks[TEST_PAGE]["Result"] == "FAILED"
    assert (
        "Prometheus http://" in checks[MONITORING]["Detail"]
        and " is ready" in (checks[MONITORING]["Detail"])
    )
    row = oplog_row(stack, run["id"])
    assert row["status"] == "failed"
    assert {MONITORING, TEST_PAGE} <= set(row["details"]["failed"])
