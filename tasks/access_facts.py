"""What the access audit reads: PostgreSQL roles, Secrets Manager dates, credential blocks.

Read-only, every one of them. No secret value is ever read: roles come from the catalogs,
secrets from ``ListSecrets`` (dates and names, never ``GetSecretValue``), blocks from the
Prefect API with ``include_secrets=False`` and only their names, types and secret field
names kept. Kubernetes RBAC is read by :mod:`tasks.rbac`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.client.orchestration import get_client
from prefect_aws import AwsCredentials

from blocks.postgres import PostgresTarget
from decisions.access_audit import CredentialBlock, PgRole, SecretAge
from opsflows import retry
from opsflows.errors import ServiceUnavailable, scrub
from opsflows.settings import get_settings
from tasks.postgres import connect
from tasks.secrets import secrets_client
from tasks.storage import aws_errors

_ROLES = """
SELECT r.rolname, r.rolcanlogin,
       ARRAY_REMOVE(ARRAY[
         CASE WHEN r.rolsuper THEN 'superuser' END,
         CASE WHEN r.rolcreaterole THEN 'createrole' END,
         CASE WHEN r.rolcreatedb THEN 'createdb' END,
         CASE WHEN r.rolreplication THEN 'replication' END,
         CASE WHEN r.rolbypassrls THEN 'bypassrls' END], NULL),
       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid ORDER BY 1),
       CASE WHEN r.rolvaliduntil = 'infinity' THEN NULL ELSE r.rolvaliduntil END,
       ARRAY(SELECT p FROM unnest(ARRAY['CONNECT', 'CREATE', 'TEMPORARY']) AS p
             WHERE has_database_privilege(r.oid, current_database(), p))
FROM pg_roles r ORDER BY r.rolname
"""
# Explicit grants on the app database's tables and views (owners hold every privilege on
# what they own: counted separately).
_TABLE_GRANTS = """
SELECT r.rolname, a.privilege_type, count(DISTINCT c.oid)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) AS a
JOIN pg_roles r ON r.oid = a.grantee
WHERE c.relkind IN ('r', 'p', 'v', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
GROUP BY 1, 2 ORDER BY 1, 2
"""
_OWNED = """
SELECT pg_get_userbyid(c.relowner), count(*)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
GROUP BY 1
"""


@task(name="read PostgreSQL roles", **retry.NETWORK)
def read_pg_roles(admin: PostgresTarget) -> tuple[PgRole, ...]:
    """Every role of the server: login, attributes, memberships, VALID UNTIL, and its
    privileges on the admin block's database (the app's) and its tables."""
    timeout = get_settings().pg_statement_timeout_s
    with connect(admin, statement_timeout_s=timeout) as conn:
        rows = conn.execute(_ROLES).fetchall()
        table_rows = conn.execute(_TABLE_GRANTS).fetchall()
        owned = {str(r[0]): int(r[1]) for r in conn.execute(_OWNED).fetchall()}
    tables: dict[str, list[str]] = {}
    for name, privilege, count in table_rows:
        tables.setdefault(str(name), []).append(f"{privilege} on {count} tables")
    roles: list[PgRole] = []
    for name, login, attributes, member_of, valid_until, db_privileges in rows:
        grants = [*db_privileges] if login else []
        if owned.get(name):
            grants.append(f"owns {owned[name]} tables")
        grants += tables.get(name, [])
        roles.append(
            PgRole(
                name=str(name),
                login=bool(login),
                attributes=frozenset(attributes),
                member_of=tuple(member_of),
                valid_until=valid_until,
                grants=tuple(grants),
            )
        )
    return tuple(roles)


@task(name="read Secrets Manager dates", **retry.NETWORK)
def read_secret_ages(credentials: AwsCredentials) -> tuple[SecretAge, ...]:
    """Every secret's CreatedDate, LastChangedDate and LastRotatedDate (never a value)."""
    client = secrets_client(credentials)
    found: list[SecretAge] = []
    with aws_errors("list secrets"):
        for page in client.get_paginator("list_secrets").paginate():
            for entry in page.get("SecretList", []):
                found.append(
                    SecretAge(
                        name=str(entry["Name"]),
                        created=_date(entry.get("CreatedDate")),
                        last_changed=_date(entry.get("LastChangedDate")),
                        last_rotated=_date(entry.get("LastRotatedDate")),
                    )
                )
    return tuple(sorted(found, key=lambda s: s.name))


def _date(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


@task(name="read credential blocks", **retry.NETWORK)
def read_credential_blocks() -> tuple[CredentialBlock, ...]:
    """Every named block document whose schema has secret fields: its name, type and the
    names of those fields. Read with ``include_secrets=False``: no value leaves the server."""
    found: list[CredentialBlock] = []
    try:
        with get_client(sync_client=True) as client:
            offset, page = 0, 200
            while True:
                documents = client.read_block_documents(
                    offset=offset, limit=page, include_secrets=False
                )
                for doc in documents:
                    if doc.is_anonymous or not doc.name:
                        continue
                    schema = doc.block_schema
                    fields = (schema.fields if schema else {}) or {}
                    secret_fields = tuple(fields.get("secret_fields") or ())
                    if not secret_fields:
                        continue
                    slug = doc.block_type.slug if doc.block_type else "?"
                    found.append(
                        CredentialBlock(
                            f"{slug}/{doc.name}",
                            doc.block_type.name if doc.block_type else slug,
                            secret_fields,
                        )
                    )
                if len(documents) < page:
                    break
                offset += page
    except Exception as exc:  # noqa: BLE001 - the Prefect client raises httpx and its own errors
        raise ServiceUnavailable(
            f"read block documents from the Prefect API: {scrub(str(exc))}",
            hint="is the Prefect server up, and PREFECT_API_AUTH_STRING set?",
        ) from exc
    return tuple(sorted(found, key=lambda b: b.ref))
