"""Migration faults on a real PostgreSQL: a failing file, a lock held by a long transaction
under a pgbench workload, a killed run, an edited file, a busy migrator, a busy change
slot, a lint-blocked plan, an unreachable server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.concurrency.sync import concurrency

from blocks.postgres import PostgresTarget
from decisions.migrations import ApplyPolicy, parse_migration, plan_migration
from devstack import procs
from flows.migrate import migrate_database
from opsflows.errors import (
    ConfigurationError,
    GateRejected,
    ServiceUnavailable,
    Throttled,
)
from procedures.change_slot import database_limit_name
from procedures.migration_plan import compute_plan, load_migrations
from tasks.migrate import ADVISORY_KEY, apply_migration, apply_unit, read_database_state
from tasks.migration_schema import schema_fingerprint
from tests.deploy_support import run_in_thread
from tests.migrate_support import (
    FIXTURES,
    REPO,
    change_limit,
    migrations_dir,
    migrations_table,
    ops_log_entry,
    query,
    saved_target,
    scratch_database,
)
from tests.support import count_fault, flow_run_id

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
FAST = ApplyPolicy(lock_timeout_s=0.5, statement_timeout_s=30, lock_retries=0)


@pytest.fixture
def db(stack: Any) -> Iterator[PostgresTarget]:
    with scratch_database(stack, "fault") as target:
        yield target


def apply_all(target: PostgresTarget, directory: Path, policy: ApplyPolicy = FAST) -> None:
    plan = compute_plan(*load_migrations(str(directory)), target)
    assert not plan.blocked, plan.blocking + plan.errors
    for unit in plan.units:
        apply_unit(target, unit, policy, "test")


def columns(target: PostgresTarget) -> set[str]:
    rows = query(
        target, "SELECT column_name FROM information_schema.columns WHERE table_name = 'accounts'"
    )
    return {r[0] for r in rows}


def test_a_failing_migration_leaves_schema_and_migrations_table_unchanged(
    db: PostgresTarget, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path, "app")
    apply_all(db, directory)
    before, rows = schema_fingerprint(db), migrations_table(db)
    migrations_dir(tmp_path, "failing")
    plan = compute_plan(*load_migrations(str(directory)), db)
    (step,) = plan.pending
    with pytest.raises(
        ConfigurationError, match=r"004_fails_halfway.sql line 3: .*accounts_missing"
    ):
        apply_migration(db, step, FAST, "test")
    assert schema_fingerprint(db) == before
    assert migrations_table(db) == rows
    assert "tier" not in columns(db)


def test_a_failing_first_migration_does_not_even_leave_the_table(
    db: PostgresTarget, tmp_path: Path
) -> None:
    before = schema_fingerprint(db)
    step = plan_migration(
        parse_migration("001.sql", b"CREATE TABLE t (id bigint);\nSELECT 1 / 0;\n")
    )
    with pytest.raises(ConfigurationError, match="division by zero"):
        apply_migration(db, step, FAST, "test")
    assert schema_fingerprint(db) == before
    assert migrations_table(db) is None


BLOCKER_HOLD_S = 4.0  # how long the competing report holds its lock
STALL_MARGIN_S = 1.0  # allowed on top of lock_timeout for a loaded 2-core machine


def pgbench_latencies(log_prefix: Path) -> list[float]:
    """Per-transaction latencies (seconds) from pgbench's ``-l`` logs."""
    values = []
    for log in log_prefix.parent.glob(log_prefix.name + ".*"):
        for line in log.read_text().splitlines():
            values.append(int(line.split()[2]) / 1e6)
    return values


