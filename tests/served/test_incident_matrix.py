"""Incidents the way they start: Alertmanager's notifications to the receiver, and a failing
runbook run caught by the incident deployment's watchdog trigger.

Notifications are POSTed as Alertmanager's ``webhook_configs`` send them (version 4, bearer
token); people answer through the REST calls the UI makes (``POST /flow_runs/{id}/resume``
with ``run_input``); pages are read from the stack's notification sink. Paging delays are
shrunk for the tier (``incident_support.INCIDENT_DELAYS``).
"""

from __future__ import annotations

import uuid
from typing import Any

from devstack.stack import StackInfo
from tests.alertmanager_support import alert, notification, resolved
from tests.incident_support import (
    close_leftovers,
    count_incidents,
    incident,
    incidents_of,
    post_alerts,
    sink_messages,
    timeline,
    wait_for,
)
from tests.served_support import SERVE_ONLY, Api, RunPath, assert_completed
from tests.support import oplog_row


def runs_tagged(api: Api, tag: str) -> list[dict[str, Any]]:
    resp = api.http.post("/flow_runs/filter", json={"flow_runs": {"tags": {"all_": [tag]}}})
    resp.raise_for_status()
    return list(resp.json())


def test_alertmanager_group_pages_escalates_and_closes(runpath: RunPath, webhook: str) -> None:
    """Two P1 groups fire: one is acknowledged after the secondary was paged, the other never.

    The unacknowledged one reaching the lead is the signal that the acknowledged one would
    have been paged by then too; both close when Alertmanager resolves them.
    """
    stack, api = runpath.stack, runpath.api
    marker = uuid.uuid4().hex[:10]
    acked = notification([alert("ServiceDown", "P1", summary=f"acked {marker}")])
    ignored = notification([alert("ServiceDown", "P1", summary=f"ignored {marker}")])
    opened: dict[str, dict[str, Any]] = {}
    for name, payload in (("acked", acked), ("ignored", ignored)):
        answer = post_alerts(stack, payload)
        assert answer.status_code == 202, answer.text
        opened[name] = answer.json()
        assert opened[name]["status"] == "opened" and opened[name]["severity"] == "P1"
    # The same group again (Alertmanager's repeat, or a redelivery): no second incident.
    again = post_alerts(stack, acked)
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    assert again.json()["incident_id"] == opened["acked"]["incident_id"]
    assert len(incidents_of(stack, acked["groupKey"])) == 1
    incident_id, run_id = opened["acked"]["incident_id"], opened["acked"]["flow_run_id"]
    assert [r["id"] for r in runs_tagged(api, f"incident:{incident_id}")] == [run_id]

    wait_for(lambda: sink_messages(stack, "page", f"acked {marker}"), 90, "no on-call page")
    wait_for(lambda: sink_messages(stack, "incidents", f"acked {marker}"), 30, "no #incidents")
    wait_for(lambda: sink_messages(stack, "page-secondary", f"acked {marker}"), 60, "no escalation")
    api.wait(run_id, until=("PAUSED",), timeout=30)
    api.resume(run_id, {"acknowledge": True, "who": "served-oncall", "note": "looking at it"})
    wait_for(lambda: incident(stack, incident_id).acknowledged, 30, "acknowledgement not kept")
    wait_for(lambda: sink_messages(stack, "page-lead", f"ignored {marker}"), 120, "no lead page")
    assert not sink_messages(stack, "page-lead", f"acked {marker}"), "escalated after the ack"

    for name, payload in (("acked", acked), ("ignored", ignored)):
        answer = post_alerts(stack, resolved(payload))
        assert answer.status_code == 200 and answer.json()["status"] == "resolved", answer.text
        run = api.wait(opened[name]["flow_run_id"], timeout=120)
        assert_completed(run, runpath.log)
        closed = incident(stack, opened[name]["incident_id"])
        assert closed.status == "resolved" and closed.resolved_by == "alertmanager"
        assert closed.postmortem == f"incident-{closed.id}-postmortem"
        draft = api.latest_artifact(closed.postmortem)
        assert "## Open questions" in draft and f"{name} {marker}" in draft
        row = oplog_row(stack, run["id"])
        assert row["operation"] == "incident" and closed.postmortem in row["follow_up"]
    acked_incident = incident(stack, incident_id)
    assert acked_incident.acknowledged_by == "served-oncall"
    kinds = [e.kind for e in timeline(stack, incident_id)]
    assert kinds.count("paged on-call") == 1 and "paged lead" not in kinds
    assert "timeline" in api.latest_artifact(f"incident-{incident_id}-timeline").lower()
    # A resolution redelivered after closing has nothing left to close.
    late = post_alerts(stack, resolved(acked))
    assert late.status_code == 200 and late.json()["status"] == "ignored"


