"""The read-only role user suites run as, against the real PostgreSQL: it cannot read
``pg_authid`` or write anything even with the allow-list bypassed, it holds no membership
and no superuser attribute, and once the verification ends it has no password and no grant;
results hold counts, not row values, unless row samples are asked for."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from blocks.postgres import PostgresTarget
from decisions.expectation_suites import SuiteExpectation, TableSuite, parse_suite
from opsflows.errors import AuthenticationError, ConfigurationError
from tasks.postgres import connect
from tasks.verify import run_user_suites
from tasks.verify_role import VERIFY_ROLE, verify_role
from tests.backup_support import BackupEnv, backup_env, fill

PG_AUTHID = "SELECT rolname, rolpassword FROM pg_authid"


@pytest.fixture(scope="module")
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    with backup_env(stack, "gxverify") as made:
        fill(made, 20)
        yield made


@pytest.fixture
def scratch(env: BackupEnv) -> Iterator[str]:
    """A copy of the test database, as a restore leaves it."""
    name = f"{env.dbname}_vr{secrets.token_hex(2)}"
    with connect(env.admin, database="postgres") as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(env.dbname)
            )
        )
    yield name
    with connect(env.admin, database="postgres") as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _as(target: PostgresTarget, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        return conn.execute(query).fetchall()


def _admin(env: BackupEnv, statement: str) -> None:
    """Run ``statement`` (``{}`` is the role) on the server as the admin."""
    with connect(env.admin, database="postgres") as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(VERIFY_ROLE)))


def test_the_role_reads_the_tables_and_nothing_else(env: BackupEnv, scratch: str) -> None:
    # Someone made the role a superuser and a member of a predefined role: both are undone.
    _admin(
        env,
        "DO $$ BEGIN CREATE ROLE opsflows_verify;"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
    _admin(env, "ALTER ROLE {} SUPERUSER")
    _admin(env, "GRANT pg_read_all_settings, pg_read_server_files TO {}")
    with verify_role(env.admin, scratch) as reader:
        assert (reader.user, reader.database) == (VERIFY_ROLE, scratch)
        assert _as(reader, "SELECT count(*) FROM public.customers") == [(20,)]
        assert _as(reader, "SELECT current_setting('default_transaction_read_only')") == [("on",)]
        for query in (
            PG_AUTHID,
            "SELECT * FROM pg_shadow",
            "SELECT pg_read_file('PG_VERSION')",
            "BEGIN READ WRITE; INSERT INTO public.customers (name) VALUES ('x'); COMMIT",
            "BEGIN READ WRITE; DELETE FROM public.orders; COMMIT",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                _as(reader, query)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            _as(reader, "INSERT INTO public.customers (name) VALUES ('x')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _as(reader, "SET ROLE postgres")
        role = env.sql(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,"
            " rolinherit, rolcanlogin, rolvaliduntil IS NOT NULL FROM pg_roles WHERE rolname = %s",
            (VERIFY_ROLE,),
        )
        assert role == [(False, False, False, False, False, False, True, True)]
        members = "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
        assert env.sql(members + " WHERE r.rolname = %s", (VERIFY_ROLE,)) == [(0,)], (
            "a membership someone granted is revoked"
        )
    # Afterwards: no password (no login) and no grant left on the database.
    assert env.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (VERIFY_ROLE,)) == [
        (None,)
    ]
    grants = env.sql(
        "SELECT has_table_privilege(%s, 'public.customers', 'SELECT')",
        (VERIFY_ROLE,),
        database=scratch,
    )
    assert grants == [(False,)]
    with pytest.raises(AuthenticationError):
        with connect(reader) as conn:
            conn.execute("SELECT 1")


def test_a_suite_past_the_allow_list_still_cannot_read_pg_authid(
    env: BackupEnv, scratch: str
) -> None:
    with pytest.raises(ConfigurationError, match="expect_query_results_to_match_comparison"):
        parse_suite(
            "customers.json",
            json.dumps(
                {
                    "name": "c",
                    "expectations": [
                        {
                            "type": "expect_query_results_to_match_comparison",
                            "kwargs": {
                                "base_query": PG_AUTHID,
                                "comparison_data_source_name": "user",
                                "comparison_query": PG_AUTHID,
                            },
                        }
                    ],
                }
            ).encode(),
        )
    kwargs = {
        "base_query": PG_AUTHID,
        "comparison_data_source_name": "user",
        "comparison_query": "SELECT 'x' AS rolname, 'y' AS rolpassword",
    }
    bypassed = TableSuite(
        "customers.json",
        "c",
        "public",
        "customers",
        (SuiteExpectation("expect_query_results_to_match_comparison", json.dumps(kwargs)),),
    )
    results, raw = run_user_suites(env.admin, scratch, [bypassed], row_samples=True)
    (result,) = results
    assert not result.success
    assert "permission denied" in result.observed, result.observed
    assert "SCRAM-SHA-256$" not in json.dumps(raw) + result.observed


def test_results_hold_counts_not_row_values_unless_samples_are_asked_for(
    env: BackupEnv, scratch: str
) -> None:
    suite = parse_suite(
        "customers.json",
        json.dumps(
            {
                "name": "c",
                "expectations": [
                    {
                        "type": "expect_column_values_to_match_regex",
                        "kwargs": {"column": "name", "regex": "^customer 1?[0-9]$"},
                    },
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "name"}},
                    {"type": "expect_table_row_count_to_equal", "kwargs": {"value": 20}},
                    {
                        "type": "expect_column_max_to_be_between",
                        "kwargs": {"column": "id", "min_value": 1},
                    },
                ],
            }
        ).encode(),
    )
    results, raw = run_user_suites(env.admin, scratch, [suite], row_samples=False)
    seen = {r.expectation: (r.success, r.observed) for r in results}
    assert seen["expect_column_values_to_match_regex"] == (False, "1 of 20 rows unexpected (5%)")
    assert seen["expect_column_values_to_not_be_null"] == (True, "0 of 20 rows unexpected (0%)")
    assert seen["expect_table_row_count_to_equal"] == (True, "20")
    assert seen["expect_column_max_to_be_between"] == (True, "value withheld (row samples off)")
    assert "customer 20" not in json.dumps(raw), "no row value in the GX results kept"

    results, raw = run_user_suites(env.admin, scratch, [suite], row_samples=True)
    regex = next(r for r in results if r.expectation == "expect_column_values_to_match_regex")
    assert "customer 20" in regex.observed and "customer 20" in json.dumps(raw)
