"""Scratch databases of restores: recognisable names, a claim while in use, leftovers swept.

A restore works in a new database named ``<live>_restore_<backup>_<random>`` whose comment
(``\\l+`` in psql) says what it is and whether it was verified. While a run works on one, the
run holds a PostgreSQL session advisory lock keyed on its name, on a connection of its own:
the lock goes away with the run's process, whatever ended it (even ``kill -9``). So a later
restore of the same live database tells an abandoned scratch database (marked, unverified,
its claim free) from one a running restore is filling, and drops only the abandoned one.
A database without the mark, or marked verified (kept on purpose), is never dropped.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
from prefect import task
from prefect.logging import get_run_logger
from psycopg import sql

from blocks.postgres import PostgresTarget
from opsflows import retry
from opsflows.errors import ConflictError
from tasks.postgres import connect

MAINTENANCE_DB = "postgres"
#: Advisory-lock class of restore claims (the second key is ``hashtext(name)``).
CLAIM_CLASS = 0x5253
_MAX_IDENT = 63
_TAG = "_restore_"
_SUFFIX_LEN = len(_TAG) + 15 + 5  # _restore_<15 chars of the backup id>_<4 hex>
_UNVERIFIED = "being restored, not verified"
_VERIFIED = "verified, kept until dropped"


def scratch_prefix(live: str) -> str:
    """What the name of every scratch database of ``live`` starts with."""
    return live[: _MAX_IDENT - _SUFFIX_LEN] + _TAG


def scratch_name(live: str, backup_id: str) -> str:
    """A new database name for restoring ``backup_id`` of ``live`` (at most 63 characters)."""
    return f"{scratch_prefix(live)}{backup_id[:15].lower()}_{secrets.token_hex(2)}"


def mark(live: str, backup_id: str, verified: bool) -> str:
    """The comment a scratch database carries."""
    state = _VERIFIED if verified else _UNVERIFIED
    return f"opsflows restore of {live} from backup {backup_id}: {state}"


def database_exists(admin: PostgresTarget, name: str) -> bool:
    """Whether database ``name`` exists on the server."""
    with connect(admin, database=MAINTENANCE_DB) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def database_owner(admin: PostgresTarget, name: str) -> str | None:
    """The owner role of database ``name``, or None when it does not exist."""
    with connect(admin, database=MAINTENANCE_DB) as conn:
        row = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    return str(row[0]) if row else None


def create_database(admin: PostgresTarget, name: str, owner: str | None, comment: str) -> None:
    """``CREATE DATABASE name OWNER owner TEMPLATE template0`` (empty), then its comment."""
    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if owner:
        stmt = sql.SQL("{} OWNER {}").format(stmt, sql.Identifier(owner))
    with connect(admin, database=MAINTENANCE_DB) as conn:
        conn.execute(stmt)
        set_comment(conn, name, comment)


def set_comment(conn: psycopg.Connection[Any], name: str, comment: str | None) -> None:
    """``COMMENT ON DATABASE name IS comment`` on an open connection (None removes it)."""
    stmt = sql.SQL("COMMENT ON DATABASE {} IS {}").format(
        sql.Identifier(name), sql.Literal(comment)
    )
    conn.execute(stmt)


def drop_database(admin: PostgresTarget, name: str) -> None:
    """Drop ``name`` (sessions on it are terminated); no error when it does not exist."""
    with connect(admin, database=MAINTENANCE_DB) as conn:
        _drop(conn, name)


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def claim(admin: PostgresTarget, name: str) -> Iterator[None]:
    """Hold the claim on scratch database ``name`` for as long as this process works on it.

    Raises:
        ConflictError: another session holds it (names are random: should never happen).
    """
    with connect(admin, database=MAINTENANCE_DB) as conn:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (CLAIM_CLASS, name)
        ).fetchone()
        if not row or not row[0]:
            raise ConflictError(f"scratch database {name} is claimed by another restore")
        yield  # closing the connection (or the process ending) releases the claim


@task(name="mark scratch database verified", **retry.NETWORK)
def mark_scratch_verified(admin: PostgresTarget, name: str, live: str, backup_id: str) -> None:
    """Mark a verified restore so no later restore takes it for an abandoned one."""
    with connect(admin, database=MAINTENANCE_DB) as conn:
        set_comment(conn, name, mark(live, backup_id, verified=True))


@task(name="drop abandoned scratch databases", **retry.NETWORK)
def sweep_abandoned(admin: PostgresTarget, live: str) -> list[str]:
    """Drop the unverified scratch databases of ``live`` that no running restore claims.

    They are what a restore killed before it could clean up leaves behind (a partial,
    never verified copy). Also the restore's first contact with the server: an unreachable
    server fails here, before anything is downloaded or created.

    Args:
        admin: superuser target on the server.
        live: the live database whose scratch databases are looked at.

    Returns:
        The names of the databases dropped.
    """
    logger = get_run_logger()
    prefix = scratch_prefix(live)
    dropped: list[str] = []
    with connect(admin, database=MAINTENANCE_DB) as conn:
        rows = conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE starts_with(datname, %s) ORDER BY datname",
            (prefix,),
        ).fetchall()
        for name, comment in rows:
            text = str(comment or "")
            if not text.startswith(f"opsflows restore of {live} ") or text.endswith(_VERIFIED):
                continue
            got = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (CLAIM_CLASS, name)
            ).fetchone()
            if not got or not got[0]:
                logger.info("scratch database %s is in use by a running restore", name)
                continue
            try:
                _drop(conn, name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (CLAIM_CLASS, name))
            dropped.append(name)
            logger.warning("dropped %s, abandoned by an interrupted restore (%s)", name, text)
    return dropped


def database_sizes(admin: PostgresTarget, names: list[str]) -> dict[str, int]:
    """``pg_database_size`` in bytes of each database in ``names`` that exists."""
    with connect(admin, database=MAINTENANCE_DB) as conn:
        rows = conn.execute(
            "SELECT datname, pg_database_size(oid) FROM pg_database WHERE datname = ANY(%s)",
            (names,),
        ).fetchall()
    return {str(name): int(size) for name, size in rows}
