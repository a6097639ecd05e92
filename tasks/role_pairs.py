"""The two roles of an alternating-users pair (``<user>`` and ``<user>_clone``): their
effective privileges, compared by ``decisions.rotation.grant_parity``, and creating the clone
with the same grants when it is missing.

Privileges are *effective* ones (``has_table_privilege`` and friends), so a role that owns a
table and a clone granted ALL on it compare equal.
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
SELECT 'member', g.rolname, '' FROM pg_auth_members m
  JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
 WHERE r.rolname = %(role)s
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

_GRANT = {
    "database": "GRANT {priv} ON DATABASE {obj} TO {role}",
    "schema": "GRANT {priv} ON SCHEMA {obj} TO {role}",
    "table": "GRANT {priv} ON TABLE {obj} TO {role}",
    "sequence": "GRANT {priv} ON SEQUENCE {obj} TO {role}",
}
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
    """Create ``clone`` with the attributes, memberships and effective grants of ``role``.

    The clone starts without a password (it cannot log in until rotation sets one). Default
    privileges are set both ways, so objects either role creates later stay shared. Returns
    the number of grants copied.
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
        copied = 0
        for kind, obj, priv in sorted(privs):
            if kind == "member":
                conn.execute(sql.SQL("GRANT {} TO {}").format(ident(obj), ident(clone)))
            elif kind in _GRANT:
                # tables and sequences come back quoted by format('%I.%I') on the server
                target = sql.SQL(obj) if kind in ("table", "sequence") else ident(obj)
                text = _GRANT[kind].format(priv=priv, obj="{obj}", role="{role}")
                conn.execute(sql.SQL(text).format(obj=target, role=ident(clone)))
            else:
                continue
            copied += 1
        for owner, grantee in ((role, clone), (clone, role)):
            for kind in ("TABLES", "SEQUENCES"):
                conn.execute(
                    sql.SQL(
                        "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT ALL ON " + kind + " TO {}"
                    ).format(ident(owner), ident(grantee))
                )
        conn.commit()
    return copied
