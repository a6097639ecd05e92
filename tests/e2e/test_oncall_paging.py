"""Pages follow the on-call schedule: the incident flow pages whoever the schedule has on call
at the moment each page is sent, at their own channel (devstack ``custom-webhook/page-<name>``
blocks, posting to the sink's ``page-<name>``), and falls back to the routing block's
channels when there is no schedule or a person has no channel.

Each case writes its schedule (``OPSFLOWS_ONCALL_FILE``), opens a P1 incident in the ops
database as the Alertmanager receiver does (``record_opening``) and runs the ``incident``
flow in this process against the stack's Prefect server, with the escalation shrunk (the
secondary paged 1 s after the incident opened, the lead after 2 s, the run watching for 4 s;
nobody acknowledges). The served path (the receiver starting the served runbook) is covered
for routing by tests/served/test_incident_matrix.py; the schedule is read by the same
``send_page`` in both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from decisions.incidents import Opening
from devstack.stack import StackInfo
from opsflows.settings import get_settings
from tests.incident_support import ops_target, sink_messages, timeline

pytestmark = pytest.mark.timeout(300)

PEOPLE = ("alice", "bob", "carol", "dave", "frank")
FAST = {
    "OPSFLOWS_INCIDENT_SECONDARY_AFTER_S": "1",
    "OPSFLOWS_INCIDENT_LEAD_AFTER_S": "2",
    "OPSFLOWS_INCIDENT_WATCH_S": "4",
}


@pytest.fixture
def oncall_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bootstrapped: Any
) -> Iterator[Path]:
    """Where this case's schedule goes; the settings re-read with it and the short delays."""
    path = tmp_path / "oncall.yaml"
    monkeypatch.setenv("OPSFLOWS_ONCALL_FILE", str(path))
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()  # monkeypatch restores the environment after this


