"""The monthly access-log review: PostgreSQL's connection log, parsed and judged.

The server logs every connection (``log_connections = on``) with the prefix
:data:`LOG_LINE_PREFIX` (time, pid, user, database, client address), so each line says who
came from where (one line each, wrapped here)::

    2026-12-02 05:50:01.123 UTC [4711] user=app db=app client=127.0.0.1 LOG:
        connection authorized: user=app database=app
    2026-12-02 05:50:02.456 UTC [4712] user=eve db=app client=127.0.0.1 FATAL:
        password authentication failed for user "eve"

:func:`parse_line` turns a line into a :class:`LoginEvent` (a successful login, or a failed
one with its reason: a wrong password, no ``pg_hba.conf`` entry, a role that does not exist);
:func:`review` counts them per role and source over the period and says what is suspicious:
``failed_threshold`` or more failed logins for one role from one source, a login by a role
that should not log in (not a service role nor a policy member), a login to a database the
role's expectations do not list.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from decisions.access_expectations import AuditExpectations

#: ``log_line_prefix`` of the devstack server (``devstack/postgres.py`` sets it). ``%m`` is
#: in ``log_timezone``, which is set to UTC with it.
LOG_LINE_PREFIX = "%m [%p] user=%u db=%d client=%h "
_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (?P<tz>[A-Za-z0-9+:/_-]+) "
    r"\[(?P<pid>\d+)\] user=(?P<user>\S*) db=(?P<db>\S*) client=(?P<client>\S*) "
    r"(?P<level>[A-Z]+):\s+(?P<message>.*)$"
)
_AUTHORIZED = re.compile(r"^connection authorized: user=(?P<user>\S+)(?: database=(?P<db>\S+))?")
_FAILURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "password authentication failed",
        re.compile(r'^password authentication failed for user "(?P<user>[^"]*)"'),
    ),
    (
        "no pg_hba.conf entry",
        re.compile(
            r'^no pg_hba\.conf entry for (?:replication connection from )?host "[^"]*", '
            r'user "(?P<user>[^"]*)"(?:, database "(?P<db>[^"]*)")?'
        ),
    ),
    ("role does not exist", re.compile(r'^role "(?P<user>[^"]*)" does not exist')),
    (
        "other authentication failure",
        re.compile(r'^\w+ authentication failed for user "(?P<user>[^"]*)"'),
    ),
)

LOGIN, FAILED = "login", "failed"


@dataclass(frozen=True)
class LoginEvent:
    at: datetime
    kind: str  # LOGIN | FAILED
    role: str
    database: str
    source: str
    reason: str = ""


def _timestamp(text: str, tz: str) -> datetime | None:
    if tz not in ("UTC", "GMT", "Etc/UTC", "Z"):
        return None  # the server logs in UTC (log_timezone); anything else is not ours
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def parse_line(line: str) -> LoginEvent | None:
    """The login event a log line records, or None (any other line)."""
    match = _LINE.match(line.rstrip("\n"))
    if match is None:
        return None
    at = _timestamp(match["ts"], match["tz"])
    if at is None:
        return None
    message, source = match["message"], match["client"] or "[local]"
    if match["level"] == "LOG":
        ok = _AUTHORIZED.match(message)
        if ok is None:
            return None
        return LoginEvent(at, LOGIN, ok["user"], ok["db"] or match["db"], source)
    if match["level"] != "FATAL":
        return None
    for reason, pattern in _FAILURES:
        failed = pattern.match(message)
        if failed is not None:
            database = failed.groupdict().get("db") or match["db"]
            return LoginEvent(at, FAILED, failed["user"], database or "", source, reason)
    return None


@dataclass(frozen=True)
class Suspicion:
    kind: str  # repeated failures | login not expected | outside the policy
    role: str
    source: str
    count: int
    detail: str


@dataclass(frozen=True)
class LogReview:
    """Counts over the period and what is suspicious in them."""

    since: datetime
    until: datetime
    logins: dict[tuple[str, str], int]  # (role, source) -> successful logins
    failures: dict[tuple[str, str, str], int]  # (role, source, reason) -> failed logins
    suspicious: tuple[Suspicion, ...]
    lines_read: int = 0

    @property
    def clean(self) -> bool:
        return not self.suspicious


def review(
    events: Iterable[LoginEvent],
    expect: AuditExpectations,
    since: datetime,
    until: datetime,
    failed_threshold: int = 5,
    lines_read: int = 0,
) -> LogReview:
    """Count the period's logins and failures per role and source; judge them."""
    if failed_threshold < 1:
        raise ValueError("failed_threshold must be at least 1")
    logins: Counter[tuple[str, str]] = Counter()
    failures: Counter[tuple[str, str, str]] = Counter()
    databases: Counter[tuple[str, str, str]] = Counter()
    for event in events:
        if not since <= event.at < until:
            continue
        if event.kind == LOGIN:
            logins[(event.role, event.source)] += 1
            databases[(event.role, event.source, event.database)] += 1
        else:
            failures[(event.role, event.source, event.reason)] += 1
    suspicious: list[Suspicion] = []
    failed_per_source: Counter[tuple[str, str]] = Counter()
    for (role, source, _), n in failures.items():
        failed_per_source[(role, source)] += n
    for (role, source), n in sorted(failed_per_source.items()):
        if n >= failed_threshold:
            reasons = sorted(r for (ro, so, r) in failures if (ro, so) == (role, source))
            suspicious.append(
                Suspicion(
                    "repeated failures",
                    role,
                    source,
                    n,
                    f"{n} failed logins ({', '.join(reasons)}), threshold {failed_threshold}",
                )
            )
    for (role, source, database), n in sorted(databases.items()):
        allowed = expect.login_role(role)
        if allowed is None:
            suspicious.append(
                Suspicion(
                    "login not expected",
                    role,
                    source,
                    n,
                    f"{n} logins to {database} by a role that is neither a service role nor a "
                    "policy member",
                )
            )
        elif not allowed.may_use(database):
            suspicious.append(
                Suspicion(
                    "outside the policy",
                    role,
                    source,
                    n,
                    f"{n} logins to {database}; expected only "
                    f"{', '.join(sorted(allowed.databases))}",
                )
            )
    return LogReview(
        since, until, dict(logins), dict(failures), tuple(suspicious), lines_read=lines_read
    )
