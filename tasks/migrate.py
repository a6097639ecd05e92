"""Apply schema migrations to PostgreSQL, one file at a time, without stalling the application.

Each transactional file runs in its own transaction with ``SET LOCAL lock_timeout`` and
``statement_timeout``, and is recorded in ``schema_migrations`` in that same transaction: a
failure leaves the schema and the table exactly as they were. A file that must run outside
a transaction (``CREATE INDEX CONCURRENTLY`` ...) runs statement by statement in autocommit
with the same timeouts set for the session, and is recorded after its last statement; an
index a killed earlier attempt left INVALID is dropped (concurrently) before building again.

A lock not granted within ``lock_timeout`` (``LockNotAvailable``) becomes
:class:`~opsflows.errors.Throttled` and is retried with backoff: waiting for a lock queues
every later query on that table behind us, so we give up quickly and come back instead.
A session advisory lock keeps two migrators off the same database.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from prefect import task
from prefect.logging import get_run_logger
from psycopg import errors as pgerr
from psycopg import sql

from blocks.postgres import PostgresTarget
from decisions.migrations import (
    Applied,
    ApplyPolicy,
    Expectation,
    MigrationPlan,
    SchemaSnapshot,
    check_expectations,
)
from decisions.sql_locks import Statement, concurrent_index_names
from opsflows import retry
from opsflows.errors import (
    ConfigurationError,
    OpsError,
    PermanentError,
    Throttled,
    TransientError,
)
from tasks.postgres import connect, pg_errors, translate

Logger = logging.Logger | logging.LoggerAdapter[Any]
_LOG = logging.getLogger(__name__)

DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name          text PRIMARY KEY,
    checksum      text NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now(),
    duration_s    double precision NOT NULL,
    applied_by    text NOT NULL,
    transactional boolean NOT NULL,
    attempts      integer NOT NULL
)
"""
#: pg_advisory_lock key shared by every opsflows migrator ("opsflows migrate").
ADVISORY_KEY = 0x6F7073_6D696772


@dataclass(frozen=True)
class DatabaseState:
    """What planning needs from the database: applied files and the server version."""

    applied: tuple[Applied, ...]
    server_version: str
    server_version_num: int


@task(name="read migration state", **retry.NETWORK)
def read_database_state(target: PostgresTarget) -> DatabaseState:
    """Applied migrations and server version; read-only (the table is not created here)."""
    with connect(target) as conn:
        row = conn.execute(
            "SELECT split_part(current_setting('server_version'), ' ', 1),"
            " current_setting('server_version_num')::int,"
            " to_regclass('schema_migrations') IS NOT NULL"
        ).fetchone()
        assert row is not None
        rows = (
            conn.execute("SELECT name, checksum FROM schema_migrations ORDER BY name").fetchall()
            if row[2]
            else []
        )
    return DatabaseState(tuple(Applied(n, c) for n, c in rows), str(row[0]), int(row[1]))


def _translate(exc: psycopg.Error, target: PostgresTarget, where: str) -> OpsError:
    if isinstance(exc, pgerr.LockNotAvailable):
        return Throttled(f"{where}: lock not granted within lock_timeout")
    if isinstance(exc, pgerr.DeadlockDetected):
        return Throttled(f"{where}: deadlock with another session; rolled back")
    if isinstance(exc, pgerr.QueryCanceled):
        return PermanentError(
            f"{where}: canceled by statement_timeout (or an operator); nothing was committed",
            hint="raise statement_timeout_s, or split the work into smaller migrations",
        )
    return translate(exc, target, where)


@contextlib.contextmanager
def _session(target: PostgresTarget, where: str) -> Iterator[psycopg.Connection[Any]]:
    with pg_errors(target, f"connect to {target.describe()}"):
        conn = psycopg.connect(target.conninfo(), autocommit=True)
    try:
        yield conn
    except psycopg.Error as exc:
        raise _translate(exc, target, where) from exc
    finally:
        conn.close()


def _set_timeouts(conn: psycopg.Connection[Any], policy: ApplyPolicy, *, local: bool) -> None:
    conn.execute(
        "SELECT set_config('lock_timeout', %s, %s), set_config('statement_timeout', %s, %s),"
        " CASE WHEN current_setting('server_version_num')::int >= 140000"
        " THEN set_config('client_connection_check_interval', '1000ms', %s) END",
        (
            f"{round(policy.lock_timeout_s * 1000)}ms",
            local,
            f"{round(policy.statement_timeout_s * 1000)}ms",
            local,
            local,
        ),
    )


