"""Each rotation step against the real services: PostgreSQL (scram) and moto Secrets Manager
over HTTP (the Kubernetes steps: test_rotation_consumers.py). Tasks run through ``.fn`` (no
Prefect server needed).

Every test works on its own role, database, secret and namespace, never on ``app``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from prefect_aws import AwsCredentials
from psycopg import sql
from pydantic import SecretStr

from blocks.postgres import PostgresTarget
from decisions.rotation import CURRENT, PENDING, PREVIOUS, clone_is_linked, grant_parity
from devstack.stack import AWS_REGION, MOTO_KEYS, StackInfo
from opsflows.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    ServiceUnavailable,
)
from tasks import role_pairs as rp
from tasks import rotation as t
from tests.role_pair_support import TOKEN, credential

# --- PostgreSQL ------------------------------------------------------------------------------


def test_set_password_changes_it_in_place_by_verifier(
    stack: StackInfo, admin: PostgresTarget, pair: tuple[str, str, str]
) -> None:
    database, role, password = pair
    old = credential(stack, database, role, password)
    new = t.new_credential(old, role, "v1")
    assert t.password_is_set.fn(admin, old) is True
    assert t.password_is_set.fn(admin, new) is False

    t.set_password.fn(admin, new)

    assert t.password_is_set.fn(admin, new) is True
    assert t.test_login.fn(new) == {
        "role": role, "database": database, "auth": "scram-sha-256", "tcp": True,
    }  # fmt: skip
    with pytest.raises(AuthenticationError, match="refused the password"):
        t.test_login.fn(old)
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
        stored = str(row.fetchone()[0])  # type: ignore[index]
    assert stored.startswith("SCRAM-SHA-256$4096:")
    assert new.password.get_secret_value() not in stored
    assert t.scram_matches(stored, new.password.get_secret_value()) is True
    assert t.scram_matches(stored, password) is False
    assert t.scram_matches("md5abc", password) is False
    assert t.scram_matches(stored, "pässword") is None


def test_setting_a_password_on_a_missing_role_is_not_found(
    stack: StackInfo, admin: PostgresTarget, pair: tuple[str, str, str]
) -> None:
    database, _, _ = pair
    ghost = credential(stack, database, "rot_ghost_role", "x" * 20)
    with pytest.raises(NotFoundError, match="does not exist"):
        t.set_password.fn(admin, ghost)
    with pytest.raises(NotFoundError):
        t.password_is_set.fn(admin, ghost)


def test_the_login_test_refuses_a_unix_socket(stack: StackInfo, pair: tuple[str, str, str]) -> None:
    database, role, password = pair
    local = t.DbCredential(role, "/tmp", stack.postgres_port, database, SecretStr(password))
    with pytest.raises(ConfigurationError, match="TCP"):
        t.test_login.fn(local)


def test_a_clone_role_gets_the_same_effective_grants(
    admin: PostgresTarget, pair: tuple[str, str, str]
) -> None:
    database, role, _ = pair
    clone = role + "_clone"
    ident = sql.Identifier
    with psycopg.connect(admin.conninfo(database), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(role + "_readers")))
        conn.execute(sql.SQL("GRANT {} TO {}").format(ident(role + "_readers"), ident(role)))
        conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout TO '7s'").format(ident(role)))
    before = rp.read_pair_privileges.fn(admin, database, role, clone)
    assert before[clone] is None and before[role]
    assert ("table", "public.orders", "INSERT") in before[role]

    copied = rp.create_clone.fn(admin, database, role, clone)

    after = rp.read_pair_privileges.fn(admin, database, role, clone)
    assert copied == 1  # the statement_timeout setting
    assert ("setting", "statement_timeout=7s", "") in (after[clone] or ())
    assert clone_is_linked(role, after[clone] or ())
    parity = grant_parity(role, after[role] or (), clone, after[clone] or ())
    assert parity.equal, parity.summary()
    with psycopg.connect(admin.conninfo(database), autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE INSERT ON orders FROM {}").format(ident(role)))
        conn.execute(sql.SQL("GRANT DELETE ON orders TO {}").format(ident(clone)))
    drifted = rp.read_pair_privileges.fn(admin, database, role, clone)
    parity = grant_parity(role, drifted[role] or (), clone, drifted[clone] or ())
    assert not parity.only_role  # the clone follows what the role loses
    assert parity.only_clone == {("table", "public.orders", "DELETE")}
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(database)))
        conn.execute(sql.SQL("DROP ROLE {}").format(ident(clone)))
        conn.execute(sql.SQL("DROP ROLE {}").format(ident(role + "_readers")))


def test_either_role_of_a_pair_may_alter_what_the_other_created(
    stack: StackInfo, admin: PostgresTarget, pair: tuple[str, str, str]
) -> None:
    """A migration run under the clone's name alters the role's tables, and what it creates
    stays the role's (after an alternating rotation the app's block names the clone)."""
    database, role, password = pair
    clone, ident = role + "_clone", sql.Identifier
    with psycopg.connect(admin.conninfo(database), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident(database), ident(role)))
        conn.execute(sql.SQL("ALTER TABLE orders OWNER TO {}").format(ident(role)))
    rp.create_clone.fn(admin, database, role, clone)
    t.set_password.fn(admin, credential(stack, database, clone, password + "c"))
    as_clone = credential(stack, database, clone, password + "c")
    with psycopg.connect(
        host=stack.host, port=stack.postgres_port, dbname=database, user=clone,
        password=as_clone.password.get_secret_value(), autocommit=True,
    ) as conn:  # fmt: skip
        conn.execute("ALTER TABLE orders ADD COLUMN placed_at timestamptz")
        conn.execute("CREATE TABLE refunds (id int)")
        users = conn.execute("SELECT session_user, current_user").fetchone()
    assert users == (clone, role)
    with psycopg.connect(
        host=stack.host, port=stack.postgres_port, dbname=database, user=role,
        password=password, autocommit=True,
    ) as conn:  # fmt: skip
        conn.execute("ALTER TABLE refunds ADD COLUMN amount numeric")  # the role owns it
        owners = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename IN ('orders', 'refunds')"
        ).fetchall()
    assert {o for (o,) in owners} == {role}


def test_an_unlinked_clone_is_linked_and_hands_over_what_it_owns(
    admin: PostgresTarget, pair: tuple[str, str, str]
) -> None:
    """A clone made before pairs were linked (granted copies of the role's privileges, owning
    a table it created) is made a member acting as the role, its table the role's."""
    database, role, _ = pair
    clone, ident = role + "_clone", sql.Identifier
    with psycopg.connect(admin.conninfo(database), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident(clone)))
        conn.execute(sql.SQL("GRANT SELECT, INSERT ON orders TO {}").format(ident(clone)))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(ident(database), ident(clone))
        )
        conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE orders_id_seq TO {}").format(ident(clone)))
        conn.execute(sql.SQL("CREATE TABLE audit_trail (id int)"))
        conn.execute(sql.SQL("ALTER TABLE audit_trail OWNER TO {}").format(ident(clone)))
    old = rp.read_pair_privileges.fn(admin, database, role, clone)
    assert not clone_is_linked(role, old[clone] or ())

    moved = rp.link_clone.fn(admin, database, role, clone)

    linked = rp.read_pair_privileges.fn(admin, database, role, clone)
    assert moved == 1 and clone_is_linked(role, linked[clone] or ())
    with psycopg.connect(admin.conninfo(database), autocommit=True) as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_trail'")
        assert owner.fetchone() == (role,)
    parity = grant_parity(role, linked[role] or (), clone, linked[clone] or ())
    assert parity.equal, parity.summary()


