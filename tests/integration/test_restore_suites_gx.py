"""The restore's user suites and its GX connection, against the real PostgreSQL and S3 (moto):
suites in the store are read and checked before anything is restored (a bad one names its
object), GX leaves no session behind, honours the block's sslmode and never shows the
password."""

from __future__ import annotations

import json
import logging
import secrets
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg import sql

from blocks.postgres import PostgresTarget
from decisions.backups import Manifest, backup_id_for
from opsflows.errors import AuthenticationError, ConfigurationError, ServiceUnavailable
from tasks.fingerprint import take_fingerprint
from tasks.gx_validation import APPLICATION_NAME, gx_session
from tasks.postgres import connect
from tasks.verify import load_user_suites, read_user_suites, run_checks
from tests.backup_support import BackupEnv, backup_env, fill, suite_objects

GOOD = {
    "name": "customers",
    "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "name"}}],
}


@pytest.fixture(scope="module")
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    with backup_env(stack, "gxsuites") as made:
        fill(made, 20)
        yield made


@pytest.fixture
def put(env: BackupEnv) -> Iterator[Any]:
    """Put objects under the database's suites folder; all removed afterwards."""
    with suite_objects(env) as put:
        yield put


@pytest.mark.parametrize(
    ("objects", "bad", "message"),
    [
        ({"customers.json": GOOD, "orders.json": b"{not json"}, "orders.json", "not valid JSON"),
        (
            {"orders.json": {"tables": {"public.orders": [{"type": "expect_column_to_exist"}]}}},
            "orders.json",
            "unknown field(s): tables",
        ),
        ({"public/orders.json": GOOD}, "public/orders.json", "file name must be <table>.json"),
        (
            {"orders.json": {"name": "o", "expectations": [{"type": "expect_table_to_be_tidy"}]}},
            "orders.json",
            "expectation 1 (expect_table_to_be_tidy) is refused: expect_table_to_be_tidy is not an",
        ),
        (
            {"orders.json": {"name": "o", "expectations": [{"type": "expect_column_to_exist"}]}},
            "orders.json",
            "expectation 1 (expect_column_to_exist) is not valid",
        ),
        ({"customers.json": GOOD, "public.customers.json": GOOD}, "public.customers.json", "both"),
        ({"orders.json": b" " * 1_000_001}, "orders.json", "larger than 1000000 bytes"),
    ],
)
def test_a_malformed_suite_in_the_store_is_rejected_naming_its_object(
    env: BackupEnv, put: Any, objects: dict[str, Any], bad: str, message: str
) -> None:
    folder = put(objects)
    with pytest.raises(ConfigurationError) as err:
        read_user_suites.fn(env.store, env.dbname)  # what the restore runs before any change
    assert f"{folder}{bad}" in str(err.value) and message in str(err.value)


def test_only_the_folders_json_objects_are_suites_and_a_named_folder_must_hold_some(
    env: BackupEnv, put: Any
) -> None:
    assert load_user_suites(env.store, env.dbname) == ()
    folder = put({"public.customers.json": GOOD, "README.md": b"suites of the restore"})
    (suite,) = load_user_suites(env.store, env.dbname)
    assert (suite.qualified, suite.where) == ("public.customers", f"{folder}public.customers.json")
    assert load_user_suites(env.store, env.dbname, f"expectations/{env.dbname}/") == (suite,)
    assert load_user_suites(env.store, env.dbname + "_other") == (), "another database's folder"
    with pytest.raises(ConfigurationError, match="no expectation suites under s3://"):
        load_user_suites(env.store, env.dbname, "expectations/nowhere")


def ddl(env: BackupEnv, template: str, *names: str, literal: str | None = None) -> None:
    """Run ``template`` on the server with ``{}`` filled by quoted identifiers (and a literal)."""
    parts: list[Any] = [sql.Identifier(n) for n in names]
    if literal is not None:
        parts.append(sql.Literal(literal))
    with connect(env.admin, database="postgres") as conn:
        conn.execute(sql.SQL(template).format(*parts))


