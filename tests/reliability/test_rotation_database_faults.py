"""PostgreSQL fails during a rotation: the connection setting the password, or the new login.

Faults are real: PostgreSQL kills the connection doing ``ALTER ROLE`` (``pg_terminate_backend``
while a lock holds it), or the role's logins are refused (``CONNECTION LIMIT 0``). Each fault is
armed when its step starts and retry delays are zeroed. After every failure AWSCURRENT must log
in; a rerun then completes the rotation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from psycopg import sql

import flows.rotate_credentials as flow_module
from tests.rotation_support import World, arm, assert_no_secrets, check_completed, check_failed_run
from tests.support import count_fault


def test_the_database_kills_the_connection_setting_the_password(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = world.value()
    blocker = world.admin()
    stop = threading.Event()
    seen: list[str] = []

    def lock_and_kill() -> None:
        blocker.execute("BEGIN")
        blocker.execute(sql.SQL("ALTER ROLE {} VALID UNTIL 'infinity'").format(
            sql.Identifier(world.name)))  # fmt: skip

        def killer() -> None:
            with world.admin() as conn:
                while not stop.is_set():
                    rows = conn.execute(
                        "SELECT pid, query FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE %s",
                        (f'ALTER ROLE "{world.name}" PASSWORD%',),
                    ).fetchall()
                    for pid, query in rows:
                        seen.append(query)
                        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        count_fault("pg terminate")
                    time.sleep(0.05)

        threading.Thread(target=killer, daemon=True).start()

    def release() -> None:
        stop.set()
        blocker.rollback()
        blocker.close()

    monkeypatch.setattr(flow_module, "set_password", arm("set_password", lock_and_kill, release))

    state = world.run()

    check_failed_run(world, state, "set_password")
    assert len(seen) == 4  # the first attempt and three retries were each killed
    assert all("SCRAM-SHA-256$" in q for q in seen)  # only the verifier travels
    assert not [q for q in seen for p in world.passwords if p in q]
    assert world.value()["version"] == before["version"]


def test_the_new_login_is_refused_during_the_test(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = world.value()
    role = sql.Identifier(world.name)

    def limit(n: int) -> Callable[[], None]:
        def apply() -> None:
            with world.admin() as conn:
                conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(role, n))

        return apply

    def refuse_logins() -> None:
        limit(0)()
        count_fault("pg logins refused")

    monkeypatch.setattr(flow_module, "test_login", arm("test_login", refuse_logins, limit(-1)))

    state = world.run()

    check_failed_run(world, state, "test")
    pending = world.value("AWSPENDING")
    assert not world.logs_in(pending)  # single user: the old password was set again
    monkeypatch.undo()
    # a new rotation supersedes the stray AWSPENDING instead of failing on it
    rerun = world.run(rotation_id="test-2")
    check_completed(world, rerun, before)
    assert world.stages()[pending["version"]] == []
    assert_no_secrets(world.run_ids, world.passwords)
