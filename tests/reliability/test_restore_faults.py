"""Restores under real faults: S3 failing mid-download, PostgreSQL down, a run killed.

Each test reaches S3 through its own fault proxy (devstack/faultproxy.py) in front of the
shared moto server and its own blocks, so the faults reach only this test's requests. One
backup of the module's database is made first; every test restores it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.logging import disable_run_logger

import procedures.restore
from blocks.postgres import PostgresTarget
from devstack import procs
from devstack.faultproxy import FaultProxy, Rule
from flows.backup import backup_database
from flows.restore import restore_database
from opsflows.errors import ServiceUnavailable
from tasks.scratch import (
    CLAIM_CLASS,
    claim,
    create_database,
    mark,
    scratch_name,
    scratch_prefix,
    sweep_abandoned,
)
from tests.backup_support import REPO_ROOT, BackupEnv, backup_env, fill
from tests.support import count_fault, flow_run_id, oplog_row

#: No botocore-level retries: the retries under test are ours (the restore task's).
NO_SDK_RETRIES = {"config": {"retries": {"mode": "standard", "total_max_attempts": 1}}}
DUMP = "dump.pgc"


@pytest.fixture(scope="module")
def env(stack: Any, bootstrapped: object) -> Iterator[BackupEnv]:
    """~3.5 MiB of incompressible rows, backed up once."""
    with backup_env(stack, "rst") as made:
        fill(made, 4_000, payload_bytes=900)
        backup_database(database=made.db_block, store=made.store_block, reason="restore faults")
        yield made


@pytest.fixture
def proxy(env: BackupEnv) -> Iterator[FaultProxy]:
    with FaultProxy(env.info.host, env.info.moto_port) as made:
        yield made


@pytest.fixture
def fast_task_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """One retry of the restore step instead of two, and without the 5 s / 15 s delays."""
    monkeypatch.setattr(
        procedures.restore,
        "restore_into_scratch",
        procedures.restore.restore_into_scratch.with_options(retries=1, retry_delay_seconds=0),
    )


def live_rows(env: BackupEnv) -> list[Any]:
    """A fingerprint of the live database's data."""
    return env.sql("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM orders")


def restore(env: BackupEnv, store: str, **kw: Any) -> Any:
    return restore_database(
        database=env.db_block, admin_database=env.admin_block, store=store, **kw
    )


def drop(env: BackupEnv, name: str) -> None:
    env.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', database="postgres")


def downloads(proxy: FaultProxy) -> list[str]:
    return [action for method, target, action in proxy.log if method == "GET" and DUMP in target]


def test_download_cut_mid_stream_is_retried(
    env: BackupEnv, proxy: FaultProxy, fast_task_retries: None
) -> None:
    store = env.save_store(proxy.url, f"{env.store_block}-cut", **NO_SDK_RETRIES)
    proxy.add(Rule("cut", method="GET", contains=DUMP, times=1, cut_after=256 * 1024, reply=True))
    result = restore(env, store)
    assert downloads(proxy) == ["cut", "pass"], "the cut download was started again"
    scratch = result["scratch_database"]
    assert result["verification"]["success"]
    assert env.databases() == sorted([env.dbname, scratch]), "the cut attempt left nothing"
    assert env.sql("SELECT count(*) FROM orders", database=scratch) == [(4_000,)]
    drop(env, scratch)


def test_s3_staying_down_fails_clearly_and_leaves_nothing(
    env: BackupEnv, proxy: FaultProxy, fast_task_retries: None
) -> None:
    """The download is cut mid-stream, then S3 stops answering: the restore gives up."""
    store = env.save_store(proxy.url, f"{env.store_block}-down", **NO_SDK_RETRIES)
    proxy.add(Rule("cut", method="GET", contains=DUMP, times=1, cut_after=256 * 1024, reply=True))
    proxy.add(Rule("refuse", contains=DUMP))
    before, keys = live_rows(env), env.keys()
    state = restore(env, store, return_state=True)
    assert state.is_failed()
    with pytest.raises(ServiceUnavailable) as info:
        state.result()
    assert DUMP in info.value.message and "cannot reach AWS" in info.value.message
    assert downloads(proxy) == ["cut", "refuse"], "both attempts of the restore step"
    assert env.databases() == [env.dbname], "no scratch database is left behind"
    assert live_rows(env) == before, "the live database is untouched"
    assert env.keys() == keys, "nothing written to the bucket (no verified marker)"
    entry = oplog_row(env.info, flow_run_id(state))
    assert entry["status"] == "failed" and "ServiceUnavailable" in entry["issues"]


