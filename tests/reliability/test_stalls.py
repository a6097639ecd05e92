"""Hangs, for real: a PostgreSQL connection or an S3 download that stops moving, a table lock
held past the lock wait, and a run past its timeout. Each must end within its bound with a
clear error and a page, leaving nothing behind (no multipart upload, no manifest, no scratch
database, no tool process or session); the next run must work.

PostgreSQL is reached through a TCP fault proxy (devstack/tcpfaultproxy.py) and S3 through
the HTTP fault proxy (devstack/faultproxy.py), both this test's own. The bounds are shrunk to
seconds through the settings' environment variables.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import procedures.backup
import procedures.restore
from blocks.postgres import PostgresTarget
from devstack.faultproxy import FaultProxy, Rule
from devstack.tcpfaultproxy import TcpFaultProxy, TcpRule
from flows.backup import backup_database
from flows.restore import restore_database
from opsflows.errors import Stalled, Throttled
from opsflows.settings import Settings, get_settings
from tasks.catalog import list_backups
from tests.backup_support import BackupEnv, backup_env, fill
from tests.migrate_support import paged
from tests.support import flow_run_id, oplog_row

MIB = 1024 * 1024
STALL_S = 3.0
TIMEOUT_S = 10
DUMP = "dump.pgc"


@pytest.fixture(scope="module")
def env(stack: Any, bootstrapped: object) -> Iterator[BackupEnv]:
    """~24 MiB of rows that zstd shrinks to ~18 MiB (three 8 MiB parts), backed up once."""
    with backup_env(stack, "stall") as made:
        fill(made, 20_000, payload_bytes=900)
        backup_database(database=made.db_block, store=made.store_block, reason="stall tests")
        yield made


@pytest.fixture
def bounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Stall bounds of seconds instead of minutes."""
    for name, value in {
        "DUMP_STALL_S": STALL_S,
        "RESTORE_STALL_S": STALL_S,
        "PG_LOCK_WAIT_TIMEOUT_S": 1,
        "PROCESS_EXIT_S": 10,
    }.items():
        monkeypatch.setenv(f"OPSFLOWS_{name}", str(value))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def fast_task_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """One retry of the dump and of the restore step, without the 5 s / 15 s delays."""
    for module, name in (
        (procedures.backup, "dump_to_s3"),
        (procedures.restore, "restore_into_scratch"),
    ):
        task = getattr(module, name)
        monkeypatch.setattr(module, name, task.with_options(retries=1, retry_delay_seconds=0))


@pytest.fixture
def pg_proxy(env: BackupEnv) -> Iterator[TcpFaultProxy]:
    with TcpFaultProxy(env.info.host, env.info.postgres_port) as made:
        yield made


@pytest.fixture
def s3_proxy(env: BackupEnv) -> Iterator[FaultProxy]:
    with FaultProxy(env.info.host, env.info.moto_port) as made:
        yield made


def through(env: BackupEnv, proxy: TcpFaultProxy, name: str) -> str:
    """A PostgresTarget block for the test database that connects through ``proxy``."""
    PostgresTarget(
        host=proxy.host,
        port=proxy.port,
        database=env.dbname,
        user=env.app.user,
        password=env.app.password,
    ).save(name, overwrite=True)
    env.saved.append((PostgresTarget, name))
    return name


def dumps(env: BackupEnv) -> list[str]:
    return [k for k in env.keys() if k.endswith((DUMP, "manifest.json"))]


def sessions(env: BackupEnv, application: str) -> int:
    rows = env.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        (env.dbname, application),
        database="postgres",
    )
    return int(rows[0][0])


