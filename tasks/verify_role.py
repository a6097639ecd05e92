"""The read-only role the user's expectation suites run as on a scratch database.

A user's suite comes from the backup store, so it must not run with the admin's rights.
:func:`verify_role` makes sure the role ``opsflows_verify`` exists with no privilege of its
own, gives it a password made for this run and read access to one database, and yields a
``PostgresTarget`` logging in as it; on leaving, the grants are revoked and the password
removed (``PASSWORD NULL``: nobody can log in as the role between runs).

The role, enforced on every run (``ALTER ROLE``, so a role someone changed is put back):

* ``LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT``;
  ``NOINHERIT`` and revoking every membership it holds (``pg_read_all_settings``,
  ``pg_read_server_files``, ``pg_read_all_data`` ...) means it has only what is granted to
  it directly and to ``PUBLIC``; row-level security applies to it like to any reader;
* ``default_transaction_read_only = on`` and a ``statement_timeout`` as role settings;
* a password of 256 random bits per run, sent to the server only as a SCRAM-SHA-256
  verifier (never in a statement, a log line or an artifact), ``VALID UNTIL`` a few hours
  on in case a killed run never removes it;
* on the database: ``CONNECT``, ``USAGE`` on its schemas, ``SELECT`` on its tables,
  partitioned tables and materialized views; not on views (a view reads with its owner's
  rights), functions or anything else.

Runs that verify at the same time take turns (a session advisory lock): each sets its own
password, and the role's grants are made and revoked under the lock.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from blocks.postgres import PostgresTarget
from opsflows.errors import OpsError, PermanentError
from tasks.postgres import connect
from tasks.scratch import MAINTENANCE_DB

#: The role user suites run as.
VERIFY_ROLE = "opsflows_verify"
#: Advisory-lock class the runs take turns on (second key 0).
LOCK_CLASS = 0x5256
#: How long a run waits for another run's verification to finish.
LOCK_WAIT_S = 600
#: How long the password stays valid if the run never removes it.
PASSWORD_VALID_H = 6
#: Longest statement the role may run, in milliseconds.
STATEMENT_TIMEOUT_MS = 600_000
_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"
_SCHEMAS = (
    "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND NOT starts_with(nspname, 'pg_') ORDER BY 1"
)
_TABLES = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname = ANY(%s) ORDER BY 1, 2"
)
_MEMBERSHIPS = (
    "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
    " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s"
)


def _ensure_role(conn: psycopg.Connection[Any], password: str) -> None:
    role = sql.Identifier(VERIFY_ROLE)
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (VERIFY_ROLE,)).fetchone():
        with contextlib.suppress(psycopg.errors.DuplicateObject):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
    verifier = conn.pgconn.encrypt_password(
        password.encode(), VERIFY_ROLE.encode(), b"scram-sha-256"
    ).decode()
    until = (datetime.now(UTC) + timedelta(hours=PASSWORD_VALID_H)).isoformat()
    conn.execute(
        sql.SQL("ALTER ROLE {} " + _ATTRIBUTES + " PASSWORD {} VALID UNTIL {}").format(
            role, sql.Literal(verifier), sql.Literal(until)
        )
    )
    conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
    conn.execute(
        sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
            role, sql.Literal(str(STATEMENT_TIMEOUT_MS))
        )
    )
    for (group,) in conn.execute(_MEMBERSHIPS, (VERIFY_ROLE,)).fetchall():
        conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(str(group)), role))
    left = [str(r[0]) for r in conn.execute(_MEMBERSHIPS, (VERIFY_ROLE,)).fetchall()]
    if left:  # PostgreSQL 16+: a membership another role granted survives a plain REVOKE
        raise PermanentError(
            f"role {VERIFY_ROLE} is still a member of {', '.join(left)}; user suites do not run"
            " as a role with memberships",
            hint=f"revoke them: REVOKE <role> FROM {VERIFY_ROLE} GRANTED BY <grantor>",
        )


def _grants(conn: psycopg.Connection[Any], database: str, grant: bool) -> None:
    """Grant (or revoke) CONNECT, schema USAGE and table SELECT on the connected database."""
    role = sql.Identifier(VERIFY_ROLE)
    verb = sql.SQL("GRANT" if grant else "REVOKE")
    to = sql.SQL("TO" if grant else "FROM")
    schemas = [str(r[0]) for r in conn.execute(_SCHEMAS).fetchall()]
    for schema in schemas:
        conn.execute(
            sql.SQL("{} USAGE ON SCHEMA {} {} {}").format(verb, sql.Identifier(schema), to, role)
        )
    for schema, table in conn.execute(_TABLES, (schemas,)).fetchall():
        conn.execute(
            sql.SQL("{} SELECT ON TABLE {} {} {}").format(
                verb, sql.Identifier(str(schema), str(table)), to, role
            )
        )
    conn.execute(
        sql.SQL("{} CONNECT ON DATABASE {} {} {}").format(verb, sql.Identifier(database), to, role)
    )


def _retire(admin: PostgresTarget, database: str) -> None:
    """Revoke the grants on ``database`` (if it still exists), end the role's sessions on
    it and remove its password."""
    with connect(admin, database=MAINTENANCE_DB) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (VERIFY_ROLE,),
        )
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(sql.Identifier(VERIFY_ROLE)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if exists.fetchone() is None:
            return
    with connect(admin, database=database) as conn:
        _grants(conn, database, grant=False)


@contextlib.contextmanager
def verify_role(admin: PostgresTarget, database: str) -> Iterator[PostgresTarget]:
    """Log in as the read-only role on ``database`` for the block's duration.

    Args:
        admin: Superuser target on the server (creates and grants to the role).
        database: The database the role may read (a scratch database).

    Yields:
        A target for the role on ``database``; its password is valid until the block ends.
    """
    password = secrets.token_urlsafe(32)
    with connect(admin, database=MAINTENANCE_DB) as lock:
        lock.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{LOCK_WAIT_S}s")))
        lock.execute("SELECT pg_advisory_lock(%s, 0)", (LOCK_CLASS,))
        try:
            _ensure_role(lock, password)
            with connect(admin, database=database) as conn:
                _grants(conn, database, grant=True)
            yield PostgresTarget(
                host=admin.host,
                port=admin.port,
                database=database,
                user=VERIFY_ROLE,
                password=SecretStr(password),
                sslmode=admin.sslmode,
                connect_timeout=admin.connect_timeout,
            )
        except BaseException:
            with contextlib.suppress(OpsError):  # the first error is the one to report
                _retire(admin, database)
            raise
        _retire(admin, database)
