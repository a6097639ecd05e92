"""Fixtures the rotation steps' integration tests share: a superuser target, and a throw-away
database with a login role per test (test_rotation_steps.py, test_rotation_consumers.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from blocks.postgres import PostgresTarget
from devstack.stack import StackInfo, stack_secrets
from opsflows.settings import Settings


@pytest.fixture(scope="module")
def admin(stack: StackInfo) -> PostgresTarget:
    password = stack_secrets(Settings().state_dir)["postgres"]
    return PostgresTarget(
        host=stack.host, port=stack.postgres_port, database="postgres", user="postgres",
        password=password,
    )  # fmt: skip


@pytest.fixture
def pair(admin: PostgresTarget) -> Iterator[tuple[str, str, str]]:
    """``(database, role, password)``: a database with a table the role may read and write."""
    name = "rot_" + secrets.token_hex(4)
    password = secrets.token_urlsafe(18)
    ident = sql.Identifier
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident(name)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident(name), sql.Literal(password))
        )
    with psycopg.connect(admin.conninfo(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, note text)")
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(ident(name), ident(name)))
        conn.execute(sql.SQL("GRANT SELECT, INSERT ON orders TO {}").format(ident(name)))
        conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE orders_id_seq TO {}").format(ident(name)))
    yield name, name, password
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(name)))
        for role in (name, name + "_clone"):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(role)))