def wait_until_gone(env: BackupEnv, application: str, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while sessions(env, application):
        assert time.monotonic() < deadline, f"a {application} session outlived the run"
        time.sleep(0.2)


def child_tools() -> list[str]:
    """pg_dump, zstd and pg_restore processes this test process started and not reaped."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            name, ppid = fields[0].split("(", 1)[1], int(fields[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and name in ("pg_dump", "zstd", "pg_restore"):
            found.append(name)
    return found


@pytest.mark.timeout(180)
def test_a_dump_whose_server_stops_answering_fails_within_the_stall_bound(
    env: BackupEnv,
    bounds: Settings,
    fast_task_retries: None,
    pg_proxy: TcpFaultProxy,
    s3_proxy: FaultProxy,
) -> None:
    db = through(env, pg_proxy, f"{env.db_block}-stall")
    store = env.save_store(s3_proxy.url, f"{env.store_block}-stall")
    before = dumps(env)
    # Every connection that has received 17 MiB from the server (only pg_dump's, mid-COPY,
    # after the first 8 MiB part went up) gets nothing more: a hung server or middlebox.
    pg_proxy.add(TcpRule("stall", after=17 * MIB))
    started = time.monotonic()
    state = backup_database(database=db, store=store, reason="fault: stall", return_state=True)
    elapsed = time.monotonic() - started

    assert state.is_failed()
    with pytest.raises(Stalled) as info:
        state.result()
    assert info.value.message.startswith(f"the dump of app@{pg_proxy.host}:{pg_proxy.port}/")
    assert f"made no progress for {STALL_S:.0f} s" in info.value.message
    assert info.value.hint and "killed and the upload aborted" in info.value.hint
    assert pg_proxy.count("stall") == 2, "both attempts of the dump stalled"
    assert elapsed < 2 * (STALL_S + 15), f"took {elapsed:.0f} s"

    parts = [t for m, t, _ in s3_proxy.log if m == "PUT" and "partNumber=" in t]
    creates = [t for m, t, _ in s3_proxy.log if m == "POST" and t.endswith("?uploads")]
    aborts = [t for m, t, _ in s3_proxy.log if m == "DELETE" and "uploadId=" in t]
    # A part is up before the stall (the abort drops real data); on a loaded machine an
    # attempt's first part may still be in flight when the stall kills it.
    assert len(parts) >= 1, "a part was uploaded before the stall"
    assert len(creates) == len(aborts) == 2, "every attempt aborted its own upload"
    assert env.uploads() == [], "no multipart upload left pending"
    assert dumps(env) == before, "no dump object and no manifest"
    assert child_tools() == [], "pg_dump and zstd were killed and reaped"
    wait_until_gone(env, "pg_dump")

    assert paged(env.info, f"backup of {db} hung and was stopped")
    entry = oplog_row(env.info, flow_run_id(state))
    assert entry["status"] == "timed out" and "Stalled" in entry["issues"]
    assert entry["details"]["notified"].startswith("P2 to ")
    assert not entry["details"]["notified"].startswith("P2 to 0 ")

    pg_proxy.clear()
    made = backup_database(database=db, store=store, reason="after the stall")
    records = {r.backup_id: r for r in list_backups.fn(env.store, env.dbname)}
    assert records[made["backup_id"]].complete, "the next run backs up fine"
    for key in dumps(env):
        if made["backup_id"] in key:
            env.client.delete_object(Bucket="opsflows-backups", Key=key)


@pytest.mark.timeout(120)
def test_a_table_lock_held_past_the_lock_wait_fails_the_dump_as_throttled(
    env: BackupEnv, bounds: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        procedures.backup,
        "dump_to_s3",
        procedures.backup.dump_to_s3.with_options(retries=0),
    )
    before = dumps(env)
    with psycopg.connect(env.admin.conninfo(env.dbname)) as holder:
        holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        state = backup_database(
            database=env.db_block, store=env.store_block, reason="fault: lock", return_state=True
        )
        elapsed = time.monotonic() - started
        holder.rollback()
    assert state.is_failed()
    with pytest.raises(Throttled) as info:
        state.result()
    assert "could not lock a table" in info.value.message and "within 1 s" in info.value.message
    assert elapsed < 30, f"took {elapsed:.0f} s"
    assert env.uploads() == [] and dumps(env) == before
    assert child_tools() == []


@pytest.mark.timeout(180)
def test_a_download_that_stops_fails_within_the_stall_bound_and_drops_the_scratch_database(
    env: BackupEnv, bounds: Settings, fast_task_retries: None, s3_proxy: FaultProxy
) -> None:
    store = env.save_store(s3_proxy.url, f"{env.store_block}-rstall")
    s3_proxy.add(Rule("stall", method="GET", contains=DUMP, cut_after=2 * MIB, reply=True))
    keys = env.keys()
    started = time.monotonic()
    state = restore_database(
        database=env.db_block,
        admin_database=env.admin_block,
        store=store,
        reason="fault: download stall",
        return_state=True,
    )
    elapsed = time.monotonic() - started

    assert state.is_failed()
    with pytest.raises(Stalled) as info:
        state.result()
    assert info.value.message.startswith("the download of s3://opsflows-backups/")
    assert f"made no progress for {STALL_S:.0f} s" in info.value.message
    assert s3_proxy.count("stall") == 2, "both attempts of the restore step"
    assert elapsed < 2 * (STALL_S + 20), f"took {elapsed:.0f} s"
    assert env.databases() == [env.dbname], "no scratch database is left behind"
    assert env.keys() == keys, "nothing written to the bucket"
    assert child_tools() == [], "zstd and pg_restore were killed and reaped"
    wait_until_gone(env, "pg_restore")
    assert paged(env.info, f"restore of {env.db_block} hung and was stopped")
    entry = oplog_row(env.info, flow_run_id(state))
    assert entry["status"] == "timed out" and "Stalled" in entry["issues"]

    s3_proxy.clear()
    result = restore_database(
        database=env.db_block, admin_database=env.admin_block, store=store, reason="after"
    )
    assert result["verification"]["success"], "the next restore works"
    env.sql(f'DROP DATABASE "{result["scratch_database"]}" WITH (FORCE)', database="postgres")


# method="thread": pytest-timeout's SIGALRM handler would make Prefect enforce the run's
# timeout by an exception injected from a watcher thread; without it Prefect uses the alarm,
# as in a served run (the flow in its own process's main thread).
@pytest.mark.timeout(180, method="thread")
def test_a_backup_past_its_timeout_is_stopped_cleaned_up_and_pages(
    env: BackupEnv, bounds: Settings, s3_proxy: FaultProxy
) -> None:
    """Slow but moving (no stall): the run's timeout_seconds ends it, through every wait."""
    store = env.save_store(s3_proxy.url, f"{env.store_block}-slow")
    s3_proxy.add(Rule("slow", method="PUT", contains="partNumber=", rate_bps=MIB // 2))
    before = dumps(env)
    # The upload takes ~36 s at this rate; the timeout ends it in the middle of the dump,
    # after the checks before it (which take seconds on a loaded machine).
    timed = backup_database.with_options(timeout_seconds=TIMEOUT_S)
    started = time.monotonic()
    state = timed(database=env.db_block, store=store, reason="fault: timeout", return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_failed() and state.name == "TimedOut", state
    assert elapsed < TIMEOUT_S + 20, f"took {elapsed:.0f} s"
    assert env.uploads() == [], "the upload was aborted"
    assert dumps(env) == before
    assert child_tools() == []
    wait_until_gone(env, "pg_dump")
    assert paged(env.info, f"backup of {env.db_block} hung and was stopped")
    entry = oplog_row(env.info, flow_run_id(state))
    assert entry["status"] == "timed out" and f"exceeded its timeout of {TIMEOUT_S} s" in str(
        entry["follow_up"]
    )
    assert threading.active_count() < 100
