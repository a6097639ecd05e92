"""Sessions of the app database under a test's control (tests/served/test_triage_database.py):
connections as a block's role, what pg_stat_activity says about them, statements that wait on
a lock in a thread, and a scratch table with a lock holder, all cleaned up."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

from blocks.postgres import PostgresTarget
from tests.incident_support import wait_for
from tests.served_support import load_block


def session(block: str, application: str, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection to the app database as the role of ``block``, named ``application``."""
    target = load_block(PostgresTarget, block)
    return psycopg.connect(target.conninfo(), application_name=application, autocommit=autocommit)


def admin_query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with session("app-db-admin", "test-observer", autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def alive(pid: int) -> bool:
    return bool(admin_query("SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid))


def blocked_by(pid: int) -> list[int]:
    rows = admin_query("SELECT pg_blocking_pids(%s)", pid)
    return list(rows[0][0]) if rows else []


def idle_for(pid: int) -> float:
    rows = admin_query(
        "SELECT extract(epoch FROM clock_timestamp() - state_change)::float8 "
        "FROM pg_stat_activity WHERE pid = %s",
        pid,
    )
    return float(rows[0][0]) if rows else 0.0


class Background:
    """A statement run on its own connection in a thread (it may wait on a lock)."""

    def __init__(self, conn: psycopg.Connection[Any], sql: str) -> None:
        self.conn, self.sql = conn, sql
        self.pid = conn.info.backend_pid
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.conn.execute(self.sql)
        except BaseException as exc:  # noqa: BLE001 - the test asserts on it
            self.error = exc
        finally:
            self.done.set()

    def stop(self) -> None:
        """Cancel the statement if it still runs, and wait for the thread."""
        if not self.done.is_set():
            with suppress(Exception):
                self.conn.cancel_safe(timeout=5)
        self.done.wait(15)


@contextmanager
def scene(holder_block: str = "app-db", holder_app: str = "report-job") -> Iterator[dict[str, Any]]:
    """A scratch table, a holder session (the caller makes it hold a lock) and its cleanup.

    Yields ``{"table", "holder", "holder_pid", "open"}``; ``open(app)`` opens more app-role
    sessions that are closed (and their statements cancelled) at the end.
    """
    table = f"dbslow_{uuid.uuid4().hex[:8]}"
    with session("app-db", "test-setup", autocommit=True) as setup:
        setup.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int NOT NULL)")
        setup.execute(f"INSERT INTO {table} VALUES (1, 0)")
    conns: list[psycopg.Connection[Any]] = []
    workers: list[Background] = []

    def open_session(application: str) -> psycopg.Connection[Any]:
        conn = session("app-db", application, autocommit=True)
        conns.append(conn)
        return conn

    holder = session(holder_block, holder_app)
    conns.append(holder)
    state: dict[str, Any] = {
        "table": table,
        "holder": holder,
        "holder_pid": holder.info.backend_pid,
        "open": open_session,
        "workers": workers,
    }
    try:
        yield state
    finally:
        for w in workers:
            w.stop()
        for conn in conns:
            with suppress(Exception):
                conn.cancel_safe(timeout=5)
            with suppress(Exception):
                conn.rollback()
            with suppress(Exception):
                conn.close()
        with session("app-db", "test-setup", autocommit=True) as setup:
            setup.execute("SET lock_timeout = '10s'")
            setup.execute(f"DROP TABLE IF EXISTS {table}")


def waiter(state: dict[str, Any], sql: str, app: str = "checkout-api") -> Background:
    """A statement of another app session that waits on the holder's lock (checked)."""
    work = Background(state["open"](app), sql)
    state["workers"].append(work)
    holder = state["holder_pid"]
    wait_for(lambda: holder in blocked_by(work.pid), 15, f"pid {work.pid} never waited on {holder}")
    return work
