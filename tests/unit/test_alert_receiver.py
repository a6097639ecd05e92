"""The /alertmanager endpoint around the rules: token, size, format, one incident per group.

The desk (incidents table + Prefect) is an in-memory fake with the same contract as
``tasks.incidents.record_opening``: one open incident per group key, merges by fingerprint,
reopens a flapping group's incident (``decisions.incidents.reopening``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from decisions.incidents import Incident, Opening, merge_alerts, more_severe, reopening
from deployments.webhook import Unavailable
from tasks.incidents import Recorded
from tests.alertmanager_support import alert, notification, post_args, resolved
from tests.webhook_support import TABLE

TOKEN = "unit-alertmanager-token"


class FakeDesk:
    def __init__(self) -> None:
        self.incidents: dict[int, Incident] = {}
        self.started: list[tuple[int, str]] = []
        self.woken: list[int] = []
        self.fail_starts = 0
        self.alive: set[str] = set()  # flow runs not final yet

    def record(self, opening: Opening) -> Recorded:
        group = [i for i in self.incidents.values() if i.group_key == opening.group_key]
        current = next((i for i in group if i.is_open), None)
        if current is None:
            if opening.resolved:
                return Recorded(None)
            latest = max(group, key=lambda i: i.id, default=None)
            back = reopening(latest, opening, datetime.now(UTC), 1800)
            if latest is not None and back is not None:
                alerts, changes = merge_alerts(latest.alerts, opening.alerts)
                reopened = replace(
                    latest,
                    alerts=tuple(alerts),
                    status=back.status,
                    resolved_at=None,
                    resolved_by=None,
                    flow_run_id=None,
                    reopenings=latest.reopenings + 1,
                )
                self.incidents[latest.id] = reopened
                return Recorded(
                    reopened,
                    changes=tuple(changes),
                    reopened=True,
                    previous_run_id=latest.flow_run_id,
                )
            new = Incident(
                id=len(self.incidents) + 1,
                group_key=opening.group_key,
                source=opening.source,
                title=opening.title,
                severity=opening.severity,
                status="triggered",
                triggered_at=datetime.now(UTC),
                alerts=opening.alerts,
            )
            self.incidents[new.id] = new
            return Recorded(new, opened=True)
        alerts, changes = merge_alerts(current.alerts, opening.alerts)
        severity = more_severe(current.severity, opening.severity)
        if severity != current.severity:
            changes.append(f"severity raised from {current.severity} to {severity}")
        status = "resolved" if opening.resolved else current.status
        updated = replace(current, alerts=tuple(alerts), severity=severity, status=status)
        if opening.resolved:
            updated = replace(updated, resolved_at=datetime.now(UTC), resolved_by=opening.source)
        self.incidents[current.id] = updated
        return Recorded(updated, resolved=opening.resolved, changes=tuple(changes))

    def start(self, incident: Incident, key: str) -> str:
        if self.fail_starts:
            self.fail_starts -= 1
            raise Unavailable("cannot start incident/incident (ConnectError)")
        self.started.append((incident.id, key))
        run = "run-" + key.removeprefix("incident-")
        self.incidents[incident.id] = replace(self.incidents[incident.id], flow_run_id=run)
        return run

    def keep(self, incident: Incident, flow_run_id: str) -> bool:
        if flow_run_id not in self.alive:
            return False
        self.incidents[incident.id] = replace(self.incidents[incident.id], flow_run_id=flow_run_id)
        return True

    def wake(self, incident: Incident) -> str:
        self.woken.append(incident.id)
        return "resumed"


@pytest.fixture
def desk() -> FakeDesk:
    return FakeDesk()


@pytest.fixture
def client(tmp_path: Any, desk: FakeDesk) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from deployments.alert_receiver import AlertReceiver
    from deployments.webhook import ReplayStore, create_app

    async def token() -> bytes:
        return TOKEN.encode()

    async def no_ci(run: Any) -> Any:
        raise AssertionError("the CI route must not start anything")

    receiver = AlertReceiver(token, desk)
    store = ReplayStore(tmp_path / "deliveries.sqlite")
    app = create_app(TABLE, store, token, no_ci, alerts=receiver)
    with TestClient(app) as test_client:
        yield test_client


def post(client: Any, payload: Any, token: str = TOKEN) -> Any:
    return client.post("/alertmanager", **post_args(payload, token))


def test_one_incident_and_one_run_per_firing_group(client: Any, desk: FakeDesk) -> None:
    payload = notification([alert(fingerprint="a1")])
    first = post(client, payload)
    assert first.status_code == 202, first.text
    assert first.json() == {
        "status": "opened",
        "incident_id": 1,
        "severity": "P1",
        "flow_run_id": "run-1",
    }
    again = post(client, payload)  # a redelivery
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    grown = notification([*payload["alerts"], alert("HighErrors", "P2")], payload["groupKey"])
    more = post(client, grown)
    assert more.status_code == 200 and more.json()["status"] == "updated"
    assert len(desk.incidents) == 1 and desk.started == [(1, "incident-1")]
    assert desk.woken == []


def test_resolved_closes_the_incident_and_wakes_its_run(client: Any, desk: FakeDesk) -> None:
    payload = notification([alert()])
    post(client, payload)
    done = post(client, resolved(payload))
    assert done.status_code == 200 and done.json()["status"] == "resolved"
    assert desk.incidents[1].status == "resolved" and desk.woken == [1]
    # Redelivered after closing, or a group nobody opened: nothing to do, and no retry asked.
    for late in (resolved(payload), resolved(notification([alert()]))):
        answer = post(client, late)
        assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    assert len(desk.incidents) == 1 and desk.woken == [1]


def test_a_raised_severity_wakes_the_run_to_page_again(client: Any, desk: FakeDesk) -> None:
    payload = notification([alert("Slow", "P3", fingerprint="s1")])
    post(client, payload)
    worse = notification([*payload["alerts"], alert("Down", "P1")], payload["groupKey"])
    answer = post(client, worse)
    assert answer.json()["severity"] == "P1" and desk.woken == [1]


def test_a_failed_start_is_503_and_the_redelivery_starts_the_same_incident(
    client: Any, desk: FakeDesk
) -> None:
    desk.fail_starts = 1
    payload = notification([alert()])
    assert post(client, payload).status_code == 503
    retried = post(client, payload)
    assert retried.status_code == 202 and retried.json()["incident_id"] == 1
    assert len(desk.incidents) == 1 and desk.started == [(1, "incident-1")]


def test_a_flapping_group_reopens_its_incident_with_a_run_that_carries_on(
    client: Any, desk: FakeDesk
) -> None:
    payload = notification([alert(fingerprint="a1")])
    assert post(client, payload).json()["status"] == "opened"
    assert post(client, resolved(payload)).json()["status"] == "resolved"
    back = post(client, payload)  # fires again: Alertmanager resolved it a moment ago
    assert back.status_code == 202, back.text
    assert back.json() == {
        "status": "reopened",
        "incident_id": 1,
        "severity": "P1",
        "flow_run_id": "run-1-reopened-1",
    }
    assert post(client, payload).json()["status"] == "unchanged"  # a redelivery
    post(client, resolved(payload))
    again = post(client, payload)  # and once more: a run of its own again
    assert again.json()["status"] == "reopened" and again.json()["incident_id"] == 1
    assert len(desk.incidents) == 1 and desk.incidents[1].reopenings == 2
    assert desk.started == [
        (1, "incident-1"),
        (1, "incident-1-reopened-1"),
        (1, "incident-1-reopened-2"),
    ]


def test_a_reopened_incident_whose_run_is_still_alive_keeps_it(client: Any, desk: FakeDesk) -> None:
    payload = notification([alert()])
    post(client, payload)
    post(client, resolved(payload))
    desk.alive.add("run-1")  # woken by the resolution, it has not closed the incident yet
    back = post(client, payload)
    assert back.status_code == 202 and back.json()["status"] == "reopened"
    assert back.json()["flow_run_id"] == "run-1" and desk.incidents[1].flow_run_id == "run-1"
    assert desk.started == [(1, "incident-1")] and desk.woken == [1, 1]  # woken to look again


def test_a_reopening_whose_run_cannot_start_is_503_and_the_retry_starts_it(
    client: Any, desk: FakeDesk
) -> None:
    payload = notification([alert()])
    post(client, payload)
    post(client, resolved(payload))
    desk.fail_starts = 1
    assert post(client, payload).status_code == 503
    retried = post(client, payload)  # Alertmanager retries: the incident is open, no run yet
    assert retried.status_code == 202 and retried.json()["status"] == "reopened"
    assert desk.started == [(1, "incident-1"), (1, "incident-1-reopened-1")]


def test_a_group_a_person_resolved_opens_a_new_incident(client: Any, desk: FakeDesk) -> None:
    payload = notification([alert()])
    post(client, payload)
    desk.incidents[1] = replace(
        desk.incidents[1], status="resolved", resolved_at=datetime.now(UTC), resolved_by="alice"
    )
    answer = post(client, payload)
    assert answer.status_code == 202 and answer.json()["status"] == "opened"
    assert answer.json()["incident_id"] == 2 and len(desk.incidents) == 2


@pytest.mark.parametrize(
    ("token", "payload", "status"),
    [
        ("wrong-token", notification([alert()]), 401),
        ("", notification([alert()]), 401),
        (TOKEN, b"{not json", 400),
        (TOKEN, {**notification([alert()]), "version": "3"}, 400),
        (TOKEN, b"[" + b" " * (2 * 1024 * 1024) + b"]", 413),
    ],
)
def test_refused_requests_record_nothing(
    client: Any, desk: FakeDesk, token: str, payload: Any, status: int
) -> None:
    answer = post(client, payload, token)
    assert answer.status_code == status, answer.text
    assert "error" in answer.json() and desk.incidents == {} and desk.started == []
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"


def test_missing_token_header_is_401(client: Any, desk: FakeDesk) -> None:
    body = json.dumps(notification([alert()])).encode()
    assert client.post("/alertmanager", content=body).status_code == 401
    assert client.get("/healthz").json()["alertmanager"] is True


def test_the_receiver_reads_the_token_block_bootstrap_saves() -> None:
    from deployments.alert_receiver import TOKEN_BLOCK
    from devstack.bootstrap import ALERTMANAGER_TOKEN_BLOCK

    assert TOKEN_BLOCK == ALERTMANAGER_TOKEN_BLOCK
