"""Access violations seeded on the local stack for the access audit and the access-log review,
and removed again, so every other test sees a clean stack.

``violations(stack)`` creates, each named with one random marker:

* a PostgreSQL superuser login role ``audit_<hex>`` nobody expects;
* a RoleBinding ``audit-<hex>`` in ``production`` giving the unknown User ``eve-<hex>`` the
  ``opsflows-admin`` ClusterRole (through the Kubernetes API);
* a Secrets Manager secret ``opsflows-test/audit-<hex>`` last rotated and changed 40 days ago
  (moto has no settable clock: the devstack's launcher sets the backend's dates,
  ``POST /moto-api/opsflows/secret-dates``; the audit reads them with ``ListSecrets``);

and ``failed_logins`` makes real failing connection attempts with psycopg (a wrong password).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
from psycopg import sql

from devstack.stack import AWS_REGION, MOTO_KEYS, StackInfo, stack_secrets

DAY = 86400


@dataclass(frozen=True)
class Violations:
    marker: str
    role: str
    password: str
    binding: str
    user: str
    secret: str


def admin(stack: StackInfo, database: str = "postgres") -> psycopg.Connection[Any]:
    password = stack_secrets(Path(stack.state_dir))["postgres"]
    return psycopg.connect(
        host=stack.host, port=stack.postgres_port, user="postgres", password=password,
        dbname=database, autocommit=True,
    )  # fmt: skip


def secrets_manager(stack: StackInfo) -> Any:
    return boto3.client(
        "secretsmanager",
        endpoint_url=stack.aws_endpoint_url,
        region_name=AWS_REGION,
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    )


def backdate_secret(stack: StackInfo, name: str, days: float) -> None:
    """Make ``name`` look last rotated and changed ``days`` ago (moto backend dates)."""
    when = int(time.time() - days * DAY)
    resp = httpx.post(
        f"{stack.aws_endpoint_url}/moto-api/opsflows/secret-dates",
        json={"name": name, "region": AWS_REGION, "last_rotated": when, "last_changed": when,
              "created": when - DAY},
        timeout=10,
    )  # fmt: skip
    resp.raise_for_status()


@contextlib.contextmanager
def violations(stack: StackInfo) -> Iterator[Violations]:
    """Seed the violations (see the module docstring); remove them whatever happens."""
    marker = secrets.token_hex(4)
    v = Violations(
        marker=marker,
        role=f"audit_{marker}",
        password=secrets.token_urlsafe(18),
        binding=f"audit-{marker}",
        user=f"eve-{marker}",
        secret=f"opsflows-test/audit-{marker}",
    )
    kube = httpx.Client(base_url=stack.kube_url, timeout=10)
    sm = secrets_manager(stack)
    bindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/production/rolebindings"
    try:
        with admin(stack) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                    sql.Identifier(v.role), sql.Literal(v.password)
                )
            )
        kube.post(
            bindings,
            json={
                "metadata": {"name": v.binding},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "opsflows-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                              "name": v.user}],
            },
        ).raise_for_status()  # fmt: skip
        sm.create_secret(Name=v.secret, SecretString=json.dumps({"note": "audit test"}))
        backdate_secret(stack, v.secret, 40)
        yield v
    finally:
        with contextlib.suppress(Exception):
            kube.delete(f"{bindings}/{v.binding}")
        with contextlib.suppress(Exception):
            sm.delete_secret(SecretId=v.secret, ForceDeleteWithoutRecovery=True)
        with admin(stack) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (v.role,),
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(v.role)))
        kube.close()


def failed_logins(stack: StackInfo, role: str, n: int, database: str = "app") -> None:
    """``n`` real login attempts as ``role`` with a wrong password; each must be refused."""
    for _ in range(n):
        try:
            psycopg.connect(
                host=stack.host, port=stack.postgres_port, user=role, dbname=database,
                password="not-" + secrets.token_hex(8), connect_timeout=5,
            ).close()  # fmt: skip
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc), exc
        else:
            raise AssertionError(f"{role} logged in with a wrong password")


def login(stack: StackInfo, role: str, password: str, database: str = "app") -> None:
    """One successful login (and logout) as ``role``."""
    with psycopg.connect(
        host=stack.host, port=stack.postgres_port, user=role, dbname=database,
        password=password, connect_timeout=5,
    ) as conn:  # fmt: skip
        conn.execute("SELECT 1")


def sink_mentions(stack: StackInfo, channel: str, marker: str) -> list[dict[str, Any]]:
    """The notifications sent to ``channel`` of the sink that mention ``marker``."""
    resp = httpx.get(f"{stack.kube_url}/_sink/{channel}", timeout=10)
    resp.raise_for_status()
    return [m for m in resp.json() if marker in json.dumps(m)]
