"""Alertmanager notifications: the bearer token, the version-4 format, what a group says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from decisions.alertmanager import bearer_valid, parse_notification
from decisions.incidents import alert_opening
from decisions.webhook import Rejected
from tests.alertmanager_support import alert, notification, resolved


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def test_a_firing_group_names_its_severity_runbook_and_environment() -> None:
    payload = notification(
        [
            alert("DiskFilling", "P3", runbook="disk-full", summary="80% full"),
            alert("ServiceDown", "P1", runbook="service-down", summary="no answers"),
        ]
    )
    group = parse_notification(body(payload))
    assert group.status == "firing" and len(group.alerts) == 2
    assert group.severity == "P1"  # the most severe firing alert leads
    assert group.label("runbook") == "service-down"
    assert group.label("environment") == "production"  # common to the group
    assert group.title == "DiskFilling, ServiceDown: no answers"
    assert group.alerts[0].ends_at is None  # Go's zero time: still firing
    opening = alert_opening(group)
    assert (opening.severity, opening.runbook, opening.resolved) == ("P1", "service-down", False)
    assert {a["fingerprint"] for a in opening.alerts} == {a.fingerprint for a in group.alerts}


def test_resolved_group_and_nanosecond_times() -> None:
    payload = resolved(notification([alert()]))
    payload["alerts"][0]["endsAt"] = "2026-01-02T03:04:05.123456789Z"
    group = parse_notification(body(payload))
    assert group.status == "resolved" and group.alerts[0].ends_at is not None
    assert alert_opening(group).resolved


@pytest.mark.parametrize(
    ("label", "severity"), [("P2", "P2"), ("p4", "P4"), ("critical", "P2"), (None, "P2")]
)
def test_severity_labels(label: str | None, severity: str) -> None:
    item = alert()
    if label is None:
        del item["labels"]["severity"]
    else:
        item["labels"]["severity"] = label
    assert parse_notification(body(notification([item]))).severity == severity


@pytest.mark.parametrize(
    ("header", "valid"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("Bearer  s3cret ", True),
        ("Bearer wrong", False),
        ("Basic s3cret", False),
        ("Bearer ", False),
        ("s3cret", False),
        (None, False),
    ],
)
def test_bearer_token(header: str | None, valid: bool) -> None:
    assert bearer_valid(b"s3cret", header) is valid
    assert bearer_valid(b"", "Bearer ") is False


def _broken(change: Any) -> bytes:
    payload = notification([alert()])
    change(payload)
    return body(payload)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (_broken(lambda p: p.update(version="3")), "version"),
        (_broken(lambda p: p.update(status="pending")), "status"),
        (_broken(lambda p: p.pop("groupKey")), "groupKey"),
        (_broken(lambda p: p.update(alerts=[])), "non-empty"),
        (_broken(lambda p: p["alerts"][0].pop("fingerprint")), "fingerprint"),
        (_broken(lambda p: p["alerts"][0].update(startsAt="yesterday")), "startsAt"),
        (_broken(lambda p: p["alerts"][0].update(startsAt="2026-01-01T00:00:00")), "time zone"),
        (_broken(lambda p: p["alerts"][0]["labels"].update(n=1)), "labels"),
        (_broken(lambda p: p["alerts"].append(dict(p["alerts"][0]))), "repeat"),
    ],
)
def test_malformed_notifications_are_400(raw: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_notification(raw)
    assert caught.value.status == 400 and reason in caught.value.reason