@pytest.fixture
def scratch(env: BackupEnv) -> Iterator[str]:
    """A copy of the test database (as a restore leaves it) and nothing connected to it."""
    name = f"{env.dbname}_scr{secrets.token_hex(2)}"
    ddl(env, "CREATE DATABASE {} TEMPLATE {}", name, env.dbname)
    yield name
    ddl(env, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def _manifest(env: BackupEnv, database: str) -> Manifest:
    with connect(env.admin, database=database, autocommit=False) as conn:
        prints = take_fingerprint(conn)
    now = datetime.now(UTC)
    return Manifest(
        backup_id_for(now), env.dbname, "15", now, now, now, "k", 1, "0" * 64, 1, "none", prints
    )


def _sessions_gone(env: BackupEnv, database: str) -> None:
    deadline = time.monotonic() + 30  # a closed session leaves pg_stat_activity soon after
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
    while env.sql(query, (database,), database="postgres") != [(0,)]:
        assert time.monotonic() < deadline, "GX left a pooled session on the scratch database"
        time.sleep(0.2)


def test_verification_leaves_no_session_on_the_scratch_database(
    env: BackupEnv, scratch: str, put: Any
) -> None:
    put({"customers.json": GOOD})
    suites = load_user_suites(env.store, env.dbname)
    report = run_checks(env.admin, scratch, _manifest(env, scratch), suites)
    assert report.success, report.summary()
    assert "user suite public.customers" in {c.check for c in report.checks}
    _sessions_gone(env, scratch)
    ddl(env, "ALTER DATABASE {} RENAME TO {}", scratch, scratch + "_x")  # nobody connected
    ddl(env, "ALTER DATABASE {} RENAME TO {}", scratch + "_x", scratch)

    # Both engines are closed when the caller fails half-way through a session, too.
    with pytest.raises(RuntimeError, match="half-way"), gx_session(env.admin, scratch, "t") as gx:
        one = gx.gx.expectations.ExpectColumnValuesToBeInSet(column="x", value_set=[1])
        assert gx.validate("one", gx.query_asset("one", "SELECT 1 AS x"), [one])["success"]
        raise RuntimeError("half-way")
    _sessions_gone(env, scratch)
    ddl(env, "DROP DATABASE {}", scratch)


def test_gx_honours_the_sslmode_and_never_shows_the_password(
    env: BackupEnv, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    base: dict[str, Any] = {
        "host": env.admin.host,
        "port": env.admin.port,
        "database": env.dbname,
        "user": "postgres",
    }
    wrong = "Wr0ng p@ss/w:rd %41 ${HOME} " + secrets.token_hex(4)
    denied = PostgresTarget(**base, password=wrong)
    with pytest.raises(AuthenticationError, match="refused the password") as refused:
        with gx_session(denied, env.dbname, "t"):
            pass
    ssl = PostgresTarget(**{**base, "sslmode": "require"}, password=wrong)
    with pytest.raises(ServiceUnavailable, match="does not support SSL") as no_ssl:
        with gx_session(ssl, env.dbname, "t"):
            pass
    shown = [traceback.format_exception(e.value) for e in (refused, no_ssl)]
    texts = ["".join(s) for s in shown] + [caplog.text, *capsys.readouterr()]
    assert all(wrong not in t for t in texts)

    # A role whose name, password and database are anything but URL-safe logs in.
    role, database = f"gx {secrets.token_hex(3)} ${{USER}}@x", f"{env.dbname} odd/${{HOME}}"
    ddl(env, "CREATE ROLE {} LOGIN PASSWORD {}", role, literal=wrong)
    ddl(env, "CREATE DATABASE {}", database)
    try:
        odd = PostgresTarget(**{**base, "user": role, "database": database}, password=wrong)
        import great_expectations

        E = great_expectations.expectations
        with gx_session(odd, database, "odd") as gx:
            asset = gx.query_asset(
                "who",
                "SELECT current_user::text AS who, current_setting('application_name') AS app",
            )
            outcome = gx.validate(
                "who",
                asset,
                [
                    E.ExpectColumnValuesToBeInSet(column="who", value_set=[role]),
                    E.ExpectColumnValuesToBeInSet(column="app", value_set=[APPLICATION_NAME]),
                ],
            )
        assert outcome["success"], outcome
        assert wrong not in json.dumps(outcome)
    finally:
        ddl(env, "DROP DATABASE IF EXISTS {} WITH (FORCE)", database)
        ddl(env, "DROP ROLE IF EXISTS {}", role)
