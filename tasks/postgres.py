"""PostgreSQL steps. ``psycopg.Error`` is translated here, once, into opsflows errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from prefect import task
from psycopg import errors as pgerr

from blocks.postgres import PostgresTarget
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
    target: PostgresTarget, *, database: str | None = None, autocommit: bool = True
) -> Iterator[psycopg.Connection[Any]]:
    """A connection to ``target``; errors on connect and inside the block are translated."""
    with pg_errors(target, f"connect to {target.describe()}"):
        conn = psycopg.connect(target.conninfo(database), autocommit=autocommit)
    try:
        with pg_errors(target, f"query {target.describe()}"), conn:
            yield conn
    finally:
        conn.close()


@task(name="check PostgreSQL", **retry.NETWORK)
def check_database(target: PostgresTarget) -> dict[str, Any]:
    """Log in to the database and report the server version and size."""
    with connect(target) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), pg_database_size(current_database()),"
            " (SELECT count(*) FROM pg_stat_activity)"
        ).fetchone()
    assert row is not None
    return {"server_version": row[0], "size_bytes": int(row[1]), "connections": int(row[2])}