def test_a_long_transaction_makes_the_migration_back_off_without_stalling_the_app(
    db: PostgresTarget, tmp_path: Path
) -> None:
    lock_timeout = 0.5
    apply_all(db, migrations_dir(tmp_path, "app"))
    query(db, "INSERT INTO accounts (email) SELECT 'u' || g FROM generate_series(1, 1000) g")
    script = tmp_path / "update.sql"
    script.write_text(
        "\\set id random(1, 1000)\nUPDATE accounts SET balance = balance + 1 WHERE id = :id;\n"
    )
    log_prefix = tmp_path / "pgbench"
    bench = subprocess.Popen(
        [PGBENCH, "-n", "-f", str(script), "-c", "2", "-j", "1", "-T", "8", "-R", "100",
         "--max-tries=1", "-l", f"--log-prefix={log_prefix}"],
        env={**os.environ, **db.libpq_env()},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        blocker = psycopg.connect(db.conninfo())  # a report holding ACCESS SHARE for 4 s
        blocker.execute("SELECT count(*) FROM accounts").fetchone()
        release = threading.Timer(BLOCKER_HOLD_S, blocker.rollback)
        release.start()
        policy = ApplyPolicy(lock_timeout, 30, lock_retries=10, backoff_base_s=0.3, backoff_cap_s=1)
        step = plan_migration(load_migrations(str(FIXTURES / "lockwait"))[1][0])
        result = apply_migration(db, step, policy, "test")
        release.join()
        blocker.close()
    finally:
        out, err = bench.communicate(timeout=60)
    assert bench.returncode == 0, err
    assert result["attempts"] >= 3, result
    latencies = pgbench_latencies(log_prefix)
    assert len(latencies) > 300, out
    worst = max(latencies)
    print(
        f"pgbench: {len(latencies)} txns, max latency {worst:.3f} s, attempts {result['attempts']}"
    )
    # Each attempt queued the application behind the ALTER for lock_timeout, then let go.
    assert worst >= 0.7 * lock_timeout, (
        f"the workload never waited behind the ALTER ({worst:.3f} s)"
    )
    # Without lock_timeout the workload would queue behind the ALTER for as long as the report
    # holds its lock (seconds); the margin only absorbs scheduling noise of a busy machine.
    assert worst <= lock_timeout + STALL_MARGIN_S < BLOCKER_HOLD_S - 1, (
        f"the workload stalled {worst:.3f} s"
    )
    assert query(db, "SELECT attempts FROM schema_migrations WHERE name = '002_add_flag.sql'") == [
        (result["attempts"],)
    ]


def test_a_killed_run_can_be_run_again_and_finishes(db: PostgresTarget, tmp_path: Path) -> None:
    directory = migrations_dir(tmp_path, "app", "killed")
    code = (
        "import os, sys\n"
        "from blocks.postgres import PostgresTarget\n"
        "from decisions.migrations import ApplyPolicy\n"
        "from procedures.migration_plan import compute_plan\n"
        "from procedures.migration_plan import load_migrations\n"
        "from tasks.migrate import apply_unit\n"
        "e = os.environ\n"
        "t = PostgresTarget(host=e['PGHOST'], port=int(e['PGPORT']), database=e['PGDATABASE'],"
        " user=e['PGUSER'], password=e['PGPASSWORD'])\n"
        "for unit in compute_plan(*load_migrations(sys.argv[1]), t).units:\n"
        "    apply_unit(t, unit, ApplyPolicy(0.5, 120, 0), 'killed-run')\n"
    )
    env = {**os.environ, **db.libpq_env(), "PGOPTIONS": "-c opsflows_test.slow=on"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], cwd=REPO, env=env, stderr=subprocess.PIPE
    )
    sleeping = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep%'"
    )
    try:
        deadline = time.monotonic() + 120
        while query(db, sleeping)[0][0] == 0:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the run never reached the slow statement"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        count_fault("kill")
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = time.monotonic()
    while query(db, sleeping)[0][0]:
        assert time.monotonic() - killed_at < 10, "the orphaned backend kept its locks"
        time.sleep(0.2)
    # 001, 002 and 002_slow_backfill are one unit (one transaction): none of them stayed.
    assert migrations_table(db) is None
    assert query(db, "SELECT to_regclass('accounts')") == [(None,)]

    apply_all(db, directory)
    assert [r[0] for r in migrations_table(db) or []] == [
        "001_create_accounts.sql",
        "002_add_note.sql",
        "002_slow_backfill.sql",
        "003_index_note.sql",
    ]
    assert "tier" in columns(db)


def test_an_edited_applied_migration_is_refused(db: PostgresTarget, tmp_path: Path) -> None:
    directory = migrations_dir(tmp_path, "app")
    apply_all(db, directory)
    before = schema_fingerprint(db)
    edited = directory / "002_add_note.sql"
    edited.write_text(
        edited.read_text() + "ALTER TABLE accounts ADD COLUMN IF NOT EXISTS x text;\n"
    )
    plan = compute_plan(*load_migrations(str(directory)), db)
    assert plan.blocked and "002_add_note.sql was edited after it was applied" in plan.errors[0]
    step = plan_migration(parse_migration(edited.name, edited.read_bytes()))
    with pytest.raises(ConfigurationError, match="002_add_note.sql was edited"):
        apply_migration(db, step, FAST, "test")
    assert schema_fingerprint(db) == before