def _claim(conn: psycopg.Connection[Any], *, xact: bool) -> None:
    fn = "pg_try_advisory_xact_lock" if xact else "pg_try_advisory_lock"
    row = conn.execute(f"SELECT {fn}(%s)", (ADVISORY_KEY,)).fetchone()
    if not row or not row[0]:
        raise Throttled("another migration is running on this database (advisory lock held)")


def _recorded(conn: psycopg.Connection[Any], plan: MigrationPlan) -> bool:
    m = plan.migration
    row = conn.execute("SELECT checksum FROM schema_migrations WHERE name = %s", (m.name,))
    found = row.fetchone()
    if found and found[0] != m.checksum:
        raise ConfigurationError(
            f"{m.name} was edited after it was applied (recorded sha256 {str(found[0])[:12]})",
            hint="restore the file and put the change in a new migration",
        )
    return found is not None


def _run(
    conn: psycopg.Connection[Any], target: PostgresTarget, plan: MigrationPlan, stmt: Statement
) -> None:
    try:
        conn.execute(stmt.sql.encode())
    except psycopg.Error as exc:
        err = _translate(exc, target, f"migration {plan.migration.name} line {stmt.line}")
        if plan.transactional or stmt is plan.migration.statements[0]:
            raise err from exc
        raise type(err)(
            err.message,
            hint="the statements before it are committed (this file runs outside a"
            " transaction); they are idempotent, so fix the cause and re-run",
        ) from exc


def _drop_invalid(conn: psycopg.Connection[Any], names: Iterable[str], log: Logger) -> None:
    for name in names:
        row = conn.execute(
            "SELECT i.indexrelid::regclass::text FROM pg_index i"
            " WHERE i.indexrelid = to_regclass(%s) AND NOT i.indisvalid",
            (name,),
        ).fetchone()
        if row:
            log.warning("dropping INVALID index %s left by an interrupted build", row[0])
            conn.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.SQL(str(row[0])))
            )


def _attempt(
    target: PostgresTarget,
    plan: MigrationPlan,
    policy: ApplyPolicy,
    applied_by: str,
    attempt: int,
    log: Logger,
) -> dict[str, Any]:
    m = plan.migration
    started = time.monotonic()
    result: dict[str, Any] = {"name": m.name, "transactional": plan.transactional}
    with _session(target, f"migration {m.name}") as conn:
        tx = conn.transaction() if plan.transactional else contextlib.nullcontext()
        with tx:
            _set_timeouts(conn, policy, local=plan.transactional)
            _claim(conn, xact=plan.transactional)
            conn.execute(DDL)
            if _recorded(conn, plan):
                return {**result, "skipped": True, "attempts": attempt, "duration_s": 0.0}
            if not plan.transactional:
                _drop_invalid(conn, concurrent_index_names(m.statements), log)
            for stmt in m.statements:
                _run(conn, target, plan, stmt)
            duration = round(time.monotonic() - started, 3)
            conn.execute(
                "INSERT INTO schema_migrations"
                " (name, checksum, duration_s, applied_by, transactional, attempts)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (m.name, m.checksum, duration, applied_by, plan.transactional, attempt),
            )
    return {**result, "skipped": False, "attempts": attempt, "duration_s": duration}


def apply_migration(
    target: PostgresTarget,
    plan: MigrationPlan,
    policy: ApplyPolicy,
    applied_by: str,
    *,
    log: Logger | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Apply one file, retrying transient failures (lock timeouts) with backoff.

    Returns ``name``, ``transactional``, ``skipped`` (already recorded, same checksum),
    ``attempts`` and ``duration_s``. Raises the last transient error once the retries are
    spent, and any permanent error at once.
    """
    logger = log or _LOG
    delays = policy.delays()
    for attempt in range(1, len(delays) + 2):
        try:
            return _attempt(target, plan, policy, applied_by, attempt, logger)
        except TransientError as exc:
            if attempt > len(delays):
                raise type(exc)(
                    f"{exc.message} (gave up after {attempt} attempts)",
                    hint="find the long transaction holding the table (pg_stat_activity,"
                    " pg_locks) or run at a quieter time",
                ) from exc
            wait = delays[attempt - 1]
            logger.warning("attempt %d: %s; retrying in %.1f s", attempt, exc.message, wait)
            sleep(wait)
    raise AssertionError("unreachable")


_RELS = """
WITH rels AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
      AND c.relkind <> 't' AND c.relname NOT IN ('schema_migrations', 'schema_migrations_pkey')
)
"""
_HASH = (
    _RELS
    + """