def write_schedule(path: Path, now: datetime, overrides: list[dict[str, Any]], **more: Any) -> None:
    """alice, bob, carol weekly from 10 days ago (so now is shift 1: bob primary, carol
    secondary), dave lead, everyone with their devstack channel unless ``channels`` says."""
    doc = {
        "version": 1,
        "timezone": "UTC",
        "rotation": {
            "start": (now - timedelta(days=10)).isoformat(),
            "shift_days": 7,
            "primary": ["alice", "bob", "carol"],
        },
        "overrides": overrides,
        "escalation": {"lead": "dave"},
        "channels": {p: [f"custom-webhook/page-{p}"] for p in PEOPLE},
        **more,
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")


def open_p1(stack: StackInfo) -> tuple[int, datetime, str]:
    """A P1 incident of a group of its own; its id, when it opened, a marker in its title."""
    from tasks.incidents import record_opening

    marker = f"oncall-{uuid.uuid4().hex[:8]}"
    opening = Opening(
        group_key=f'{{}}:{{alertname="{marker}"}}',
        source="alertmanager",
        title=f"OncallTest {marker}",
        severity="P1",
        alerts=({"fingerprint": marker, "status": "firing", "labels": {"alertname": marker}},),
        environment="staging",
    )
    recorded = record_opening.fn(ops_target(stack), opening)
    assert recorded.opened and recorded.incident is not None
    return recorded.incident.id, recorded.incident.triggered_at, marker


def respond(incident_id: int, **parameters: Any) -> dict[str, Any]:
    from flows.incident import incident

    result: dict[str, Any] = incident(incident_id=incident_id, **parameters)
    return result


def paged(stack: StackInfo, marker: str) -> dict[str, list[str]]:
    """Per sink channel, the subjects of the pages that name ``marker``."""
    channels = [f"page-{p}" for p in PEOPLE] + ["page", "page-secondary", "page-lead"]
    found = {
        c: [str(m["body"]["subject"]) for m in sink_messages(stack, c, marker)] for c in channels
    }
    return {c: subjects for c, subjects in found.items() if subjects}


def test_pages_follow_the_rotation_and_an_override_that_starts_after_the_incident_opened(
    stack: StackInfo, oncall_file: Path
) -> None:
    now = datetime.now(UTC)
    incident_id, opened_at, marker = open_p1(stack)
    # The lead changes one second after the incident opened, before its lead page (2 s).
    lead_swap = {
        "start": (opened_at + timedelta(seconds=1)).isoformat(),
        "end": (opened_at + timedelta(hours=1)).isoformat(),
        "role": "lead",
        "replaces": "dave",
        "by": "frank",
        "reason": "dave boarded a plane",
    }
    write_schedule(oncall_file, now, [lead_swap])
    result = respond(incident_id)
    assert result["status"] == "triggered"  # nobody acknowledged: all three levels paged
    pages = paged(stack, marker)
    assert set(pages) == {"page-bob", "page-carol", "page-frank"}, pages
    assert "ESCALATED" not in pages["page-bob"][0]
    assert pages["page-carol"][0].startswith("[P1] ESCALATED to secondary")
    assert pages["page-frank"][0].startswith("[P1] ESCALATED to lead")
    events = {e.kind: e.text for e in timeline(stack, incident_id)}
    assert events["paged on-call"].endswith("(to bob)")
    assert events["paged lead"].endswith("(to frank)")


def test_an_override_for_now_pages_the_person_who_covers(
    stack: StackInfo, oncall_file: Path
) -> None:
    now = datetime.now(UTC)
    cover = {
        "start": (now - timedelta(hours=1)).isoformat(),
        "end": (now + timedelta(hours=1)).isoformat(),
        "role": "primary",
        "replaces": "bob",
        "by": "alice",
        "reason": "bob at the dentist",
    }
    write_schedule(oncall_file, now, [cover])
    incident_id, _, marker = open_p1(stack)
    respond(incident_id)
    pages = paged(stack, marker)
    assert set(pages) == {"page-alice", "page-carol", "page-dave"}, pages  # not bob
    body = sink_messages(stack, "page-alice", marker)[0]["body"]["body"]
    assert "Paged: alice (primary per" in body


def test_people_with_channels_are_paged_even_without_a_routing_block(
    stack: StackInfo, oncall_file: Path
) -> None:
    write_schedule(oncall_file, datetime.now(UTC), [])
    incident_id, _, marker = open_p1(stack)
    respond(incident_id, routing="no-such-routing")  # the run logs that it has no routing
    assert set(paged(stack, marker)) == {"page-bob", "page-carol", "page-dave"}


def test_without_a_channel_or_a_schedule_pages_follow_the_routing(
    stack: StackInfo, oncall_file: Path
) -> None:
    now = datetime.now(UTC)
    write_schedule(oncall_file, now, [], channels={"bob": ["custom-webhook/page-bob"]})
    incident_id, _, marker = open_p1(stack)
    respond(incident_id)
    pages = paged(stack, marker)
    # bob is on call (his channel); carol and dave have none: the routing's channels.
    assert set(pages) == {"page-bob", "page-secondary", "page-lead"}, pages
    assert "(to carol)" in {e.kind: e.text for e in timeline(stack, incident_id)}["paged secondary"]

    oncall_file.unlink()  # no schedule at all: everything as the routing block says
    incident_id, _, marker = open_p1(stack)
    respond(incident_id)
    assert set(paged(stack, marker)) == {"page", "page-secondary", "page-lead"}
    paged_texts = [e.text for e in timeline(stack, incident_id) if e.kind.startswith("paged ")]
    assert paged_texts and not any("(to " in t for t in paged_texts)


def test_a_schedule_that_does_not_validate_never_stops_a_page(
    stack: StackInfo, oncall_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    write_schedule(oncall_file, now, [], escalation={"lead": "mallory"})  # not in roles.yaml
    incident_id, _, marker = open_p1(stack)
    respond(incident_id)
    assert set(paged(stack, marker)) == {"page", "page-secondary", "page-lead"}
    events = timeline(stack, incident_id)
    assert [e.text for e in events if e.kind == "paged on-call"] == ["2 channels delivered"]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("page to on-call")]
    assert said and "escalation.lead names 'mallory'" in said[0]  # the run says why, and the fix
