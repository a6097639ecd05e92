"""PostgreSQL steps. ``psycopg.Error`` is translated here, once, into opsflows errors.

Every connection carries ``connect_timeout`` and TCP keepalives (see
:meth:`blocks.postgres.PostgresTarget.conninfo`); quick queries also get a
``statement_timeout`` (``Settings.pg_statement_timeout_s``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import psycopg
from prefect import task
from psycopg import errors as pgerr

from blocks.postgres import PostgresTarget
from decisions.facts import DatabaseFacts
from opsflows import retry
from opsflows.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    OpsError,
    PermanentError,
    ServiceUnavailable,
    Throttled,
    scrub,
)
from opsflows.settings import get_settings


def translate(exc: psycopg.Error, target: PostgresTarget, action: str) -> OpsError:
    """Map a psycopg error to the opsflows tree with a message that says what to do."""
    where = target.describe()
    raw = str(exc)
    text = scrub(raw.strip(), target.password.get_secret_value())
    refused = isinstance(exc, pgerr.InvalidPassword | pgerr.InvalidAuthorizationSpecification)
    if refused or "password authentication failed" in raw:
        return AuthenticationError(
            f"{action}: PostgreSQL refused the password for {where}",
            hint="check the password in the PostgresTarget block (was it rotated?)",
        )
    if isinstance(exc, pgerr.InvalidCatalogName) or ("database" in raw and "does not exist" in raw):
        return NotFoundError(
            f"{action}: database of {where} does not exist", hint="create it or fix the block"
        )
    if isinstance(exc, pgerr.LockNotAvailable | pgerr.DeadlockDetected):
        return Throttled(f"{action}: could not take a lock on {where}: {text}")
    if isinstance(exc, pgerr.QueryCanceled):
        return Throttled(f"{action}: statement timed out on {where}: {text}")
    if isinstance(exc, pgerr.AdminShutdown | pgerr.CannotConnectNow) or isinstance(
        exc, psycopg.OperationalError
    ):
        return ServiceUnavailable(
            f"{action}: cannot reach PostgreSQL at {where}: {text}",
            hint="is the server up and the host/port in the block right?",
        )
    if isinstance(exc, psycopg.ProgrammingError | psycopg.DataError):
        return ConfigurationError(f"{action}: {text}")
    return PermanentError(f"{action}: PostgreSQL error on {where}: {text}")


@contextlib.contextmanager
def pg_errors(target: PostgresTarget, action: str) -> Iterator[None]:
    """Translate psycopg errors raised inside the block."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc, target, action) from exc


@contextlib.contextmanager
def connect(
    target: PostgresTarget,
    *,
    database: str | None = None,
    autocommit: bool = True,
    statement_timeout_s: float | None = None,
) -> Iterator[psycopg.Connection[Any]]:
    """A connection to ``target``; errors on connect and inside the block are translated.

    ``statement_timeout_s`` bounds every statement of the session on the server.
    """
    conninfo = target.conninfo(database, statement_timeout_s=statement_timeout_s)
    with pg_errors(target, f"connect to {target.describe()}"):
        conn = psycopg.connect(conninfo, autocommit=autocommit)
    try:
        with pg_errors(target, f"query {target.describe()}"), conn:
            yield conn
    finally:
        conn.close()


def sever(conn: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down, from any thread, without waiting for the server.

    A query blocked on a peer that stopped answering (keepalives cannot tell: the peer's
    TCP stack still acknowledges) returns at once with an error; so does a later rollback
    or close. Used when a stall was detected and the session must not hold the run.
    """
    with contextlib.suppress(OSError, psycopg.Error, ValueError):
        fd = os.dup(conn.fileno())
        with socket.socket(fileno=fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)


@task(name="check PostgreSQL", **retry.NETWORK)
def check_database(target: PostgresTarget) -> DatabaseFacts:
    """Log in to the database and report the server version and size."""
    with connect(target, statement_timeout_s=get_settings().pg_statement_timeout_s) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), pg_database_size(current_database()),"
            " (SELECT count(*) FROM pg_stat_activity)"
        ).fetchone()
    assert row is not None
    return DatabaseFacts(str(row[0]), int(row[1]), int(row[2]))
