"""Apply schema migrations to PostgreSQL in units, without stalling the application.

Pending files are applied in units (:func:`decisions.migrations.apply_units`). Consecutive
transactional files run in ONE transaction with ``SET LOCAL lock_timeout`` and
``statement_timeout``, each recorded in ``schema_migrations`` in that same transaction: a
failure in any of them leaves the schema and the table exactly as they were before the unit.
A file that must run outside a transaction (``CREATE INDEX CONCURRENTLY`` ...) is a unit of
its own: it runs statement by statement in autocommit with the same timeouts set for the
session, and is recorded after its last statement; an index a killed earlier attempt left
INVALID is dropped (concurrently) before building again. Its statements are guarded with
``IF [NOT] EXISTS`` or repeatable (the plan refuses others), so after a partial failure the
whole file runs again safely.

A failing statement's error carries where it failed (:func:`failed_at`): the file and line,
for the failure report (:mod:`decisions.migration_failure`). Literals of a statement that
names a credential are masked in the error.

A lock not granted within ``lock_timeout`` (``LockNotAvailable``) becomes
:class:`~opsflows.errors.Throttled` and the unit is retried with backoff: waiting for a lock
queues every later query on that table behind us, so we give up quickly and come back instead.
A session advisory lock keeps two migrators off the same database.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from prefect import task
from prefect.logging import get_run_logger
from psycopg import errors as pgerr
from psycopg import sql

from blocks.postgres import PostgresTarget
from decisions.migration_failure import FailedAt
from decisions.migrations import Applied, ApplyPolicy, ApplyUnit, MigrationPlan
from decisions.sql_locks import Statement, concurrent_index_names
from opsflows import retry
from opsflows.errors import (
    ConfigurationError,
    OpsError,
    PermanentError,
    Throttled,
    TransientError,
    statement_secrets,
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
_PLACE = "migration_failed_at"


def _placed(err: OpsError, at: FailedAt | None) -> OpsError:
    """``err`` carrying where the migration failed (kept when the error is pickled)."""
    if at is not None:
        vars(err)[_PLACE] = at
    return err


def failed_at(exc: BaseException) -> FailedAt | None:
    """Where a migration error says it failed: file and line; None when it does not say."""
    at = vars(exc).get(_PLACE)
    return at if isinstance(at, FailedAt) else None


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
        raise _placed(
            ConfigurationError(
                f"{m.name} was edited after it was applied (recorded sha256 {str(found[0])[:12]})",
                hint="restore the file and put the change in a new migration",
            ),
            FailedAt(m.name),
        )
    return found is not None


def _run(
    conn: psycopg.Connection[Any], target: PostgresTarget, plan: MigrationPlan, stmt: Statement
) -> None:
    try:
        conn.execute(stmt.sql.encode())
    except psycopg.Error as exc:
        err = _translate(exc, target, f"migration {plan.migration.name} line {stmt.line}")
        message, hint = err.message, err.hint
        for value in statement_secrets(stmt.sql):
            message = message.replace(value, "***")
        if not plan.transactional and stmt is not plan.migration.statements[0]:
            hint = (
                "the statements before it are committed (this file runs outside a"
                " transaction); each is guarded with IF [NOT] EXISTS or repeatable (the plan"
                " checks it), so fix the cause and re-run"
            )
        at = FailedAt(plan.migration.name, stmt.line)
        raise _placed(type(err)(message, hint=hint), at) from exc


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


def _apply_file(
    conn: psycopg.Connection[Any],
    target: PostgresTarget,
    plan: MigrationPlan,
    applied_by: str,
    attempt: int,
    log: Logger,
) -> dict[str, Any]:
    m = plan.migration
    started = time.monotonic()
    result: dict[str, Any] = {"name": m.name, "transactional": plan.transactional}
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


def _attempt(
    target: PostgresTarget,
    unit: ApplyUnit,
    policy: ApplyPolicy,
    applied_by: str,
    attempt: int,
    log: Logger,
) -> list[dict[str, Any]]:
    with _session(target, f"migration {', '.join(unit.names)}") as conn:
        tx = conn.transaction() if unit.transactional else contextlib.nullcontext()
        with tx:
            _set_timeouts(conn, policy, local=unit.transactional)
            _claim(conn, xact=unit.transactional)
            conn.execute(DDL)
            return [_apply_file(conn, target, f, applied_by, attempt, log) for f in unit.files]


def apply_unit(
    target: PostgresTarget,
    unit: ApplyUnit,
    policy: ApplyPolicy,
    applied_by: str,
    *,
    log: Logger | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Apply one unit (all its files or none of them), retrying transient failures (lock
    timeouts) of the whole unit with backoff.

    Returns, per file: ``name``, ``transactional``, ``skipped`` (already recorded, same
    checksum), ``attempts`` and ``duration_s``. Raises the last transient error once the
    retries are spent, and any permanent error at once; :func:`failed_at` says where.
    """
    logger = log or _LOG
    delays = policy.delays()
    for attempt in range(1, len(delays) + 2):
        try:
            return _attempt(target, unit, policy, applied_by, attempt, logger)
        except TransientError as exc:
            if attempt > len(delays):
                raise _placed(
                    type(exc)(
                        f"{exc.message} (gave up after {attempt} attempts)",
                        hint="find the long transaction holding the table (pg_stat_activity,"
                        " pg_locks) or run at a quieter time",
                    ),
                    failed_at(exc),
                ) from exc
            wait = delays[attempt - 1]
            logger.warning("attempt %d: %s; retrying in %.1f s", attempt, exc.message, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def apply_migration(
    target: PostgresTarget,
    plan: MigrationPlan,
    policy: ApplyPolicy,
    applied_by: str,
    *,
    log: Logger | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Apply one file as a unit of its own (:func:`apply_unit`); its result."""
    return apply_unit(target, ApplyUnit((plan,)), policy, applied_by, log=log, sleep=sleep)[0]


def index_states(
    target: PostgresTarget, names: Sequence[str]
) -> tuple[dict[str, bool | None], frozenset[str]]:
    """Each named index's validity (None: no such index), and every INVALID index of the
    database by its qualified name (``pg_index.indisvalid``)."""
    with connect(target) as conn:
        named = conn.execute(
            "SELECT n, (SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid ="
            " to_regclass(n)) FROM unnest(%s::text[]) AS n",
            (list(names),),
        ).fetchall()
        invalid = conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
        ).fetchall()
    return {str(n): v for n, v in named}, frozenset(str(r[0]) for r in invalid)


@task(name="apply migrations", **retry.ONCE)
def apply_batch(
    target: PostgresTarget, unit: ApplyUnit, policy: ApplyPolicy, applied_by: str
) -> list[dict[str, Any]]:
    """Apply one unit of migration files (all or none) with lock/statement timeouts; lock
    timeouts retry the unit inside.

    Args:
        target: Database to migrate.
        unit: The files (one transaction, or one file outside a transaction).
        policy: Timeouts and lock-timeout retry schedule.
        applied_by: Recorded in ``schema_migrations.applied_by`` (the flow run id).
    """
    return apply_unit(target, unit, policy, applied_by, log=get_run_logger())


@task(name="inspect indexes", **retry.NETWORK)
def inspect_indexes(
    target: PostgresTarget, names: Sequence[str] = ()
) -> tuple[dict[str, bool | None], frozenset[str]]:
    """:func:`index_states` as a task: for the failure report of a migration.

    Args:
        target: The migrated database.
        names: Indexes a file builds or drops CONCURRENTLY, as it spells them.
    """
    return index_states(target, names)