@SERVE_ONLY
def test_a_flapping_group_is_one_incident_paged_once(runpath: RunPath, webhook: str) -> None:
    """A P1 group fires, resolves, fires, resolves and fires again (flapping past its rule's
    keep_firing_for): one incident, reopened twice, one page to the on-call. Each reopening
    gets a run of its own that carries on where the last one stopped and starts the alert's
    runbook again (once per opening); every run completes."""
    stack, api = runpath.stack, runpath.api
    marker = uuid.uuid4().hex[:10]
    payload = notification([alert("ServiceDown", "P1", summary=f"flapping {marker}")])
    opened = post_alerts(stack, payload)
    assert opened.status_code == 202 and opened.json()["status"] == "opened", opened.text
    incident_id, runs = opened.json()["incident_id"], [opened.json()["flow_run_id"]]
    wait_for(lambda: sink_messages(stack, "page", f"flapping {marker}"), 90, "no on-call page")
    for _ in range(2):
        down = post_alerts(stack, resolved(payload))
        assert down.status_code == 200 and down.json()["status"] == "resolved", down.text
        assert_completed(api.wait(runs[-1], timeout=120), runpath.log)
        back = post_alerts(stack, payload)
        assert back.status_code == 202, back.text
        assert back.json()["status"] == "reopened" and back.json()["incident_id"] == incident_id
        runs.append(back.json()["flow_run_id"])
        api.wait(runs[-1], until=("PAUSED",), timeout=120)  # it responds, waits for a person
    assert len(set(runs)) == 3
    assert [i.id for i in incidents_of(stack, payload["groupKey"])] == [incident_id]

    closing = post_alerts(stack, resolved(payload))
    assert closing.status_code == 200 and closing.json()["status"] == "resolved", closing.text
    assert_completed(api.wait(runs[-1], timeout=120), runpath.log)
    closed = incident(stack, incident_id)
    assert (closed.status, closed.resolved_by, closed.reopenings) == ("resolved", "alertmanager", 2)
    assert len(sink_messages(stack, "page", f"flapping {marker}")) == 1  # the on-call, once
    kinds = [e.kind for e in timeline(stack, incident_id)]
    assert kinds.count("paged on-call") == 1 and kinds.count("reopened") == 2
    assert kinds.count("picked up") == 2 and kinds.count("triage") == 3
    triage_runs = [r["flow_run_id"] for r in closed.runbook_runs]
    assert len(set(triage_runs)) == 3, closed.runbook_runs  # one per opening
    told = [m for m in sink_messages(stack, "incidents", marker) if "reopened" in str(m["body"])]
    assert len(told) == 2  # #incidents heard 'resolved' each time, then that it is back
    assert "| reopened (the alert flapped) | 2 times |" in api.latest_artifact(
        f"incident-{incident_id}-postmortem"
    )


def test_a_failing_change_opens_an_incident(runpath: RunPath) -> None:
    """A scale beyond the policy maximum fails; the watchdog trigger opens a P3 incident,
    e-mails it, and a person resolves it through the UI's form."""
    stack, api = runpath.stack, runpath.api
    key = "watchdog:scale/scale:staging"
    close_leftovers(stack, key)  # an open one would take the failure in without a new page
    run = api.finish("scale/scale", timeout=120, environment="staging", replicas=99)
    assert run["state"]["type"] == "FAILED", run["state"]

    def opened() -> Any:
        return [i for i in incidents_of(stack, key) if run["id"] in str(i.alerts)]

    found = wait_for(opened, 120, f"no incident for the failed run; see {runpath.log}")[-1]
    assert (found.source, found.severity, found.environment) == ("watchdog", "P3", "staging")
    wait_for(lambda: sink_messages(stack, "notify", run["name"]), 60, "no P3 e-mail")
    responder = wait_for(lambda: incident(stack, found.id).flow_run_id, 60, "no incident run")
    api.wait(responder, until=("PAUSED",), timeout=60)
    api.resume(responder, {"resolve": True, "who": "served-oncall", "note": "bad parameters"})
    assert_completed(api.wait(responder, timeout=60), runpath.log)
    closed = incident(stack, found.id)
    assert closed.status == "resolved" and closed.resolved_by == "served-oncall"
    assert closed.postmortem is None  # P3: no post-mortem


def test_the_receiver_refuses_bad_requests_and_records_nothing(
    stack: StackInfo, webhook: str
) -> None:
    good = notification([alert()])
    count_incidents_before = count_incidents(stack)
    refused = {
        "bad token": (post_alerts(stack, good, token="not-the-token"), 401),
        "malformed JSON": (post_alerts(stack, b"{not json"), 400),
        "version 3": (post_alerts(stack, {**good, "version": "3"}), 400),
        "2 MiB": (post_alerts(stack, b"[" + b" " * (2 * 1024 * 1024) + b"]"), 413),
    }
    for what, (answer, status) in refused.items():
        assert answer.status_code == status, f"{what}: {answer.status_code} {answer.text}"
    unknown = post_alerts(stack, resolved(good))  # nothing open for this group
    assert unknown.status_code == 200 and unknown.json()["status"] == "ignored"
    assert count_incidents(stack) == count_incidents_before
