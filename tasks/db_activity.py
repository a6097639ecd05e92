"""Database activity steps of the database-slow runbook: the sessions and their lock chains
(``pg_stat_activity``, ``pg_blocking_pids``), the slowest statements (``pg_stat_statements``),
a probe query's time, the host's CPU and memory (node_exporter through Prometheus), and
``pg_terminate_backend``. ``psycopg`` errors are translated here (:func:`tasks.postgres.connect`).

The reads connect as a role that sees every session (``pg_monitor`` or a superuser: the
``app-db-admin`` block); terminating another role's session needs ``pg_signal_backend`` or a
superuser. The terminate statement checks the policy's hard limits once more in SQL (never a
superuser or replication role, never itself), whatever the caller decided.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from prefect import task

from blocks.postgres import PostgresTarget
from decisions.triage_database import Session, Statement
from opsflows import retry
from opsflows.settings import get_settings
from tasks.metrics import query
from tasks.postgres import connect

_SESSIONS = """
SELECT a.pid, a.backend_start, coalesce(a.usename, ''), coalesce(r.rolsuper, false),
       coalesce(r.rolreplication, false), coalesce(a.backend_type, ''), a.state,
       coalesce(a.application_name, ''),
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8,
       extract(epoch FROM clock_timestamp() - a.query_start)::float8,
       extract(epoch FROM clock_timestamp() - a.state_change)::float8,
       a.wait_event_type, left(coalesce(a.query, ''), 500), pg_blocking_pids(a.pid),
       a.pid = pg_backend_pid()
FROM pg_stat_activity a
LEFT JOIN pg_roles r ON r.oid = a.usesysid
WHERE (a.datname = current_database() OR a.backend_type = 'walsender')
  AND a.backend_start IS NOT NULL
ORDER BY a.pid
"""

_STATEMENTS = """
SELECT calls, mean_exec_time, total_exec_time, left(query, 300)
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY mean_exec_time DESC
LIMIT %s
"""

# The hard limits again, in the statement itself: a pid reused by another session, a
# superuser or replication role, or this very connection is never signalled.
_TERMINATE = """
SELECT pg_terminate_backend(a.pid, 5000)
FROM pg_stat_activity a
JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.pid = %s AND a.backend_start = %s AND a.pid <> pg_backend_pid()
  AND NOT r.rolsuper AND NOT r.rolreplication AND a.backend_type = 'client backend'
"""


def _session(row: tuple[Any, ...]) -> Session:
    return Session(
        pid=int(row[0]),
        backend_start=row[1],
        role=str(row[2]),
        superuser=bool(row[3]),
        replication=bool(row[4]),
        backend_type=str(row[5]),
        state=row[6],
        application=str(row[7]),
        xact_age_s=row[8],
        query_age_s=row[9],
        state_age_s=row[10],
        wait=row[11],
        query=str(row[12]),
        blocked_by=tuple(int(p) for p in row[13] or ()),
        ours=bool(row[14]),
    )


@task(name="read database sessions", **retry.NETWORK)
def read_sessions(target: PostgresTarget) -> tuple[Session, ...]:
    """Every backend of ``target``'s database (and the replication senders), with ages and
    the pids each waits on (``pg_blocking_pids``); this read's own session is ``ours``."""
    with connect(target, statement_timeout_s=get_settings().pg_statement_timeout_s) as conn:
        rows = conn.execute(_SESSIONS).fetchall()
    return tuple(_session(r) for r in rows)


@task(name="read the slowest statements", **retry.NETWORK)
def slowest_statements(target: PostgresTarget, limit: int = 5) -> tuple[Statement, ...]:
    """The statements of ``target``'s database with the highest mean time
    (``pg_stat_statements``; a ConfigurationError when the extension is missing)."""
    with connect(target, statement_timeout_s=get_settings().pg_statement_timeout_s) as conn:
        rows = conn.execute(_STATEMENTS, (limit,)).fetchall()
    return tuple(Statement(int(r[0]), float(r[1]), float(r[2]), str(r[3])) for r in rows)


@task(name="time a probe query", **retry.NETWORK)
def probe_query(target: PostgresTarget, timeout_s: float = 10.0) -> float:
    """Milliseconds the database takes to answer a probe query as the application's role
    (a catalog read planned and executed on the server; connecting is not counted)."""
    with connect(target, statement_timeout_s=timeout_s) as conn:
        started = time.perf_counter()
        conn.execute("SELECT count(*) FROM pg_class").fetchone()
        return round((time.perf_counter() - started) * 1000, 3)


@task(name="terminate a backend", **retry.ONCE)
def terminate_backend(target: PostgresTarget, pid: int, backend_start: datetime) -> bool:
    """``pg_terminate_backend`` of the session ``pid`` started at ``backend_start``; False when
    it is gone already, is another session now, or is one the hard limits protect."""
    with connect(target, statement_timeout_s=get_settings().pg_statement_timeout_s) as conn:
        row = conn.execute(_TERMINATE, (pid, backend_start)).fetchone()
    return bool(row and row[0])


def host_cpu_query(job: str = "node", window: str = "1m") -> str:
    """PromQL: the share of CPU time the host spent busy (node_exporter)."""
    return f'1 - avg(rate(node_cpu_seconds_total{{job="{job}", mode="idle"}}[{window}]))'


def host_memory_query(job: str = "node") -> str:
    """PromQL: the share of the host's memory in use (node_exporter)."""
    return (
        f'1 - sum(node_memory_MemAvailable_bytes{{job="{job}"}}) '
        f'/ sum(node_memory_MemTotal_bytes{{job="{job}"}})'
    )


@task(name="read the database host's CPU and memory", **retry.NETWORK)
def host_usage(prometheus_url: str, job: str = "node") -> tuple[float | None, float | None]:
    """The database host's busy CPU share and used memory share (None: no data)."""
    return query(prometheus_url, host_cpu_query(job)), query(prometheus_url, host_memory_query(job))
