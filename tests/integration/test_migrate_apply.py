"""Applying migrations to a real PostgreSQL (a scratch database per test)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from blocks.postgres import PostgresTarget
from decisions.migration_verify import check_expectations, final_expectations
from decisions.migrations import ApplyPolicy, parse_migration, plan_migration
from opsflows.errors import AuthenticationError, ConfigurationError, PermanentError, Throttled
from opsflows.migrate_cli import plan_command
from procedures.migration_plan import compute_plan, load_migrations
from tasks.migrate import apply_migration, apply_unit, failed_at, read_database_state
from tasks.migration_schema import schema_fingerprint, schema_snapshot
from tests.migrate_support import (
    migrations_dir,
    migrations_table,
    query,
    saved_target,
    scratch_database,
    superuser_password,
)

FAST = ApplyPolicy(lock_timeout_s=0.5, statement_timeout_s=10, lock_retries=0)


@pytest.fixture
def db(stack: Any) -> Iterator[PostgresTarget]:
    with scratch_database(stack, "apply") as target:
        yield target


def apply_dir(target: PostgresTarget, directory: Path) -> list[dict[str, Any]]:
    folder, migrations = load_migrations(str(directory))
    plan = compute_plan(folder, migrations, target)
    assert not plan.blocked, plan.blocking + plan.errors
    return [r for unit in plan.units for r in apply_unit(target, unit, FAST, "test-run")]


def test_apply_records_every_file_and_a_second_run_is_a_no_op(
    db: PostgresTarget, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path, "app")
    results = apply_dir(db, directory)
    assert [(r["name"], r["transactional"], r["skipped"]) for r in results] == [
        ("001_create_accounts.sql", True, False),
        ("002_add_note.sql", True, False),
        ("003_index_note.sql", False, False),
    ]
    _, migrations = load_migrations(str(directory))
    assert migrations_table(db) == [(m.name, m.checksum) for m in migrations]
    rows = query(
        db, "SELECT applied_by, transactional, attempts, duration_s FROM schema_migrations"
    )
    assert {(r[0], r[2]) for r in rows} == {("test-run", 1)}
    assert all(r[3] >= 0 for r in rows)
    assert check_expectations(final_expectations(migrations), schema_snapshot(db)) == ()
    assert schema_snapshot(db).indexes == {
        "accounts_pkey": True,
        "public.accounts_pkey": True,
        "accounts_note_idx": True,
        "public.accounts_note_idx": True,
    }

    hash_before = schema_fingerprint(db)
    assert compute_plan(*load_migrations(str(directory)), db).pending == ()
    again = apply_migration(db, plan_migration(migrations[1]), FAST, "second-run")
    assert again["skipped"] is True
    assert schema_fingerprint(db) == hash_before
    assert query(db, "SELECT count(*) FROM schema_migrations")[0][0] == 3


def test_timeouts_are_set_locally_for_the_migration(db: PostgresTarget) -> None:
    policy = ApplyPolicy(lock_timeout_s=0.75, statement_timeout_s=12, lock_retries=0)
    m = parse_migration(
        "001_seen.sql",
        b"CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock_timeout,"
        b" current_setting('statement_timeout') AS statement_timeout;",
    )
    apply_migration(db, plan_migration(m), policy, "t")
    assert query(db, "SELECT lock_timeout, statement_timeout FROM seen") == [("750ms", "12s")]
    assert query(db, "SELECT current_setting('lock_timeout')") == [("0",)]


def test_statement_timeout_is_permanent_and_rolls_the_file_back(db: PostgresTarget) -> None:
    policy = ApplyPolicy(lock_timeout_s=0.5, statement_timeout_s=0.5, lock_retries=3)
    m = parse_migration("001_slow.sql", b"CREATE TABLE t (id bigint);\nSELECT pg_sleep(3);\n")
    started = time.monotonic()
    with pytest.raises(PermanentError, match="line 2: canceled by statement_timeout"):
        apply_migration(db, plan_migration(m), policy, "t")
    assert time.monotonic() - started < 2.5, "a statement timeout must not be retried"
    assert query(db, "SELECT to_regclass('t')") == [(None,)]
    assert migrations_table(db) is None


def test_an_interrupted_concurrent_index_is_dropped_and_rebuilt(
    db: PostgresTarget, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path, "app")
    _, (m1, m2, m3) = load_migrations(str(directory))
    for m in (m1, m2):
        apply_migration(db, plan_migration(m), FAST, "t")
    query(
        db,
        "INSERT INTO accounts (email, note) SELECT 'a' || g, 'n' || g"
        " FROM generate_series(1, 500) g",
    )
    # An open snapshot makes CREATE INDEX CONCURRENTLY wait in its last phase, after the
    # index exists: lock_timeout then leaves it INVALID.
    with psycopg.connect(db.conninfo()) as blocker:
        blocker.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        blocker.execute("SELECT 1").fetchone()
        with pytest.raises(Throttled, match="003_index_note.sql line 2: lock not granted"):
            apply_migration(db, plan_migration(m3), FAST, "t")
        assert schema_snapshot(db).indexes["accounts_note_idx"] is False  # type: ignore[index]
        blocker.rollback()
    assert [r[0] for r in migrations_table(db) or []] == [m1.name, m2.name]
    result = apply_migration(db, plan_migration(m3), FAST, "t")
    assert result["skipped"] is False
    assert check_expectations(m3.expectations, schema_snapshot(db)) == ()
    assert query(db, "SELECT count(*) FROM pg_class WHERE relname LIKE 'accounts_note_idx%'") == [
        (1,)
    ]


def test_schema_hash_tracks_the_schema_not_the_bookkeeping(db: PostgresTarget) -> None:
    empty, count = schema_fingerprint(db)
    assert count == 0
    query(db, "CREATE TABLE schema_migrations (name text PRIMARY KEY)")
    assert schema_fingerprint(db)[0] == empty
    query(db, "CREATE TABLE t (id bigint)")
    with_table = schema_fingerprint(db)[0]
    assert with_table != empty
    query(db, "ALTER TABLE t ALTER COLUMN id SET NOT NULL")
    assert schema_fingerprint(db)[0] not in (empty, with_table)


def test_verify_reports_a_declared_column_that_is_missing(db: PostgresTarget) -> None:
    m = parse_migration(
        "001.sql", b"-- verify: t.id, t.name, absent t.legacy\nCREATE TABLE t (id bigint);"
    )
    apply_migration(db, plan_migration(m), FAST, "t")
    assert check_expectations(m.expectations, schema_snapshot(db)) == ("column t.name is missing",)


def test_plan_command_reads_the_database_without_changing_it(
    stack: Any,
    db: PostgresTarget,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = migrations_dir(tmp_path, "app")
    _, migrations = load_migrations(str(directory))
    apply_migration(db, plan_migration(migrations[0]), FAST, "t")
    password = superuser_password(stack)
    monkeypatch.setenv("OPSFLOWS_MIGRATE_PASSWORD", password)
    url = f"postgresql://postgres@{db.host}:{db.port}/{db.database}"
    before = schema_fingerprint(db)
    assert plan_command([str(directory), "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "applied: 1; pending: 2" in out
    assert "server: PostgreSQL 15" in out
    assert password not in out
    assert schema_fingerprint(db) == before

    (directory / "001_create_accounts.sql").write_text("-- edited\nSELECT 1;\n")
    assert plan_command([str(directory), "--database-url", url]) == 1
    assert "001_create_accounts.sql was edited after it was applied" in capsys.readouterr().out

    monkeypatch.setenv("OPSFLOWS_MIGRATE_PASSWORD", "not-the-password-9x")
    assert plan_command([str(directory), "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert "refused the password" in err and "not-the-password-9x" not in err

    monkeypatch.delenv("OPSFLOWS_MIGRATE_PASSWORD")
    monkeypatch.setenv("PGPASSWORD", password)
    assert plan_command([str(directory), "--database-url", url]) == 1  # still edited
    assert password not in capsys.readouterr().out


def test_plan_command_refuses_a_password_on_the_command_line(
    stack: Any, db: PostgresTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = superuser_password(stack)
    directory = migrations_dir(tmp_path, "app")
    for url in (
        f"postgresql://postgres:{password}@{db.host}:{db.port}/{db.database}",
        f"host={db.host} port={db.port} dbname={db.database} user=postgres password={password}",
    ):
        assert plan_command([str(directory), "--database-url", url]) == 2
        captured = capsys.readouterr()
        assert (
            "holds a password: refused" in captured.err
            and "OPSFLOWS_MIGRATE_PASSWORD" in captured.err
        )
        assert password not in captured.err + captured.out


def test_plan_command_plans_against_a_saved_block(
    stack: Any,
    bootstrapped: Any,
    db: PostgresTarget,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    directory = migrations_dir(tmp_path, "app")
    with saved_target(db, "cli") as block:
        assert plan_command([str(directory), "--block", block]) == 0
    out = capsys.readouterr().out
    assert f"database: postgres@{db.host}:{db.port}/{db.database}" in out
    assert "applied: 0; pending: 3" in out and superuser_password(stack) not in out
    assert plan_command([str(directory), "--block", "migtest-no-such-block"]) == 2
    assert (
        "block opsflows-postgres-target/migtest-no-such-block is missing" in capsys.readouterr().err
    )


def test_read_state_of_a_fresh_database_creates_nothing(db: PostgresTarget) -> None:
    state = read_database_state.fn(db)
    assert state.applied == () and state.server_version_num >= 120000
    assert migrations_table(db) is None


def test_wrong_password_is_an_authentication_error(db: PostgresTarget) -> None:
    wrong = PostgresTarget(
        host=db.host,
        port=db.port,
        database=db.database,
        user=db.user,
        password="definitely-wrong-5q",
    )
    with pytest.raises(AuthenticationError) as info:
        read_database_state.fn(wrong)
    assert "definitely-wrong-5q" not in str(info.value)


def test_a_non_transactional_file_failing_part_way_says_what_is_committed(
    db: PostgresTarget,
) -> None:
    query(db, "CREATE TABLE t (a bigint, b bigint)")
    text = (
        b"CREATE INDEX CONCURRENTLY IF NOT EXISTS t_a_idx ON t (a);\n"
        b"CREATE INDEX CONCURRENTLY IF NOT EXISTS t_c_idx ON t (c);\n"
    )
    step = plan_migration(parse_migration("001_idx.sql", text))
    assert not step.transactional
    with pytest.raises(PermanentError, match="001_idx.sql line 2") as info:
        apply_migration(db, step, FAST, "t")
    assert "statements before it are committed" in str(info.value)
    assert "t_a_idx" in (schema_snapshot(db).indexes or {})
    assert migrations_table(db) == []
    fixed = plan_migration(parse_migration("001_idx.sql", text.replace(b"(c)", b"(b)")))
    assert apply_migration(db, fixed, FAST, "t")["skipped"] is False
    assert {"t_a_idx", "t_c_idx"} <= set(schema_snapshot(db).indexes or {})


def test_a_transactional_folder_is_all_or_nothing(db: PostgresTarget, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "001_t.sql").write_text("CREATE TABLE t (id bigint);\n")
    (directory / "002_u.sql").write_text("CREATE TABLE u (id bigint);\n")
    (directory / "003_bad.sql").write_text(
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS note text;\n"
        "ALTER TABLE missing ADD COLUMN x text;\n"
    )
    plan = compute_plan(*load_migrations(str(directory)), db)
    (unit,) = plan.units
    assert unit.names == ("001_t.sql", "002_u.sql", "003_bad.sql") and unit.transactional
    before = schema_fingerprint(db)
    with pytest.raises(ConfigurationError, match="003_bad.sql line 2") as info:
        apply_unit(db, unit, FAST, "t")
    at = failed_at(info.value)
    assert at is not None and (at.file, at.line) == ("003_bad.sql", 2)
    assert schema_fingerprint(db) == before
    assert migrations_table(db) is None
    assert query(db, "SELECT to_regclass('t'), to_regclass('u')") == [(None, None)]


def test_a_failing_statement_that_names_a_password_keeps_it_out_of_the_error(
    db: PostgresTarget,
) -> None:
    m = parse_migration(
        "001_role.sql",
        b"CREATE ROLE migtest_role LOGIN PASSWORD 'hunter2-9x' VALID UNTIL 'hunter2-9x-day';\n",
    )
    with pytest.raises(PermanentError) as info:
        apply_migration(db, plan_migration(m), FAST, "t")
    assert "001_role.sql line 1" in str(info.value)
    assert "hunter2-9x" not in str(info.value)
