"""The two roles of an alternating-users pair (``<user>`` and ``<user>_clone``): their
effective privileges, compared by ``decisions.rotation.grant_parity``, and creating the clone
(a member of ``<user>`` that starts its sessions as ``<user>``) when it is missing.

Privileges are *effective* ones (``has_table_privilege`` and friends), so the owner of a table
and a member of the owner compare equal.
"""

from __future__ import annotations

from typing import Any

import psycopg
from prefect import task
from psycopg import sql

from blocks.postgres import PostgresTarget
from decisions.rotation import Privilege
from opsflows import retry
from opsflows.errors import NotFoundError
from tasks.postgres import connect

_ROLE_PRIVILEGES = """
SELECT 'attribute', a.k, a.v FROM pg_roles r, LATERAL (VALUES
  ('rolsuper', r.rolsuper::text), ('rolinherit', r.rolinherit::text),
  ('rolcreaterole', r.rolcreaterole::text), ('rolcreatedb', r.rolcreatedb::text),
  ('rolcanlogin', r.rolcanlogin::text), ('rolreplication', r.rolreplication::text),
  ('rolbypassrls', r.rolbypassrls::text), ('rolconnlimit', r.rolconnlimit::text)) a(k, v)
 WHERE r.rolname = %(role)s
UNION ALL
SELECT 'member', g.rolname, '' FROM pg_roles g
 WHERE g.rolname <> %(role)s AND pg_has_role(%(role)s, g.oid, 'USAGE')
UNION ALL
SELECT 'setting', c, '' FROM pg_db_role_setting s
  JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) c
 WHERE r.rolname = %(role)s AND s.setdatabase = 0
UNION ALL
SELECT 'database', current_database(), p FROM unnest(ARRAY['CONNECT','CREATE','TEMPORARY']) p
 WHERE has_database_privilege(%(role)s, current_database(), p)
UNION ALL
SELECT 'schema', n.nspname, p FROM pg_namespace n, unnest(ARRAY['USAGE','CREATE']) p
 WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
   AND has_schema_privilege(%(role)s, n.oid, p)
UNION ALL
SELECT 'table', format('%%I.%%I', n.nspname, c.relname), p FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace,
  unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES','TRIGGER']) p
 WHERE c.relkind IN ('r','v','m','p','f') AND n.nspname !~ '^pg_'
   AND n.nspname <> 'information_schema' AND has_table_privilege(%(role)s, c.oid, p)
UNION ALL
SELECT 'sequence', format('%%I.%%I', n.nspname, c.relname), p FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace, unnest(ARRAY['USAGE','SELECT','UPDATE']) p
 WHERE c.relkind = 'S' AND n.nspname !~ '^pg_' AND has_sequence_privilege(%(role)s, c.oid, p)
"""

_ATTRIBUTES = {
    "rolinherit": "INHERIT",
    "rolcreaterole": "CREATEROLE",
    "rolcreatedb": "CREATEDB",
    "rolreplication": "REPLICATION",
    "rolbypassrls": "BYPASSRLS",
    "rolsuper": "SUPERUSER",
}


def role_privileges(conn: psycopg.Connection[Any], role: str) -> frozenset[Privilege]:
    """Effective privileges of ``role`` in the connected database (see ``Privilege``)."""
    rows = conn.execute(_ROLE_PRIVILEGES, {"role": role}).fetchall()
    return frozenset((str(k), str(o), str(p)) for k, o, p in rows)


@task(name="read grants of a role pair", **retry.NETWORK)
def read_pair_privileges(
    admin: PostgresTarget, database: str, role: str, clone: str
) -> dict[str, frozenset[Privilege] | None]:
    """Effective privileges of both roles of the pair (None for a role that does not exist)."""
    out: dict[str, frozenset[Privilege] | None] = {}
    with connect(admin, database=database) as conn:
        for name in (role, clone):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            out[name] = role_privileges(conn, name) if exists else None
    return out


@task(name="create the clone role", **retry.ONCE)
def create_clone(admin: PostgresTarget, database: str, role: str, clone: str) -> int:
    """Create ``clone`` as the other half of ``role``'s pair; the number of settings copied.

    The clone gets ``role``'s attributes and per-role settings, becomes a member of ``role``
    and starts every session as ``role`` (``decisions.rotation.pair_links``): it holds what
    ``role`` holds, now and after later grants, and what it creates belongs to ``role``. It
    starts without a password (it cannot log in until rotation sets one).
    """
    ident = sql.Identifier
    with connect(admin, database=database, autocommit=False) as conn:
        privs = role_privileges(conn, role)
        if not privs:
            raise NotFoundError(f"role {role} does not exist in {admin.describe()}")
        attrs = {o: p for k, o, p in privs if k == "attribute"}
        options = ["LOGIN" if attrs.get("rolcanlogin") == "true" else "NOLOGIN"]
        options += [kw if attrs.get(a) == "true" else "NO" + kw for a, kw in _ATTRIBUTES.items()]
        options.append(f"CONNECTION LIMIT {int(attrs.get('rolconnlimit', '-1'))}")
        conn.execute(sql.SQL("CREATE ROLE {} " + " ".join(options)).format(ident(clone)))
        settings = sorted(o.partition("=") for k, o, _ in privs if k == "setting")
        for name, _, value in settings:
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} TO {}").format(
                    ident(clone), ident(name), sql.Literal(value)
                )
            )
        _link(conn, role, clone)
        conn.commit()
    return len(settings)


@task(name="link the clone to its role", **retry.ONCE)
def link_clone(admin: PostgresTarget, database: str, role: str, clone: str) -> int:
    """Make an existing ``clone`` act as ``role`` (a clone made before pairs were linked).

    Grants the membership, sets the session role, and hands whatever the clone owns in
    ``database`` to ``role`` (``REASSIGN OWNED``), so a migration run under either name can
    alter it. Returns the number of objects that changed owner.
    """
    ident = sql.Identifier
    with connect(admin, database=database, autocommit=False) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
            " WHERE r.rolname = %s",
            (clone,),
        ).fetchone()
        _link(conn, role, clone)
        conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident(clone), ident(role)))
        conn.commit()
    return int(row[0]) if row else 0


def _link(conn: psycopg.Connection[Any], role: str, clone: str) -> None:
    ident = sql.Identifier
    conn.execute(sql.SQL("GRANT {} TO {}").format(ident(role), ident(clone)))
    conn.execute(sql.SQL("ALTER ROLE {} SET role TO {}").format(ident(clone), sql.Literal(role)))
