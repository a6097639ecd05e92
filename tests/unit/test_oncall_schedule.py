"""The on-call schedule: rotation, overrides, time zones, the next shift, where pages go, and
schedules that are refused with the file and what to fix (decisions/oncall*.py)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from decisions.access import RolesPolicy, parse_policy
from decisions.oncall import current_and_next, on_call_at, page_target, person_for_level
from decisions.oncall_policy import parse_schedule
from decisions.oncall_view import oncall_view, parse_at, render_text
from opsflows.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # Monday 09:00 in Berlin (CET)


def roles() -> RolesPolicy:
    return parse_policy(yaml.safe_load((REPO / "policy" / "roles.yaml").read_text()))


BASE: dict[str, Any] = {
    "version": 1,
    "timezone": "Europe/Berlin",
    "rotation": {
        "start": "2026-01-05T09:00:00+01:00",
        "shift_days": 7,
        "primary": ["alice", "bob", "carol"],
    },
    "escalation": {"lead": "dave"},
    "channels": {"alice": ["custom-webhook/page-alice"], "bob": "custom-webhook/page-bob"},
}


def schedule(**changes: Any) -> Any:
    doc = copy.deepcopy(BASE)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value
    return parse_schedule(doc, roles(), "oncall-test.yaml", "roles-test.yaml")


def refused(match: str, **changes: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError, match=match) as info:
        schedule(**changes)
    assert "oncall-test.yaml" in str(info.value)  # every error names the file
    assert info.value.hint
    return info.value


def test_the_rotation_moves_at_each_shift_boundary_and_the_secondary_is_the_next_person() -> None:
    s = schedule()
    week = timedelta(days=7)
    cases = [
        (T0, "alice", "bob"),
        (T0 + week - timedelta(seconds=1), "alice", "bob"),
        (T0 + week, "bob", "carol"),
        (T0 + 2 * week, "carol", "alice"),
        (T0 + 3 * week, "alice", "bob"),  # the list wraps around
    ]
    for at, primary, secondary in cases:
        who = on_call_at(s, at)
        assert (who.primary, who.secondary, who.lead) == (primary, secondary, "dave"), at


def test_shifts_change_at_the_local_wall_clock_time_across_daylight_saving() -> None:
    s = schedule()
    # 2026-03-29 is the switch to CEST: the Monday after, 09:00 Berlin is 07:00 UTC.
    before, after = datetime(2026, 3, 30, 6, 59, tzinfo=UTC), datetime(2026, 3, 30, 7, tzinfo=UTC)
    assert on_call_at(s, before).primary != on_call_at(s, after).primary
    now, _ = current_and_next(s, after)
    assert now.start == after and now.end == datetime(2026, 4, 6, 7, tzinfo=UTC)
    winter, _ = current_and_next(s, datetime(2026, 11, 2, 8, tzinfo=UTC))
    assert winter.start == datetime(2026, 11, 2, 8, tzinfo=UTC)  # CET again: 08:00 UTC


def test_a_start_date_with_a_change_time_or_a_start_instant_that_agrees_with_it() -> None:
    from datetime import date

    for start in (date(2026, 1, 5), "2026-01-05"):
        s = schedule(rotation={"start": start, "change_at": "09:00"})
        assert s.rotation.start == T0
    assert schedule(rotation={"start": date(2026, 1, 5), "change_at": 540}).rotation.start == T0
    assert schedule(rotation={"change_at": "09:00"}).rotation.start == T0  # agrees
    refused(
        "rotation.start is 09:00 in Europe/Berlin but change_at is 08:00",
        rotation={"change_at": "08:00"},
    )
    refused("rotation.start is a date without a time", rotation={"start": "2026-01-05"})
    refused("rotation.change_at 'noon' is not a time of day", rotation={"change_at": "noon"})
    refused("unknown keys in rotation: shift_hours", rotation={"shift_hours": 12})


def test_an_instant_in_any_zone_is_the_same_instant() -> None:
    s = schedule()
    boundary_in_new_york = datetime.fromisoformat("2026-01-12T03:00:00-05:00")  # 08:00 UTC
    assert on_call_at(s, boundary_in_new_york).primary == "bob"
    with pytest.raises(ConfigurationError, match="no time zone"):
        on_call_at(s, datetime(2026, 1, 12, 8))


def test_the_current_and_next_shift_say_when_and_who() -> None:
    s = schedule(rotation={"secondary": ["carol", "alice", "bob"]})
    now, following = current_and_next(s, T0 + timedelta(days=3))
    assert (now.index, now.start, now.end) == (0, T0, T0 + timedelta(days=7))
    assert (now.who.primary, now.who.secondary) == ("alice", "carol")
    assert (following.index, following.start) == (1, T0 + timedelta(days=7))
    assert (following.who.primary, following.who.secondary) == ("bob", "alice")


def test_an_override_inside_a_shift_wins_only_for_its_half_open_window() -> None:
    start, end = T0 + timedelta(days=1), T0 + timedelta(days=2)
    s = schedule(
        overrides=[
            {
                "start": start,
                "end": end,
                "role": "primary",
                "replaces": "alice",
                "by": "carol",
                "reason": "alice at a conference",
            }
        ]
    )
    assert on_call_at(s, start - timedelta(seconds=1)).primary == "alice"
    inside = on_call_at(s, start)
    assert inside.primary == "carol" and inside.secondary == "bob"
    assert [o.reason for o in inside.overrides] == ["alice at a conference"]
    assert on_call_at(s, end - timedelta(microseconds=1)).primary == "carol"
    assert on_call_at(s, end).primary == "alice"  # the end is not part of it
    now, _ = current_and_next(s, start)
    assert now.who.primary == "carol" and (now.start, now.end) == (T0, T0 + timedelta(days=7))


def test_an_override_with_replaces_applies_only_while_that_person_holds_the_role() -> None:
    s = schedule(
        overrides=[
            {
                "start": T0 + timedelta(days=6),
                "end": T0 + timedelta(days=8),
                "role": "primary",
                "replaces": "alice",
                "by": "carol",
                "reason": "swap",
            }
        ]
    )
    assert on_call_at(s, T0 + timedelta(days=6, hours=1)).primary == "carol"
    assert on_call_at(s, T0 + timedelta(days=7, hours=1)).primary == "bob"  # bob's own shift


def test_the_lead_and_the_secondary_can_be_overridden_and_naive_times_are_local() -> None:
    s = schedule(
        overrides=[
            {
                "start": "2026-01-06T09:00",
                "end": "2026-01-07T09:00",
                "role": "lead",
                "by": "frank",
                "reason": "dave travels",
            },
            {
                "start": "2026-01-06T09:00",
                "end": "2026-01-07T09:00",
                "role": "secondary",
                "by": "carol",
                "reason": "bob sick",
            },
        ]
    )
    at = datetime(2026, 1, 6, 8, tzinfo=UTC)  # 09:00 Berlin
    assert person_for_level(s, "lead", at) == "frank"
    assert person_for_level(s, "secondary", at) == "carol"
    assert person_for_level(s, "on-call", at) == "alice"
    assert person_for_level(s, "email", at) is None
    assert person_for_level(s, "lead", at - timedelta(seconds=1)) == "dave"


def test_overlapping_overrides_of_one_role_are_refused_naming_both() -> None:
    one = {
        "start": T0 + timedelta(days=1),
        "end": T0 + timedelta(days=3),
        "role": "primary",
        "by": "carol",
        "reason": "a",
    }
    two = {
        **one,
        "start": T0 + timedelta(days=2),
        "end": T0 + timedelta(days=4),
        "by": "bob",
        "reason": "b",
    }
    error = refused(
        r"overrides\[0\] and overrides\[1\] both replace the primary", overrides=[one, two]
    )
    assert "must not overlap" in str(error)
    # Back to back (the first's end is the second's start) is fine: the windows are half-open.
    adjacent = {**two, "start": one["end"]}
    s = schedule(overrides=[one, {**adjacent, "by": "carol"}])
    assert on_call_at(s, one["end"]).primary == "carol"


def test_nobody_before_the_first_shift_is_an_error_not_a_silence() -> None:
    with pytest.raises(ConfigurationError, match="nobody is on call .* rotation starts"):
        on_call_at(schedule(), T0 - timedelta(seconds=1))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"rotation": {"primary": ["alice", "zed"]}},
            r"rotation.primary\[1\] names 'zed'.*on-call",
        ),
        (
            {"rotation": {"primary": ["alice", "dave"]}},
            "'dave', who is not a member of the `on-call`",
        ),
        ({"escalation": {"lead": "dana"}}, "escalation.lead names 'dana'.*`devops`"),
        ({"escalation": None}, "escalation.lead is missing"),
        ({"rotation": {"primary": []}}, "rotation.primary must be a non-empty list"),
        ({"rotation": {"primary": ["alice"]}}, "one person: the secondary"),
        ({"rotation": {"primary": ["alice", "bob", "alice"]}}, "names someone twice"),
        ({"rotation": {"shift_days": 0}}, "shift_days 0 is not a whole number"),
        ({"rotation": {"start": "next monday"}}, "rotation.start is not a date and time"),
        ({"timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is not a known time zone"),
        ({"rotation": {"secondary": ["alice", "carol", "bob"]}}, "shift 0 has alice as both"),
        ({"channels": {"alice": ["not a block"]}}, "channels.alice must be notification block"),
        ({"wheels": 4}, "unknown keys wheels"),
    ],
)
def test_bad_schedules_are_refused_with_the_file_and_what_to_fix(
    changes: dict[str, Any], match: str
) -> None:
    refused(match, **changes)


def test_bad_overrides_are_refused() -> None:
    base = {
        "start": T0 + timedelta(days=1),
        "end": T0 + timedelta(days=2),
        "role": "primary",
        "by": "carol",
        "reason": "r",
    }
    refused(r"overrides\[0\] ends before it starts", overrides=[{**base, "end": base["start"]}])
    refused(r"overrides\[0\].role 'boss'", overrides=[{**base, "role": "boss"}])
    refused(r"overrides\[0\].reason is missing", overrides=[{**base, "reason": ""}])
    refused("overrides.0..by names 'zed'", overrides=[{**base, "by": "zed"}])
    refused("makes bob both primary and secondary", overrides=[{**base, "by": "bob"}])
    refused("replaces carol, who is never primary", overrides=[{**base, "replaces": "carol"}])


def test_an_empty_schedule_is_refused() -> None:
    for empty in (None, {}, ""):
        with pytest.raises(ConfigurationError, match="oncall.yaml: the schedule is empty"):
            parse_schedule(empty, roles(), "oncall.yaml")


def test_a_page_goes_to_the_scheduled_persons_channel_else_the_routing() -> None:
    s = schedule()
    routed = ("custom-webhook/page",)
    to_alice = page_target(s, "on-call", T0, routed)
    assert (to_alice.refs, to_alice.person, to_alice.scheduled) == (
        ("custom-webhook/page-alice",),
        "alice",
        True,
    )
    to_bob = page_target(s, "secondary", T0, ("custom-webhook/page-secondary",))
    assert to_bob.refs == ("custom-webhook/page-bob",)
    lead = page_target(s, "lead", T0, ("custom-webhook/page-lead",))  # dave has no channel
    assert lead.refs == ("custom-webhook/page-lead",) and lead.person == "dave"
    assert not lead.scheduled and "dave has no channel in oncall-test.yaml" in lead.why
    assert page_target(None, "on-call", T0, routed).refs == routed
    assert page_target(s, "email", T0, ("custom-webhook/notify",)).person is None


def test_the_committed_schedule_validates_against_the_committed_roles() -> None:
    raw = yaml.safe_load((REPO / "policy" / "oncall.yaml").read_text())
    s = parse_schedule(raw, roles(), "policy/oncall.yaml")
    assert set(s.rotation.primary) <= set(roles().roles["on-call"].members)
    assert on_call_at(s, datetime(2026, 12, 8, 12, tzinfo=UTC)).primary == "carol"  # override


def test_the_view_shows_now_and_next_in_the_schedules_zone() -> None:
    s = schedule()
    view = oncall_view(s, parse_at("2026-01-06T10:00"))  # no offset: Berlin
    assert view["at"] == "2026-01-06T09:00:00+00:00"
    assert (view["now"]["primary"], view["next"]["primary"]) == ("alice", "bob")
    text = render_text(view)
    assert "Mon 2026-01-12 09:00 Europe/Berlin (08:00 UTC)" in text
    assert "custom-webhook/page-alice" in text and "routing (no channel)" in text
    with pytest.raises(ConfigurationError, match="not an ISO 8601"):
        parse_at("tomorrow")
