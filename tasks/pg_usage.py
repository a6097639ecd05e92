"""What PostgreSQL holds on disk and who is connected: sizes, the WAL, ``pg_stat_activity``.

Read-only. The WAL listing (``pg_ls_waldir``) and every session's state need the
``pg_monitor`` role or a superuser: the runbooks pass a block whose role has them.
"""

from __future__ import annotations

import psycopg
from prefect import task

from blocks.postgres import PostgresTarget
from decisions.triage_disk import DatabaseUsage
from decisions.triage_restart import Connections
from opsflows import retry
from opsflows.settings import get_settings
from tasks.postgres import connect

_DATABASES = """
SELECT datname, pg_database_size(datname) FROM pg_database
WHERE datallowconn ORDER BY 2 DESC
"""
_RELATIONS = """
SELECT n.nspname || '.' || c.relname,
       CASE WHEN c.relkind IN ('i', 'I') THEN 'index' ELSE 'table' END,
       pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 3 DESC LIMIT %s
"""
_WAL = "SELECT coalesce(sum(size), 0), count(*) FROM pg_ls_waldir()"
_ACTIVITY = """
SELECT coalesce(state, backend_type), coalesce(application_name, ''), count(*)
FROM pg_stat_activity GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2
"""


@task(name="read PostgreSQL disk use", **retry.NETWORK)
def database_usage(target: PostgresTarget, top: int = 10) -> DatabaseUsage:
    """Every database's size, the ``top`` largest tables and indexes of ``target``'s
    database (``pg_total_relation_size``), and the WAL (``pg_ls_waldir``)."""
    with connect(target, statement_timeout_s=get_settings().pg_statement_timeout_s) as conn:
        databases = conn.execute(_DATABASES).fetchall()
        relations = conn.execute(_RELATIONS, (top,)).fetchall()
        try:
            wal = conn.execute(_WAL).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            wal = None  # the role lacks pg_monitor: the sizes above still tell a lot
    return DatabaseUsage(
        databases=tuple((str(name), int(size)) for name, size in databases),
        relations=tuple((str(name), str(kind), int(size)) for name, kind, size in relations),
        wal_bytes=None if wal is None else int(wal[0]),
        wal_files=None if wal is None else int(wal[1]),
    )


@task(name="read connections by state", **retry.NETWORK)
def connections_by_state(target: PostgresTarget) -> Connections:
    """``pg_stat_activity`` by state (the backend type for background processes) and
    application name."""
    with connect(target, statement_timeout_s=get_settings().pg_statement_timeout_s) as conn:
        rows = conn.execute(_ACTIVITY).fetchall()
    return Connections(tuple((str(s), str(a), int(n)) for s, a, n in rows))