SELECT 'rel ' || nspname || '.' || relname || ' ' || relkind::text FROM rels
UNION ALL
SELECT 'col ' || r.nspname || '.' || r.relname || '.' || a.attnum || ' ' || a.attname || ' '
       || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' '
       || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
UNION ALL
SELECT 'con ' || r.nspname || '.' || r.relname || ' ' || co.conname || ' '
       || pg_get_constraintdef(co.oid) || ' valid=' || co.convalidated
FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
UNION ALL
SELECT 'idx ' || pg_get_indexdef(i.indexrelid) || ' valid=' || i.indisvalid
FROM rels r JOIN pg_index i ON i.indexrelid = r.oid
UNION ALL
SELECT 'trg ' || pg_get_triggerdef(t.oid) FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid
WHERE NOT t.tgisinternal
UNION ALL
SELECT 'view ' || nspname || '.' || relname || ' ' || md5(pg_get_viewdef(oid)) FROM rels
WHERE relkind IN ('v', 'm')
UNION ALL
SELECT 'type ' || n.nspname || '.' || t.typname || ' ' || t.typtype::text || ' '
       || coalesce(string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder), '')
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_enum e ON e.enumtypid = t.oid
WHERE t.typtype IN ('e', 'd') AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\\_%'
GROUP BY n.nspname, t.typname, t.typtype
UNION ALL
SELECT 'fn ' || n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
       || ') ' || md5(coalesce(p.prosrc, ''))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
"""
)
_SNAPSHOT = (
    _RELS
    + """
SELECT 'table', nspname, relname, NULL::name, NULL::boolean FROM rels
WHERE relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'column', r.nspname, r.relname, a.attname, NULL::boolean
FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'index', r.nspname, r.relname, NULL::name, i.indisvalid
FROM rels r JOIN pg_index i ON i.indexrelid = r.oid
"""
)


def schema_fingerprint(target: PostgresTarget) -> tuple[str, int]:
    """SHA-256 over the user schema (tables, columns, constraints, indexes and their
    validity, triggers, views, enums/domains, functions) and the number of objects hashed;
    ``schema_migrations`` itself is left out."""
    with connect(target) as conn:
        lines = sorted(str(r[0]) for r in conn.execute(_HASH).fetchall() if r[0] is not None)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines)


def schema_snapshot(target: PostgresTarget) -> SchemaSnapshot:
    """Tables, columns and indexes (with validity), lowercase, with and without schema."""
    tables: set[str] = set()
    columns: set[str] = set()
    indexes: dict[str, bool] = {}
    with connect(target) as conn:
        for kind, nsp, rel, col, valid in conn.execute(_SNAPSHOT).fetchall():
            names = (rel.lower(), f"{nsp}.{rel}".lower())
            if kind == "table":
                tables.update(names)
            elif kind == "column":
                columns.update(f"{n}.{col.lower()}" for n in names)
            else:
                indexes.update(dict.fromkeys(names, bool(valid)))
    return SchemaSnapshot(frozenset(tables), frozenset(columns), indexes)


@task(name="apply migration", **retry.ONCE)
def apply_one(
    target: PostgresTarget, plan: MigrationPlan, policy: ApplyPolicy, applied_by: str
) -> dict[str, Any]:
    """Apply one migration file with lock/statement timeouts; lock timeouts retry inside.

    Args:
        target: Database to migrate.
        plan: The file's plan (statements, transaction mode).
        policy: Timeouts and lock-timeout retry schedule.
        applied_by: Recorded in ``schema_migrations.applied_by`` (the flow run id).
    """
    return apply_migration(target, plan, policy, applied_by, log=get_run_logger())


@task(name="hash schema", **retry.NETWORK)
def hash_schema(target: PostgresTarget) -> str:
    """Fingerprint the database schema (SHA-256), to compare before and after."""
    return schema_fingerprint(target)[0]


@task(name="verify migrated schema", **retry.NETWORK)
def verify_schema(target: PostgresTarget, expectations: tuple[Expectation, ...]) -> tuple[str, ...]:
    """Check the tables, columns and indexes the migrations declared; the failures.

    Args:
        target: Database that was migrated.
        expectations: The ``-- verify:`` declarations of the applied files, folded in order.
    """
    return check_expectations(expectations, schema_snapshot(target))
