"""The access-log review's parser and judgement (decisions/access_log.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from decisions.access import parse_policy
from decisions.access_expectations import parse_expectations
from decisions.access_log import FAILED, LOGIN, LoginEvent, parse_line, review

REPO = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((REPO / "policy" / "roles.yaml").read_text())
EXPECT = parse_expectations(RAW, parse_policy(RAW))
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
PREFIX = "2026-12-01 10:00:00.123 UTC [4711] "


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            PREFIX + "user=app db=app client=127.0.0.1 LOG:  connection authorized: user=app "
            "database=app application_name=opsflows",
            (LOGIN, "app", "app", "127.0.0.1", ""),
        ),
        (
            PREFIX + "user=eve db=app client=10.0.0.9 FATAL:  password authentication failed "
            'for user "eve"',
            (FAILED, "eve", "app", "10.0.0.9", "password authentication failed"),
        ),
        (
            PREFIX + "user=bob db=ops client=10.0.0.9 FATAL:  no pg_hba.conf entry for host "
            '"10.0.0.9", user "bob", database "ops", no encryption',
            (FAILED, "bob", "ops", "10.0.0.9", "no pg_hba.conf entry"),
        ),
        (
            PREFIX + 'user=ghost db=app client=[local] FATAL:  role "ghost" does not exist',
            (FAILED, "ghost", "app", "[local]", "role does not exist"),
        ),
    ],
)
def test_login_lines_are_parsed(line: str, expected: tuple[str, ...]) -> None:
    event = parse_line(line + "\n")
    assert event is not None
    assert (event.kind, event.role, event.database, event.source, event.reason) == expected
    assert event.at == datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    "line",
    [
        PREFIX + "user=app db=app client=127.0.0.1 LOG:  duration: 1200.5 ms  statement: SELECT 1",
        PREFIX + "user=[unknown] db=[unknown] client=127.0.0.1 LOG:  connection received: "
        "host=127.0.0.1 port=5555",
        PREFIX + 'user=app db=app client=127.0.0.1 ERROR:  relation "x" does not exist',
        "2026-12-01 10:00:00.123 CET [4711] user=app db=app client=127.0.0.1 LOG:  connection "
        "authorized: user=app database=app",  # not the UTC the server is told to log in
        "\tcontinuation of a multi-line statement",
        "",
    ],
)
def test_other_lines_are_no_login_event(line: str) -> None:
    assert parse_line(line) is None


def _failed(role: str, source: str, n: int, at: datetime = T0) -> list[LoginEvent]:
    return [
        LoginEvent(
            at + timedelta(seconds=i), FAILED, role, "app", source, "password authentication failed"
        )
        for i in range(n)
    ]


def test_five_failed_logins_for_one_role_from_one_source_are_suspicious() -> None:
    events = [
        *_failed("app", "10.0.0.9", 5),
        *_failed("app", "10.0.0.8", 4),  # another source: counted on its own
        *_failed("opsflows", "10.0.0.9", 4),
        LoginEvent(T0, LOGIN, "app", "app", "127.0.0.1"),
    ]
    result = review(events, EXPECT, T0, T0 + timedelta(days=1), failed_threshold=5)
    assert [(s.kind, s.role, s.source, s.count) for s in result.suspicious] == [
        ("repeated failures", "app", "10.0.0.9", 5)
    ]
    assert result.failures[("app", "10.0.0.8", "password authentication failed")] == 4
    assert result.logins == {("app", "127.0.0.1"): 1}
    assert not result.clean


def test_the_threshold_is_a_parameter() -> None:
    result = review(_failed("app", "10.0.0.9", 2), EXPECT, T0, T0 + timedelta(days=1), 2)
    assert [s.count for s in result.suspicious] == [2]
    with pytest.raises(ValueError, match="at least 1"):
        review([], EXPECT, T0, T0, 0)


def test_logins_by_roles_that_should_not_log_in_or_outside_the_policy() -> None:
    events = [
        LoginEvent(T0, LOGIN, "intruder", "app", "10.1.1.1"),
        LoginEvent(T0, LOGIN, "app", "opsflows", "127.0.0.1"),  # app only uses app
        LoginEvent(T0, LOGIN, "dana", "app", "127.0.0.1"),  # a policy member: any database
        LoginEvent(T0, LOGIN, "postgres", "prefect", "[local]"),
        LoginEvent(T0, LOGIN, "opsflows_monitor", "opsflows", "127.0.0.1"),
    ]
    result = review(events, EXPECT, T0, T0 + timedelta(hours=1))
    assert [(s.kind, s.role, s.source) for s in result.suspicious] == [
        ("outside the policy", "app", "127.0.0.1"),
        ("login not expected", "intruder", "10.1.1.1"),
    ]


def test_events_outside_the_period_are_not_counted() -> None:
    events = [
        *_failed("app", "10.0.0.9", 5, at=T0 - timedelta(days=40)),
        LoginEvent(T0 + timedelta(days=2), LOGIN, "intruder", "app", "10.1.1.1"),
    ]
    result = review(events, EXPECT, T0, T0 + timedelta(days=1))
    assert result.clean and result.logins == {} and result.failures == {}
