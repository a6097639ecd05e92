"""Rows written continuously with a known moment between two of them, for the point-in-time
restore tests (e2e and served)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from devstack.wal_switch import switch_wal_and_wait

TABLE = "ticks"
#: Pause between two writes; the target moment is in the middle of one.
GAP_S = 0.2


@dataclass(frozen=True)
class Written:
    """What the writer committed, and the moment between row ``before`` and ``before + 1``."""

    target: datetime
    before: int  # the last id committed before the target
    total: int
    segment: str  # the WAL segment the target's neighbourhood was written to


def create_ticks(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY,"
            " at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        conn.execute(f"ALTER TABLE {TABLE} OWNER TO app")


def write_around_a_moment(conninfo: str, rows_before: int = 15, rows_after: int = 15) -> Written:
    """Commit ``rows_before`` rows, pick the target in the pause after the last of them, then
    commit ``rows_after`` more (each its own transaction, ``GAP_S`` apart)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row: Any = conn.execute(f"SELECT coalesce(max(id), 0) FROM {TABLE}").fetchone()
        start = int(row[0])
        target = None
        segment = ""
        for i in range(1, rows_before + rows_after + 1):
            conn.execute(f"INSERT INTO {TABLE} (id) VALUES (%s)", (start + i,))
            if i == rows_before:
                target = datetime.now(UTC) + timedelta(seconds=GAP_S / 2)
                seg: Any = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
                segment = str(seg[0])
            time.sleep(GAP_S)
    assert target is not None
    return Written(target, start + rows_before, start + rows_before + rows_after, segment)


def archive_now(admin_conninfo: str, timeout_s: float = 60) -> str:
    """Switch to a new WAL segment and wait until the one switched from is archived; its name."""
    try:
        return switch_wal_and_wait(admin_conninfo, timeout_s)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from exc


def ticks(conninfo: str) -> list[tuple[int, datetime]]:
    with psycopg.connect(conninfo) as conn:
        return [(int(i), at) for i, at in conn.execute(f"SELECT id, at FROM {TABLE} ORDER BY id")]


@contextlib.contextmanager
def failing_archive(admin_conninfo: str, timeout_s: float = 60) -> Iterator[str]:
    """Make the live server's archiving fail (``archive_command = 'false'`` over the one the
    devstack gives on the command line) until a segment's attempt failed; yields that
    segment. Reset on exit, after which the archiver catches up (nothing is lost)."""
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET archive_command = 'false'")
        conn.execute("SELECT pg_reload_conf()")
        try:
            time.sleep(1)  # the archiver reads its configuration between attempts
            row: Any = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            name = str(row[0])
            deadline = time.monotonic() + timeout_s
            while True:
                got: Any = conn.execute(
                    "SELECT last_failed_wal, last_failed_time > coalesce(last_archived_time,"
                    " '-infinity') FROM pg_stat_archiver"
                ).fetchone()
                if got[0] is not None and got[1]:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"archiving of {name} did not fail in {timeout_s:g} s")
                time.sleep(0.3)
            yield str(got[0])
        finally:
            conn.execute("ALTER SYSTEM RESET archive_command")
            conn.execute("SELECT pg_reload_conf()")
