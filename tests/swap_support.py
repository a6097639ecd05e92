"""A live database and a verified restore of it, and a way to stop a swap after its n-th change.

The world of one test: a live database ``swtest_<hex>`` (owned by ``app``, 100 rows, a comment
of its own), a scratch database as a verified restore leaves it (250 rows, the restore's
"verified" mark) and the name the old database is to be kept under. Every database whose name
starts with the live name is dropped afterwards.

:func:`after_change` runs an action right after the n-th statement that changes a database
(``ALTER DATABASE`` or ``COMMENT ON DATABASE``) executed in this process, whatever module
runs it: the action can kill the process (``python -m tests.swap_support N live scratch
keep``, the swap run in a child that dies after its N-th change) or cut the connection.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from blocks.postgres import PostgresTarget
from tasks.scratch import mark, scratch_name

OLD_ROWS, NEW_ROWS = 100, 250
BACKUP_ID = "20250101T000000000000Z"
LIVE_COMMENT = "the application's database"
CHANGE = re.compile(r"\s*(ALTER|COMMENT ON) DATABASE ", re.IGNORECASE)


@dataclass(frozen=True)
class SwapWorld:
    admin: PostgresTarget
    live: str
    scratch: str
    keep_as: str

    def sql(self, query: str, params: Any = None, database: str = "postgres") -> list[Any]:
        with psycopg.connect(self.admin.conninfo(database), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def databases(self) -> list[str]:
        rows = self.sql(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
            (self.live,),
        )
        return [r[0] for r in rows]

    def allows_connections(self, name: str) -> bool:
        rows = self.sql("SELECT datallowconn FROM pg_database WHERE datname = %s", (name,))
        return bool(rows and rows[0][0])

    def comment(self, name: str) -> str | None:
        rows = self.sql(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def rows(self, name: str) -> int:
        """Rows of ``t`` read through a real new connection to ``name``."""
        return int(self.sql("SELECT count(*) FROM t", database=name)[0][0])

    def verified_mark(self) -> str:
        return mark(self.live, BACKUP_ID, verified=True)


def make_world(admin: PostgresTarget, live: str | None = None) -> SwapWorld:
    """A new live database (or the existing ``live``, left as it is) and a verified restore."""
    name = live or f"swtest_{secrets.token_hex(3)}"
    world = SwapWorld(
        admin=admin,
        live=name,
        scratch=scratch_name(name, BACKUP_ID),
        keep_as=f"{name}_before_restore_20250101000000",
    )
    made = [(world.scratch, NEW_ROWS, world.verified_mark())]
    if live is None:
        made.insert(0, (world.live, OLD_ROWS, LIVE_COMMENT))
    for db, rows, comment in made:
        ident = sql.Identifier(db)
        world.sql(sql.SQL("CREATE DATABASE {} OWNER app").format(ident).as_string())
        world.sql(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, comment).as_string())
        world.sql(
            "CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO app;"
            f" INSERT INTO t SELECT generate_series(1, {rows})",
            database=db,
        )
    return world


def remove_world(world: SwapWorld) -> None:
    for name in world.databases():
        stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        world.sql(stmt.as_string())


@contextlib.contextmanager
def after_change(
    when: Callable[[int, str], bool], action: Callable[[psycopg.Connection[Any]], None]
) -> Iterator[list[str]]:
    """Call ``action(connection)`` after each database-changing statement (its 1-based index
    and text) that ``when`` picks; yields the list of those statements seen so far."""
    original = psycopg.Connection.execute
    seen: list[str] = []

    def execute(self: psycopg.Connection[Any], query: Any, *args: Any, **kw: Any) -> Any:
        cursor = original(self, query, *args, **kw)
        text = query if isinstance(query, str) else query.as_string(self)
        if CHANGE.match(text):
            seen.append(text)
            if when(len(seen), text):
                action(self)
        return cursor

    psycopg.Connection.execute = execute  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        psycopg.Connection.execute = original  # type: ignore[method-assign]


def kill_self(_conn: psycopg.Connection[Any]) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def cut(admin: PostgresTarget) -> Callable[[psycopg.Connection[Any]], None]:
    """An action that terminates the server session of the connection (a lost connection)."""

    def action(conn: psycopg.Connection[Any]) -> None:
        with psycopg.connect(admin.conninfo("postgres"), autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))

    return action


def _child(argv: list[str]) -> None:
    """Run the swap and die (SIGKILL) right after its ``n``-th change."""
    from prefect.logging import disable_run_logger

    from devstack import stack
    from opsflows.settings import Settings
    from tasks.swap import swap_in
    from tests.backup_support import admin_target

    n, live, scratch, keep_as = int(argv[0]), *argv[1:4]
    info = stack.load(Settings())
    assert info is not None, "no test stack"
    admin = admin_target(info)
    with disable_run_logger(), after_change(lambda i, _text: i == n, kill_self):
        swap_in.fn(admin, live, scratch, keep_as)


if __name__ == "__main__":
    _child(sys.argv[1:])
