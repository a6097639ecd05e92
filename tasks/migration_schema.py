"""The schema of a migrated database: a fingerprint to compare before and after, and a
snapshot of tables, columns and indexes (with validity) for the ``-- verify:`` checks.

``schema_migrations`` itself is left out of both: applying a migration changes the schema,
recording it does not.
"""

from __future__ import annotations

import hashlib

from prefect import task

from blocks.postgres import PostgresTarget
from decisions.migration_verify import SchemaSnapshot, check_expectations
from decisions.migrations import Expectation
from opsflows import retry
from tasks.postgres import connect

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
