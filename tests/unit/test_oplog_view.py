"""``opsflows oplog`` without services: ``--since``, ``--status`` and ID parsing, an ``ops_log``
row turned into the runbook's template fields, durations, the list, ``show`` and JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from decisions.oplog_render import as_json, clip, render_entry, render_list
from decisions.oplog_view import (
    NONE,
    UNKNOWN,
    entry_view,
    flow_run_url,
    format_duration,
    parse_entry_ref,
    parse_since,
    parse_status,
)
from opsflows.errors import ConfigurationError

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
RUN_ID = "0b6c1c7e-3f7a-4d43-9a4e-1f1e2d3c4b5a"
UI = "http://127.0.0.1:4200"


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 42,
        "started_at": NOW - timedelta(minutes=3, seconds=5),
        "finished_at": NOW,
        "operation": "database backup",
        "status": "succeeded",
        "reason": "daily backup of app",
        "impact": "no change",
        "duration_s": 185.0,
        "issues": "",
        "follow_up": "",
        "flow_run_id": RUN_ID,
        "details": {},
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("12h", NOW - timedelta(hours=12)),
        ("30m", NOW - timedelta(minutes=30)),
        (" 2H ", NOW - timedelta(hours=2)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T10:30", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
        (
            "2026-12-01T10:30+02:00",
            datetime(2026, 12, 1, 10, 30, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_since_takes_a_duration_or_an_iso_date(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["7", "7w", "d7", "yesterday", "0d", "2026-13-01", "", "-3h"])
def test_a_bad_since_names_the_accepted_forms(text: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_since(text, NOW)
    assert "7d, 12h or 30m" in str(err.value) and "ISO date" in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("failed", "failed"),
        ("FAILED", "failed"),
        ("timed-out", "timed out"),
        ("timed out", "timed out"),
    ],
)
def test_status_is_one_of_the_logs(text: str, expected: str) -> None:
    assert parse_status(text) == expected


def test_an_unknown_status_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_status("broken")
    assert "succeeded, failed, rejected, timed out, cancelled, crashed" in str(err.value)


def test_an_entry_is_named_by_its_number_or_its_flow_run() -> None:
    assert parse_entry_ref("17") == 17
    assert parse_entry_ref(RUN_ID.upper()) == RUN_ID
    for bad in ("0", "-3", "abc", "17a", ""):
        with pytest.raises(ConfigurationError, match="not an operation-log entry id"):
            parse_entry_ref(bad)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.42, "0.4 s"),
        (9.94, "9.9 s"),
        (42.4, "42 s"),
        (185, "3 min 05 s"),
        (3600 * 2 + 7 * 60 + 10, "2 h 07 min"),
        (None, UNKNOWN),
        (-1.0, UNKNOWN),
    ],
)
def test_durations_read_as_people_say_them(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_the_ui_link_needs_a_ui_and_a_run() -> None:
    assert flow_run_url(UI + "/", RUN_ID) == f"{UI}/runs/flow-run/{RUN_ID}"
    assert flow_run_url("", RUN_ID) == "" and flow_run_url(UI, None) == ""


def test_a_succeeded_entry_without_issues_says_none() -> None:
    view = entry_view(row(), UI)
    assert view.reason == "daily backup of app" and view.impact == "no change"
    assert view.issues == (NONE,) and view.follow_up == (NONE,)
    assert view.duration == "3 min 05 s" and view.date_time == "2026-12-02 11:56:55 UTC"
    assert view.flow_run_url == f"{UI}/runs/flow-run/{RUN_ID}"


def test_a_failed_entry_lists_its_issues_follow_ups_and_what_details_add() -> None:
    details = {
        "failed_step": "upload",
        "approval_refusals": [{"gate": "production", "approver": "bob", "why": "not a lead"}],
        "approvals": [{"gate": "production", "approver": "alice", "role": "lead", "reason": "go"}],
        "follow_ups": ["check the bucket policy"],
    }
    view = entry_view(
        row(
            status="failed",
            issues="ServiceUnavailable: S3 down; retries exhausted",
            follow_up="rerun the backup",
            details=details,
        ),
        UI,
    )
    assert view.issues == (
        "ServiceUnavailable: S3 down",
        "retries exhausted",
        "failed at step upload",
        "approval refused at production: bob (not a lead)",
    )
    assert view.follow_up == ("rerun the backup", "check the bucket policy")
    assert view.approvals == ("alice (lead) at production: go",)


def test_what_a_failed_entry_did_not_record_is_unknown() -> None:
    view = entry_view(
        row(status="crashed", reason="", impact=" ", duration_s=None, finished_at=None), None
    )
    assert (view.reason, view.impact, view.duration) == (UNKNOWN, UNKNOWN, UNKNOWN)
    assert view.issues == (UNKNOWN,) and view.follow_up == (UNKNOWN,)
    assert view.flow_run_url == ""


def test_the_duration_comes_from_the_times_when_the_column_is_missing() -> None:
    assert entry_view(row(duration_s=None)).duration == "3 min 05 s"


def test_show_prints_every_template_field_and_the_run_link() -> None:
    view = entry_view(
        row(status="failed", issues="a; b", details={"database": "app", "size": 3}), UI
    )
    text = render_entry(view)
    for label in ("Date/Time:", "Operation:", "Reason:", "Impact:", "Duration:", "Follow-up:"):
        assert label in text
    assert "Issues:\n  - a\n  - b\n" in text
    assert "Follow-up:  —" in text
    assert f"{UI}/runs/flow-run/{RUN_ID}" in text
    assert '"database": "app"' in text


def test_show_says_how_to_get_a_link_without_a_ui_url() -> None:
    assert "set PREFECT_UI_URL" in render_entry(entry_view(row(), None))
    assert "Flow run:   —" in render_entry(entry_view(row(flow_run_id=None), UI))


def test_the_list_has_one_line_per_entry_and_clips_long_values() -> None:
    long_reason = "x" * 80
    views = [entry_view(row(id=2, reason=long_reason)), entry_view(row(id=1, status="failed"))]
    lines = render_list(views).splitlines()
    assert len(lines) == 3 and lines[0].split()[:2] == ["id", "date/time"]
    assert lines[1].split()[0] == "2" and "x" * 29 + "…" in lines[1]
    assert "failed" in lines[2] and lines[2].rstrip().endswith(UNKNOWN)
    assert clip("a\nb   c", 10) == "a b c" and clip("abcdef", 4) == "abc…"


def test_json_keeps_the_template_fields_by_name() -> None:
    view = entry_view(row(status="rejected", issues="GateRejected: no", details={"n": 1}), UI)
    data = json.loads(json.dumps(as_json(view)))
    assert data["id"] == 42 and data["status"] == "rejected"
    assert data["issues"] == ["GateRejected: no"] and data["follow_up"] == [UNKNOWN]
    assert data["date_time"] == "2026-12-02T11:56:55+00:00" and data["duration_s"] == 185.0
    assert data["flow_run_url"].endswith(RUN_ID) and data["details"] == {"n": 1}


def test_an_entry_that_ran_past_midnight_shows_the_day_it_finished() -> None:
    same_day = render_entry(entry_view(row()))
    assert "(finished 12:00:00)" in same_day
    late = entry_view(row(finished_at=NOW + timedelta(hours=13), duration_s=None))
    assert "(finished 2026-12-03 01:00:00)" in render_entry(late)


def test_the_command_line_keeps_options_given_before_or_after_show() -> None:
    from opsflows.cli import build_parser

    parser = build_parser()
    listing = parser.parse_args(["oplog"])
    assert (listing.oplog_action, listing.limit, listing.ops_db, listing.json) == (
        None,
        50,
        "ops-db",
        False,
    )
    before = parser.parse_args(["oplog", "--json", "--ops-db", "mine", "show", "3"])
    assert (before.oplog_action, before.id, before.json, before.ops_db) == (
        "show",
        "3",
        True,
        "mine",
    )
    after = parser.parse_args(["oplog", "show", "3", "--json", "--ops-db", "mine"])
    assert (after.json, after.ops_db) == (True, "mine")
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["oplog", "--limit", "0"])
    assert stopped.value.code == 2
