"""Incident rules: the paging plan, alert merges, watchdogs, triage, the post-mortem draft
(a group that fires again after it was resolved: test_incident_flapping.py)."""

from __future__ import annotations

from datetime import timedelta
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
    Event,
    earlier_statuses,
    merge_alerts,
    page_text,
    paging_plan,
)
from decisions.postmortem import form_description, postmortem_markdown, timeline_markdown
from decisions.watchdogs import watchdog_opening
from tests.alertmanager_support import alert
from tests.incident_facts_support import DELAYS, T0, incident


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
