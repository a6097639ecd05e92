"""Incident rules: the paging plan, alert merges, watchdogs, triage, the post-mortem draft."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from decisions.crashed_runs import RunFacts
from decisions.incident_triage import (
    TRIAGE,
    alert_endpoints,
    triage_for,
    triage_parameters,
)
from decisions.incidents import (
    Delays,
    Event,
    Incident,
    Opening,
    Reopening,
    earlier_statuses,
    merge_alerts,
    page_text,
    paging_plan,
    pause_expired,
    reopening,
    told_since_opening,
    unannounced_reopening,
)
from decisions.postmortem import form_description, postmortem_markdown, timeline_markdown
from decisions.watchdogs import watchdog_opening
from tests.alertmanager_support import alert

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DELAYS = Delays(p2_page_after_s=900, secondary_after_s=300, lead_after_s=600)


def test_paging_plan_follows_the_runbook_table() -> None:
    p1 = paging_plan("P1", DELAYS)
    assert [(p.level, p.channel, p.after_s) for p in p1] == [
        ("on-call", None, 0),
        ("secondary", "secondary", 300),
        ("lead", "lead", 600),
    ]
    assert [p.after_s for p in paging_plan("P2", DELAYS)] == [900, 1200, 1500]
    assert [(p.level, p.after_s) for p in paging_plan("P3", DELAYS)] == [("email", 0)]
    assert paging_plan("P4", DELAYS) == ()


def test_states_only_move_forward() -> None:
    assert earlier_statuses("acknowledged") == ("triggered",)
    assert earlier_statuses("resolved") == ("triggered", "acknowledged", "mitigated")


def test_a_redelivered_notification_changes_nothing() -> None:
    first = [alert("ServiceDown", fingerprint="a1"), alert("HighErrors", fingerprint="b2")]
    merged, changes = merge_alerts([], first)
    assert len(merged) == 2 and len(changes) == 2
    again, none = merge_alerts(merged, first)
    assert again == merged and none == []
    gone = [{**first[0], "status": "resolved"}]
    after, resolved = merge_alerts(again, gone)
    assert resolved == ["alert ServiceDown (production) resolved"] and len(after) == 2
    _, back = merge_alerts(after, first[:1])
    assert back == ["alert ServiceDown (production) firing again"]


def facts(flow: str, state: str = "FAILED", **params: Any) -> RunFacts:
    return RunFacts(
        flow_run_id="0b6c6a3e-7c6e-4b8e-9a51-1f5f4a1f0c2d",
        name="brave-otter",
        flow_name=flow,
        deployment_name=flow,
        state_type=state,
        state_message="boom",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=5),
        created_at=T0,
        parameters=params,
    )


@pytest.mark.parametrize(
    ("run", "severity", "environment"),
    [
        (facts("staged-deploy", image="x"), "P2", "production"),
        (facts("staged-deploy", "CRASHED"), "P1", "production"),
        (facts("hotfix", environment="production"), "P2", "production"),
        (facts("scale", environment="staging", replicas=99), "P3", "staging"),
        (facts("backup-database"), "P2", None),
        (facts("rotate-credentials", "CRASHED"), "P2", None),
        (facts("restore-drill"), "P3", None),
        (facts("migrate-database", environment="served-1"), "P3", "served-1"),
    ],
)
def test_watchdog_opens_incidents_by_what_is_at_risk(
    run: RunFacts, severity: str, environment: str | None
) -> None:
    opening = watchdog_opening(run, "failed")
    assert not isinstance(opening, str)
    assert (opening.severity, opening.environment, opening.source) == (
        severity,
        environment,
        "watchdog",
    )
    assert opening.group_key == f"watchdog:{run.flow_name}/{run.flow_name}:{environment or '-'}"
    assert opening.alerts[0]["fingerprint"] == run.flow_run_id


def test_watchdog_leaves_alone_what_is_not_an_incident() -> None:
    assert "not a watched" in str(watchdog_opening(facts("stack-smoke"), None))
    assert "a person said no" in str(watchdog_opening(facts("staged-deploy"), "rejected"))
    assert "COMPLETED" in str(watchdog_opening(facts("scale", "COMPLETED"), None))


def incident(**changes: Any) -> Incident:
    base: dict[str, Any] = {
        "id": 7,
        "group_key": "{}:{alertname=ServiceDown}",
        "source": "alertmanager",
        "title": "ServiceDown: no answers",
        "severity": "P1",
        "status": "resolved",
        "triggered_at": T0,
        "runbook": "service-down",
        "environment": "production",
        "alerts": (alert(fingerprint="a1"),),
        "acknowledged_at": T0 + timedelta(seconds=400),
        "acknowledged_by": "alice",
        "resolved_at": T0 + timedelta(seconds=900),
        "resolved_by": "alertmanager",
        "pages": 2,
    }
    return Incident(**{**base, **changes})


def test_triage_table_names_a_deployment_per_runbook_label() -> None:
    from decisions.alert_labels import RUNBOOKS

    assert set(TRIAGE) == set(RUNBOOKS)  # every runbook label the alert rules carry
    triage = triage_for("service-down")
    assert triage is not None and triage.deployment == "service-down/service-down"
    assert triage_parameters(triage, incident()) == {"incident_id": 7, "environment": "production"}
    assert triage_for("no-such-runbook") is None and triage_for(None) is None


#: Runbook labels with no triage deployment yet: the incident pages and says so (a person
#: looks at the failed backup run; its own reruns are the fix).
NO_TRIAGE_YET = {"backup-failed"}


def test_every_alert_runbook_label_starts_a_catalog_deployment_that_takes_its_parameters() -> None:
    from decisions.alert_catalog import rules
    from deployments.catalog import runner_deployments

    deployments = {f"{d.flow_name}/{d.name}": d for d in runner_deployments()}
    labels = {rule.runbook for rule in rules()}
    assert "cert-expiry" in labels  # the blackbox exporter's CertificateExpiry
    for label in sorted(labels - NO_TRIAGE_YET):
        triage = triage_for(label)
        assert triage is not None, label
        assert triage.deployment in deployments, f"{label}: no deployment {triage.deployment}"
        accepts = deployments[triage.deployment]._parameter_openapi_schema.properties
        assert set(triage.parameters) <= set(accepts), (label, triage.parameters)
    for label in NO_TRIAGE_YET:  # when one gets a deployment, it leaves this list
        assert TRIAGE[label].deployment not in deployments


def test_cert_expiry_renews_the_certificate_of_the_alert_instance() -> None:
    triage = triage_for("cert-expiry")
    assert triage is not None and triage.per_endpoint
    assert triage.deployment == "renew-certificate/renew-certificate"
    found = incident(runbook="cert-expiry")
    assert triage_parameters(triage, found, "devstack") == {
        "endpoint": "devstack",
        "incident_id": 7,
    }
    service = triage_for("service-down")
    assert service is not None and not service.per_endpoint


@pytest.mark.parametrize(("severity", "starts"), [("P1", True), ("P2", True), ("P3", False)])
def test_cert_expiry_renews_only_inside_the_page_threshold(severity: str, starts: bool) -> None:
    """The P2 rule is under 7 days, the P3 one under 30: the incident renews only what pages,
    as the daily check does; a P3 says so on the timeline."""
    triage = triage_for("cert-expiry")
    assert triage is not None
    why = triage.refusal(incident(runbook="cert-expiry", severity=severity))
    if starts:
        assert why is None
    else:
        assert why is not None
        assert why.startswith("no automated triage for cert-expiry at P3:")
        assert "renew-certificate" in why and "under 7 days" in why
    service = triage_for("service-down")
    assert service is not None and service.refusal(incident(severity=severity)) is None


KNOWN = [("devstack", "https://127.0.0.1:18443"), ("api", "https://API.example.org")]


def cert_alert(instance: str | None, status: str = "firing") -> dict[str, Any]:
    labels = {"instance": instance} if instance is not None else {}
    return alert("CertificateExpiry", "P2", status, runbook="cert-expiry", **labels)


def test_alert_endpoints_match_the_firing_instances_to_the_inventory() -> None:
    found = incident(
        alerts=(
            cert_alert("https://127.0.0.1:18443"),
            cert_alert("https://127.0.0.1:18443"),  # another rule, the same instance
            cert_alert("api.example.org:443"),  # host:port, other case: the same address
            cert_alert("https://127.0.0.1:9999", status="resolved"),  # no longer firing
        )
    )
    assert alert_endpoints(found, KNOWN) == (["devstack", "api"], [])


def test_alert_endpoints_report_the_instances_that_name_no_endpoint() -> None:
    found = incident(alerts=(cert_alert("https://10.0.0.9:8443"), cert_alert(None)))
    assert alert_endpoints(found, KNOWN) == ([], ["https://10.0.0.9:8443", "(no instance label)"])
    assert alert_endpoints(incident(alerts=(cert_alert("https://127.0.0.1:18443"),)), []) == (
        [],
        ["https://127.0.0.1:18443"],
    )


def test_postmortem_draft_has_every_section_and_asks_the_right_questions() -> None:
    events = [
        Event(T0, "triggered", "P1 opened by alertmanager"),
        Event(T0 + timedelta(seconds=1), "paged on-call", "2 channels delivered"),
        Event(T0 + timedelta(seconds=300), "paged secondary", "1 channels delivered"),
    ]
    entries = [
        {
            "started_at": T0 + timedelta(seconds=500),
            "operation": "rollback",
            "status": "succeeded",
            "impact": "production: v2 -> v1",
            "flow_run_id": "r-1",
        }
    ]
    text = postmortem_markdown(incident(), events, entries)
    for section in ("Summary", "Timeline", "Alerts", "Measurements", "Actions", "Open questions"):
        assert f"## {section}" in text
    assert "| time_to_acknowledge_s | 400.0 |" in text and "| time_to_resolve_s | 900.0 |" in text
    assert "production: v2 -> v1" in text and "paged secondary" in text
    assert "beyond the runbook's 300 s" in text and "escalated past the on-call" in text
    assert "No automated triage ran for service-down" in text


def test_timeline_form_and_page_texts() -> None:
    open_one = incident(status="triggered", acknowledged_at=None, resolved_at=None, pages=1)
    events = [Event(T0, "triggered", "P1 opened | by alertmanager")]
    assert "P1 opened \\| by alertmanager" in timeline_markdown(open_one, events)
    plan = paging_plan("P1", DELAYS)
    asked = form_description(open_one, events, "acknowledge", plan[1])
    assert "**secondary** is paged 300 s after" in asked
    assert "**Resolve**" in form_description(open_one, events, "resolve", None)
    subject, body = page_text(open_one, "secondary", "http://ui/runs/flow-run/x")
    assert subject.startswith("ESCALATED to secondary: incident 7")
    assert "http://ui/runs/flow-run/x" in body


# --- flapping: a group Alertmanager resolved fires again ------------------------------------

WINDOW = 1800.0
RESOLVED_AT = T0 + timedelta(seconds=900)  # incident()'s resolution


def firing(**changes: Any) -> Opening:
    base: dict[str, Any] = {
        "group_key": "{}:{alertname=ServiceDown}",
        "source": "alertmanager",
        "title": "ServiceDown: no answers",
        "severity": "P1",
        "alerts": (alert(fingerprint="a1"),),
    }
    return Opening(**{**base, **changes})


def test_a_group_that_fires_again_soon_after_alertmanager_resolved_it_reopens() -> None:
    back = reopening(incident(), firing(), RESOLVED_AT + timedelta(seconds=42), WINDOW)
    assert back == Reopening(incident_id=7, status="acknowledged", after_s=42.0)
    assert (
        back.text == "the group fired again 42 s after it resolved (flapping); acknowledged again"
    )
    # Nobody had acknowledged it: it is triggered again (escalation carries on).
    never_acked = incident(acknowledged_at=None, acknowledged_by=None, status="resolved")
    again = reopening(never_acked, firing(), RESOLVED_AT, WINDOW)
    assert again is not None and again.status == "triggered" and again.after_s == 0.0
    # Mitigated before it resolved: the mitigation did not hold, acknowledged again.
    mitigated = incident(mitigated_at=T0 + timedelta(seconds=600), mitigated_by="bob")
    kept = reopening(mitigated, firing(), RESOLVED_AT, WINDOW)
    assert kept is not None and kept.status == "acknowledged"


@pytest.mark.parametrize(
    ("latest", "opening", "after_s", "window_s", "why"),
    [
        (incident(), firing(), WINDOW, WINDOW, "the window has passed"),
        (incident(), firing(), WINDOW + 3600, WINDOW, "long after"),
        (incident(), firing(), 1, 0.0, "a window of 0 turns reopening off"),
        (incident(resolved_by="alice"), firing(), 1, WINDOW, "a person closed it deliberately"),
        (incident(), firing(resolved=True), 1, WINDOW, "a resolved notification opens nothing"),
        (
            incident(status="acknowledged", resolved_at=None, resolved_by=None),
            firing(),
            1,
            WINDOW,
            "it is open: the notification updates it",
        ),
        (None, firing(), 1, WINDOW, "the group never had an incident"),
        (incident(group_key="{}:{alertname=Other}"), firing(), 1, WINDOW, "another group"),
        (
            incident(source="watchdog", resolved_by="watchdog"),
            firing(source="watchdog"),
            1,
            WINDOW,
            "only Alertmanager resolves by itself",
        ),
    ],
)
def test_what_does_not_reopen(
    latest: Incident | None, opening: Opening, after_s: float, window_s: float, why: str
) -> None:
    now = RESOLVED_AT + timedelta(seconds=after_s)
    assert reopening(latest, opening, now, window_s) is None, why


def test_a_reopened_incident_gets_a_run_of_its_own_and_tells_incidents_once() -> None:
    assert incident().run_key == "incident-7"
    assert incident(reopenings=2).run_key == "incident-7-reopened-2"
    resolved_then_back = [
        Event(T0, "announced", "#incidents: triggered (1)"),
        Event(T0, "resolved", "resolved: alertmanager reports the group"),
        Event(T0, "announced", "#incidents: resolved by alertmanager (1)"),
        Event(T0, "reopened", "the group fired again 42 s after it resolved (flapping)"),
        Event(T0, "picked up", "flow run r2 responds"),
    ]
    back = unannounced_reopening(resolved_then_back)
    assert back is not None and back.text.startswith("the group fired again 42 s")
    told = [*resolved_then_back, Event(T0, "announced", "#incidents: reopened: ... (1)")]
    assert unannounced_reopening(told) is None
    assert unannounced_reopening(resolved_then_back[:3]) is None  # never reopened


def test_a_run_failed_only_because_its_pause_expired_is_told_apart() -> None:
    assert pause_expired("FAILED", "The flow was paused and never resumed.")
    assert not pause_expired("FAILED", "Flow run encountered an exception: GateRejected")
    assert not pause_expired("PAUSED", "The flow was paused and never resumed.")
    assert not pause_expired(None, None)


def test_incidents_hears_resolved_once_per_opening() -> None:
    """Two runs of one opening both see it closed: the second stays quiet; after a
    reopening, the next resolution is news again."""
    opened = [Event(T0, "announced", "#incidents: triggered (1)")]
    resolved = [*opened, Event(T0, "announced", "#incidents: resolved by alertmanager (sending)")]
    assert not told_since_opening(opened, "resolved by alertmanager")
    assert told_since_opening(resolved, "resolved by alertmanager")
    assert not told_since_opening(resolved, "resolved by ana")  # another text is news
    back = [*resolved, Event(T0, "reopened", "the group fired again 42 s after it resolved")]
    assert not told_since_opening(back, "resolved by alertmanager")
    assert not told_since_opening([], "triggered")


def test_a_reopened_incident_pages_no_level_twice() -> None:
    """The second run of a reopened incident pages only the levels not paged yet, and none
    once it was acknowledged (procedures.incident.due_pages on the reopened row)."""
    from procedures.incident import due_pages

    now = datetime.now(UTC)
    paged = [Event(now, "paged on-call", "1 channels delivered")]
    # Reopened 60 s after it triggered, nobody acknowledged: the on-call was paged already.
    back = incident(
        status="triggered",
        triggered_at=now - timedelta(seconds=60),
        acknowledged_at=None,
        acknowledged_by=None,
        resolved_at=None,
        resolved_by=None,
        reopenings=1,
    )
    assert due_pages(back, paged, DELAYS) == []
    # (the recorded page is what stops it: without it the on-call would be due)
    assert [p.level for p in due_pages(back, [], DELAYS)] == ["on-call"]
    # Long after: only the escalation levels whose time has come, never the on-call again.
    late = incident(
        status="triggered",
        triggered_at=now - timedelta(seconds=400),
        acknowledged_at=None,
        acknowledged_by=None,
        resolved_at=None,
        resolved_by=None,
    )
    assert [p.level for p in due_pages(late, paged, DELAYS)] == ["secondary"]
    # Acknowledged before it resolved: reopened as acknowledged, nobody is paged.
    acked = incident(status="acknowledged", resolved_at=None, resolved_by=None, reopenings=1)
    assert due_pages(acked, [], DELAYS) == []


def test_the_postmortem_draft_says_the_alert_flapped() -> None:
    text = postmortem_markdown(incident(reopenings=2), [], [])
    assert "| reopened (the alert flapped) | 2 times |" in text
    assert "fired again 2 times" in text
    assert "flapped" not in postmortem_markdown(incident(), [], [])


def test_a_pause_is_resumed_only_with_time_left_before_it_expires() -> None:
    from datetime import UTC, datetime, timedelta

    from decisions.incidents import RESUME_MARGIN_S, may_resume

    now = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
    assert may_resume(None, now)  # no timeout: it waits forever
    assert may_resume(now + timedelta(seconds=RESUME_MARGIN_S + 5), now)
    assert not may_resume(now + timedelta(seconds=RESUME_MARGIN_S - 1), now)
    assert not may_resume(now - timedelta(seconds=1), now)  # expired: resuming fails the run