def test_a_second_migrator_waits_for_the_first(db: PostgresTarget) -> None:
    step = plan_migration(parse_migration("001.sql", b"CREATE TABLE t (id bigint);"))
    policy = ApplyPolicy(0.5, 30, lock_retries=1, backoff_base_s=0.2, backoff_cap_s=0.2)
    with psycopg.connect(db.conninfo(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        with pytest.raises(Throttled, match="another migration is running.*gave up after 2"):
            apply_migration(db, step, policy, "test")
    assert migrations_table(db) is None
    assert apply_migration(db, step, policy, "test")["attempts"] == 1


def test_an_unreachable_server_is_transient_and_named(db: PostgresTarget) -> None:
    gone = PostgresTarget(
        host=db.host, port=procs.free_port(), database=db.database, user=db.user,
        password=db.password.get_secret_value(), connect_timeout=2,
    )  # fmt: skip
    count_fault("unreachable")
    with pytest.raises(ServiceUnavailable, match="cannot reach PostgreSQL"):
        read_database_state.fn(gone)


def test_a_lint_blocked_migration_never_touches_the_database(
    stack: Any, bootstrapped: Any, db: PostgresTarget, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path, "app")
    (directory / "004_index.sql").write_text(
        "CREATE INDEX accounts_email_idx ON accounts (email);\n"
    )
    before = schema_fingerprint(db)
    with saved_target(db, "blocked") as block, change_limit("migtest-blocked"):
        state = migrate_database(
            str(directory), database=block, environment="migtest-blocked", return_state=True
        )
    assert state.is_failed()
    with pytest.raises(GateRejected, match="require-concurrent-index-creation"):
        state.result()
    assert schema_fingerprint(db) == before
    assert migrations_table(db) is None
    _, status, _, issues, _, details = ops_log_entry(stack, flow_run_id(state))
    assert status == "rejected" and "GateRejected" in issues
    assert "backup" not in details and details["blocked"] is True


def test_a_busy_change_slot_makes_the_run_give_up_before_changing_anything(
    stack: Any, bootstrapped: Any, db: PostgresTarget, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path, "app")
    with (
        saved_target(db, "busy") as block,
        change_limit("migtest-busy") as limit,
        concurrency(limit, occupy=1, strict=True, timeout_seconds=30),
    ):
        state = migrate_database(
            str(directory),
            database=block,
            environment="migtest-busy",
            skip_backup=True,
            concurrency_timeout_s=2,
            return_state=True,
        )
    with pytest.raises(Throttled, match="another change of migtest-busy held change-migtest-busy"):
        state.result()
    assert migrations_table(db) is None


def test_two_migrations_of_one_database_serialise_whatever_their_environment(
    stack: Any, bootstrapped: Any, db: PostgresTarget, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "001_slow.sql").write_text(
        "CREATE TABLE IF NOT EXISTS slow_t (id bigint);\nSELECT pg_sleep(6);\n"
    )
    sleeping = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE '%pg_sleep(6)%'"
        " AND pid <> pg_backend_pid()"
    )
    with (
        saved_target(db, "sera") as block_a,
        saved_target(db, "serb") as block_b,
        change_limit("migtest-sera"),
        change_limit("migtest-serb"),
    ):
        first, box = run_in_thread(
            lambda: migrate_database(
                str(directory),
                database=block_a,
                environment="migtest-sera",
                skip_backup=True,
                return_state=True,
            )  # fmt: skip
        )
        deadline = time.monotonic() + 60
        while query(db, sleeping)[0][0] == 0:
            assert first.is_alive(), box
            assert time.monotonic() < deadline, "the first migration never started applying"
            time.sleep(0.2)
        # Another block for the same database, another environment: it must wait, not apply.
        second = migrate_database(
            str(directory), database=block_b, environment="migtest-serb",
            skip_backup=True, concurrency_timeout_s=1, return_state=True,
        )  # fmt: skip
        first.join(timeout=60)
    assert box["state"].is_completed(), box["state"]
    limit = database_limit_name(db)
    with pytest.raises(Throttled, match=f"another change held {limit} for more than 1s"):
        second.result()
    _, status, impact, _, _, details = ops_log_entry(stack, flow_run_id(second))
    assert status == "timed out" and impact == "no change" and "applied" not in details
    assert [r[0] for r in migrations_table(db) or []] == ["001_slow.sql"]
    assert query(db, "SELECT DISTINCT applied_by FROM schema_migrations") == [
        (str(flow_run_id(box["state"])),)
    ]


def test_an_unguarded_concurrent_index_is_refused_before_the_backup(
    stack: Any, bootstrapped: Any, db: PostgresTarget, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path, "app")
    (directory / "004_email_idx.sql").write_text(
        "-- squawk-ignore-file prefer-robust-stmts\n"
        "CREATE INDEX CONCURRENTLY accounts_email_idx ON accounts (email);\n"
    )
    with saved_target(db, "unguarded") as block, change_limit("migtest-unguarded"):
        state = migrate_database(
            str(directory), database=block, environment="migtest-unguarded", return_state=True
        )
    with pytest.raises(GateRejected) as info:
        state.result()
    message = str(info.value)
    assert "004_email_idx.sql: line 2: not-rerunnable" in message
    assert "CREATE INDEX CONCURRENTLY accounts_email_idx ON accounts (email)" in message
    assert "IF NOT EXISTS" in message
    assert migrations_table(db) is None
    details = ops_log_entry(stack, flow_run_id(state))[5]
    assert "backup" not in details and details["blocked"] is True
