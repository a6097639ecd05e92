"""Incident rules for a group that fires again after Alertmanager resolved it: reopening,
its own run, paging no level twice, what the post-mortem draft says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from decisions.incidents import (
    Event,
    Incident,
    Opening,
    Reopening,
    pause_expired,
    reopening,
    told_since_opening,
    unannounced_reopening,
)
from decisions.postmortem import postmortem_markdown
from tests.alertmanager_support import alert
from tests.incident_facts_support import DELAYS, T0, incident

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