# --- Secrets Manager ----------------------------------------------------------------------


@pytest.fixture
def aws(stack: StackInfo) -> AwsCredentials:
    return AwsCredentials(
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS_REGION,
        aws_client_parameters={"endpoint_url": stack.aws_endpoint_url},
    )


@pytest.fixture
def secret(stack: StackInfo, pair: tuple[str, str, str]) -> Iterator[tuple[str, Any]]:
    database, role, password = pair
    client = boto3.client(
        "secretsmanager",
        endpoint_url=stack.aws_endpoint_url,
        region_name=AWS_REGION,
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    secret_id = f"opsflows-test/{role}"
    value = {"engine": "postgres", "host": stack.host, "port": stack.postgres_port}
    value |= {"dbname": database, "username": role, "password": password}
    client.create_secret(Name=secret_id, SecretString=json.dumps(value))
    yield secret_id, client
    client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)


STRAY = "7d5b0e9c-0000-4000-8000-00000000000b"


def test_the_secrets_manager_steps_are_idempotent_and_move_the_labels(
    aws: AwsCredentials, secret: tuple[str, Any], pair: tuple[str, str, str]
) -> None:
    secret_id, client = secret
    _, role, password = pair
    current = t.read_credential.fn(aws, secret_id, CURRENT)
    assert current.username == role
    assert current.extra == {"engine": "postgres"}
    old_version = current.version_id

    assert t.create_pending.fn(aws, secret_id, TOKEN, current, role) == TOKEN
    first = t.read_credential.fn(aws, secret_id, PENDING, TOKEN)
    t.create_pending.fn(aws, secret_id, TOKEN, current, role)  # a retry writes nothing
    again = t.read_credential.fn(aws, secret_id, PENDING, TOKEN)
    assert again.password.get_secret_value() == first.password.get_secret_value() != password
    labels = t.read_labels.fn(aws, secret_id)
    assert (labels.current, labels.pending) == (old_version, TOKEN)

    moved = t.finish.fn(aws, secret_id, TOKEN)
    assert moved == {"current": TOKEN, "previous": old_version}
    assert t.finish.fn(aws, secret_id, TOKEN) == moved  # again: nothing left to move
    stages = client.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
    assert stages == {old_version: [PREVIOUS], TOKEN: [CURRENT]}
    # moto's default version follows AWSCURRENT (devstack/moto_server.py)
    plain = json.loads(client.get_secret_value(SecretId=secret_id)["SecretString"])
    assert plain["password"] == first.password.get_secret_value()