def test_postgres_unreachable_fails_before_any_download(env: BackupEnv, proxy: FaultProxy) -> None:
    port = procs.free_port()
    count_fault("unreachable")
    names: dict[str, str] = {}
    for block, target in ((env.db_block, env.app), (env.admin_block, env.admin)):
        name = f"{block}-nopg"
        PostgresTarget(
            host=target.host,
            port=port,
            database=target.database,
            user=target.user,
            password=target.password,
        ).save(name, overwrite=True)
        env.saved.append((PostgresTarget, name))
        names[block] = name
    store = env.save_store(proxy.url, f"{env.store_block}-nopg")
    keys = env.keys()
    state = restore_database(
        database=names[env.db_block],
        admin_database=names[env.admin_block],
        store=store,
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(ServiceUnavailable) as info:
        state.result()
    assert f"cannot reach PostgreSQL at postgres@{env.info.host}:{port}/" in info.value.message
    assert downloads(proxy) == [], "nothing was downloaded"
    assert env.keys() == keys and env.databases() == [env.dbname]


def pg_restore_running(env: BackupEnv) -> str | None:
    """The scratch database a pg_restore is filling right now, if any."""
    rows = env.sql(
        "SELECT datname FROM pg_stat_activity WHERE application_name = 'pg_restore'"
        " AND starts_with(datname, %s)",
        (scratch_prefix(env.dbname),),
        database="postgres",
    )
    return str(rows[0][0]) if rows else None


def claims(env: BackupEnv) -> int:
    rows = env.sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s",
        (CLAIM_CLASS,),
        database="postgres",
    )
    return int(rows[0][0])


def test_run_killed_mid_restore_leaves_live_alone_and_the_rerun_drops_its_leftover(
    env: BackupEnv, proxy: FaultProxy
) -> None:
    size = next(o["Size"] for o in env.objects() if o["Key"].endswith(DUMP))
    store = env.save_store(proxy.url, f"{env.store_block}-slow")
    # About ten seconds of download: pg_restore is certainly busy when the run is killed.
    proxy.add(Rule("slow", method="GET", contains=DUMP, reply=True, rate_bps=size // 10))
    before = live_rows(env)
    code = (
        "from flows.restore import restore_database; "
        f"restore_database(database={env.db_block!r}, admin_database={env.admin_block!r}, "
        f"store={store!r}, reason='killed')"
    )
    run = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while (leftover := pg_restore_running(env)) is None:
            assert run.poll() is None, "the restore ended before it was killed"
            assert time.monotonic() < deadline, "pg_restore never started"
            time.sleep(0.2)
        run.send_signal(signal.SIGKILL)
        count_fault("kill")
    finally:
        run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    assert leftover in env.databases()
    comment = env.sql(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (leftover,),
        database="postgres",
    )
    assert comment[0][0].startswith(f"opsflows restore of {env.dbname} from backup ")
    assert comment[0][0].endswith("being restored, not verified"), "recognisable as abandoned"
    assert live_rows(env) == before, "the live database is untouched"
    deadline = time.monotonic() + 30
    while claims(env):  # the dead run's session ends as soon as PostgreSQL notices
        assert time.monotonic() < deadline, "the killed run's claim outlived it"
        time.sleep(0.2)

    state = restore(env, env.store_block, return_state=True)
    result = state.result()
    assert result["dropped_leftovers"] == [leftover]
    assert env.databases() == sorted([env.dbname, result["scratch_database"]])
    entry = oplog_row(env.info, flow_run_id(state))
    assert entry["details"]["dropped_leftovers"] == [leftover]
    assert leftover in entry["issues"]
    assert live_rows(env) == before
    with disable_run_logger():
        assert sweep_abandoned.fn(env.admin, env.dbname) == [], "a verified restore is kept"
    assert result["scratch_database"] in env.databases()
    drop(env, result["scratch_database"])


def test_sweep_spares_a_scratch_database_a_running_restore_claims(env: BackupEnv) -> None:
    name = scratch_name(env.dbname, "20250101T000000000000Z")
    create_database(env.admin, name, "app", mark(env.dbname, "20250101T000000000000Z", False))
    with disable_run_logger():
        with claim(env.admin, name):
            assert sweep_abandoned.fn(env.admin, env.dbname) == []
            assert name in env.databases()
        assert sweep_abandoned.fn(env.admin, env.dbname) == [name]
    assert name not in env.databases()
