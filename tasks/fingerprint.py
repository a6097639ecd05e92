"""The data fingerprint of a backup, taken in the snapshot ``pg_dump`` reads.

A REPEATABLE READ, READ ONLY transaction exports its snapshot (``pg_export_snapshot()``)
and stays open for the whole dump; ``pg_dump --snapshot`` reads exactly what the fingerprint
queries count (tables, row counts, highest keys, schema hash). The restore verification runs
the same queries on the restored copy (:mod:`tasks.verify`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from blocks.postgres import PostgresTarget
from decisions.backups import Fingerprint, TableFingerprint
from tasks.postgres import connect, pg_errors

# No "%" anywhere in these queries: GX runs them through SQLAlchemy with "%" escaped for
# the driver and never unescaped, which would change what they compute.

#: Tables whose data pg_dump writes: ordinary and partitioned tables outside the system
#: schemas that do not belong to an extension.
TABLES_SQL = """
SELECT n.nspname, c.relname,
       (SELECT a.attname FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1
           AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)) AS pk
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND NOT starts_with(n.nspname, 'pg_toast') AND NOT starts_with(n.nspname, 'pg_temp')
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND d.deptype = 'e')
 ORDER BY 1, 2
"""

_USER_SCHEMA = (
    "{n}.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND NOT starts_with({n}.nspname, 'pg_toast') AND NOT starts_with({n}.nspname, 'pg_temp')"
)

#: One hex SHA-256 over a sorted description of columns, constraints and indexes. Run it
#: with ``search_path = pg_catalog`` so every name it prints is schema-qualified the same
#: way in the dumped and the restored database (no OIDs, no owners).
SCHEMA_HASH_SQL = f"""
SELECT encode(sha256(convert_to(coalesce(string_agg(line, E'\\n' ORDER BY line), ''),
                                'UTF8')), 'hex') AS schema_hash
  FROM (
    SELECT concat_ws(' ', 'column', quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                     row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                     quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
                     'notnull=' || a.attnotnull,
                     'default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')) AS line
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
       AND {_USER_SCHEMA.format(n="n")}
    UNION ALL
    SELECT concat_ws(' ', 'constraint', quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                     quote_ident(k.conname), pg_get_constraintdef(k.oid))
      FROM pg_constraint k
      JOIN pg_class c ON c.oid = k.conrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE {_USER_SCHEMA.format(n="n")}
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE {_USER_SCHEMA.format(n="n")}
  ) AS schema_lines
"""


def table_rows_query(tables: list[tuple[str, str, str | None]]) -> sql.Composed:
    """``SELECT name, count(*), max(pk)`` for every table, as one UNION ALL query."""
    selects = [
        sql.SQL(
            "SELECT {label} AS table_name, count(*)::bigint AS row_count, {mx} AS max_pk"
            " FROM {schema}.{table}"
        ).format(
            label=sql.Literal(f"{schema}.{table}"),
            mx=sql.SQL("max({})::bigint").format(sql.Identifier(pk))
            if pk
            else sql.SQL("NULL::bigint"),
            schema=sql.Identifier(schema),
            table=sql.Identifier(table),
        )
        for schema, table, pk in tables
    ]
    return sql.SQL(" UNION ALL ").join(selects)


def take_fingerprint(conn: psycopg.Connection[Any]) -> Fingerprint:
    """Row counts, max primary keys and the schema hash, in the connection's snapshot."""
    tables = [(str(s), str(t), pk) for s, t, pk in conn.execute(TABLES_SQL).fetchall()]
    counted: list[TableFingerprint] = []
    if tables:
        for name, rows, max_pk in conn.execute(table_rows_query(tables)).fetchall():
            counted.append(TableFingerprint(name=str(name), rows=int(rows), max_pk=max_pk))
    conn.execute("SET LOCAL search_path TO pg_catalog")
    row = conn.execute(SCHEMA_HASH_SQL).fetchone()
    assert row is not None
    return Fingerprint(tables=tuple(sorted(counted, key=lambda t: t.name)), schema_hash=str(row[0]))


@dataclass(frozen=True)
class Snapshot:
    """An exported snapshot and what the server said when it was taken."""

    snapshot_id: str
    taken_at: datetime
    server_version: str
    server_version_num: int


@contextlib.contextmanager
def exported_snapshot(
    target: PostgresTarget,
) -> Iterator[tuple[psycopg.Connection[Any], Snapshot]]:
    """A REPEATABLE READ, READ ONLY transaction that exports its snapshot; held open."""
    with connect(target, autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(
            "SELECT pg_export_snapshot(), now(), current_setting('server_version'),"
            " current_setting('server_version_num')::int"
        ).fetchone()
        assert row is not None
        snap = Snapshot(str(row[0]), row[1].astimezone(UTC), str(row[2]), int(row[3]))
        try:
            yield conn, snap
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()


def fingerprint_in(
    target: PostgresTarget, conn: psycopg.Connection[Any], timeout_s: float
) -> Fingerprint:
    """The fingerprint in ``conn``'s snapshot, each query bounded by ``timeout_s``.

    It runs beside ``pg_dump``, so its counts take no parallel workers: the same exact
    counts for about a fifth less CPU (measured on the benchmark data), and none of the
    cores the dump is using (the restore verification, alone on its copy, keeps them).
    """
    with pg_errors(target, f"fingerprint {target.describe()}"):
        bound_ms = max(1, round(timeout_s * 1000))
        conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(bound_ms),))
        conn.execute("SELECT set_config('max_parallel_workers_per_gather', '0', true)")
        return take_fingerprint(conn)