def test_a_stray_pending_version_loses_its_label_to_the_new_rotation(
    aws: AwsCredentials, secret: tuple[str, Any], pair: tuple[str, str, str]
) -> None:
    secret_id, _ = secret
    _, role, _ = pair
    current = t.read_credential.fn(aws, secret_id, CURRENT)
    t.create_pending.fn(aws, secret_id, STRAY, current, role)
    t.create_pending.fn(aws, secret_id, TOKEN, current, role)
    labels = t.read_labels.fn(aws, secret_id)
    assert labels.pending == TOKEN
    assert labels.labels_of(STRAY) == frozenset()


def test_finish_against_an_unreachable_endpoint_is_known_not_applied(
    secret: tuple[str, Any],
) -> None:
    secret_id, _ = secret
    params = {"endpoint_url": "http://127.0.0.1:9", "config": {"retries": {"max_attempts": 1}}}
    dead = AwsCredentials(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=AWS_REGION,
        aws_client_parameters=params,
    )  # fmt: skip
    with pytest.raises(t.FinishNotApplied) as caught:
        t.finish.fn(dead, secret_id, TOKEN)
    assert isinstance(caught.value, ServiceUnavailable)


def test_a_missing_field_is_a_configuration_error_without_the_value(
    aws: AwsCredentials, secret: tuple[str, Any], pair: tuple[str, str, str]
) -> None:
    secret_id, client = secret
    _, _, password = pair
    client.put_secret_value(
        SecretId=secret_id, SecretString=json.dumps({"username": "x", "password": password})
    )
    with pytest.raises(ConfigurationError) as caught:
        t.read_credential.fn(aws, secret_id, CURRENT)
    assert "host, port, dbname" in str(caught.value)
    assert password not in str(caught.value)
