"""Backups under real faults: S3 failing during the upload, and a run killed mid-upload.

Each test puts its own fault proxy (devstack/faultproxy.py) between its own BackupStore
block and the shared moto server, so the faults reach only this test's requests.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import procedures.backup
from decisions.backups import choose_backup
from decisions.retention import sweep_uploads
from devstack.faultproxy import FaultProxy, Rule
from flows.backup import backup_database
from opsflows.errors import BackupMissing, ServiceUnavailable
from procedures.upload_lease import live_writers
from tasks.catalog import abort_uploads, find_pending_uploads, list_backups
from tasks.multipart import MultipartUpload
from tests.backup_support import REPO_ROOT, BackupEnv, backup_env, fill
from tests.support import count_fault

#: No botocore-level retries: the retries under test are ours (part, then task).
NO_SDK_RETRIES = {"config": {"retries": {"mode": "standard", "total_max_attempts": 1}}}
#: Tries of one part inside one attempt of the upload (MultipartUpload's own part retries).
PART_TRIES = 1 + int(inspect.signature(MultipartUpload).parameters["part_retries"].default)


@pytest.fixture(scope="module")
def env(stack: Any, bootstrapped: object) -> Iterator[BackupEnv]:
    """~11 MiB of incompressible rows: the dump needs two 8 MiB parts."""
    with backup_env(stack, "rel") as made:
        fill(made, 12_000, payload_bytes=900)
        yield made


@pytest.fixture
def proxy(env: BackupEnv) -> Iterator[FaultProxy]:
    with FaultProxy(env.info.host, env.info.moto_port) as made:
        yield made


@pytest.fixture
def fast_task_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """One task retry instead of two, and without the production 5 s / 15 s delays."""
    monkeypatch.setattr(
        procedures.backup,
        "dump_to_s3",
        procedures.backup.dump_to_s3.with_options(retries=1, retry_delay_seconds=0),
    )


def _no_trace(env: BackupEnv) -> None:
    assert env.keys() == [], "no dump object and no manifest"
    assert env.uploads() == [], "no orphan multipart parts"


def test_s3_failing_during_upload_is_retried(env: BackupEnv, proxy: FaultProxy) -> None:
    store = env.save_store(proxy.url, f"{env.store_block}-blip", **NO_SDK_RETRIES)
    proxy.add(Rule("503", method="PUT", contains="partNumber=", times=2))
    made = backup_database(database=env.db_block, store=store, reason="fault: blip")
    assert proxy.count("503") == 2, "two part uploads were refused, then retried"
    assert made["parts"] >= 2
    records = list_backups.fn(env.store, env.dbname)
    assert [r.backup_id for r in records if r.complete and r.size_matches] == [made["backup_id"]]
    assert env.uploads() == []
    for key in env.keys():
        env.client.delete_object(Bucket="opsflows-backups", Key=key)


def test_s3_staying_down_fails_with_no_manifest_and_no_orphan_parts(
    env: BackupEnv, proxy: FaultProxy, fast_task_retries: None
) -> None:
    """First attempt: connections cut mid-part; second attempt: 503s. Then the flow fails."""
    store = env.save_store(proxy.url, f"{env.store_block}-down", **NO_SDK_RETRIES)
    part = {"method": "PUT", "contains": "partNumber="}
    proxy.add(Rule("cut", cut_after=1024 * 1024, times=3, **part))  # type: ignore[arg-type]
    proxy.add(Rule("503", **part))  # type: ignore[arg-type]
    state = backup_database(
        database=env.db_block, store=store, reason="fault: S3 down", return_state=True
    )
    assert state.is_failed()
    with pytest.raises(ServiceUnavailable):
        state.result()
    # Both parts are in flight at once; an attempt ends when one of them failed its three
    # tries, and the other stops retrying then: 2 attempts x 3 to 6 refused part uploads.
    refused = proxy.count("cut") + proxy.count("503")
    assert proxy.count("cut") == 3 and 2 * PART_TRIES <= refused <= 2 * 2 * PART_TRIES, (
        proxy.count("cut"),
        proxy.count("503"),
    )
    creates = [t for m, t, _ in proxy.log if m == "POST" and t.endswith("?uploads")]
    aborts = [t for m, t, _ in proxy.log if m == "DELETE" and "uploadId=" in t]
    assert len(creates) == len(aborts) == 2, "every attempt aborted its own upload"
    _no_trace(env)


def test_a_database_down_fails_at_the_check_and_gives_the_lease_back(env: BackupEnv) -> None:
    """The lease is taken while the server check runs; the check fails (nothing listens on
    the port), so the run fails before any upload and no slot stays held."""
    from blocks.postgres import PostgresTarget

    name = f"{env.db_block}-down"
    env.app.model_copy(update={"port": _closed_port()}).save(name, overwrite=True)
    env.saved.append((PostgresTarget, name))
    state = backup_database(database=name, store=env.store_block, reason="fault: db down",
                            return_state=True)  # fmt: skip
    assert state.is_failed()
    with pytest.raises(ServiceUnavailable):
        state.result()
    assert live_writers(env.dbname) == 0, "the lease was given back"
    _no_trace(env)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_killed_mid_upload_leaves_no_complete_looking_backup(
    env: BackupEnv, proxy: FaultProxy
) -> None:
    store = env.save_store(proxy.url, f"{env.store_block}-slow", **NO_SDK_RETRIES)
    proxy.add(Rule("slow", method="PUT", contains="partNumber=", rate_bps=1024 * 1024))
    code = (
        "from flows.backup import backup_database; "
        f"backup_database(database={env.db_block!r}, store={store!r}, reason='killed')"
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
        while not any("partNumber=" in t for _, t, _ in proxy.log):
            assert run.poll() is None, "the backup process ended before it was killed"
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.2)
        # The part is in flight now: the proxy forwards it at 1 MiB/s, a part takes seconds.
        run.send_signal(signal.SIGKILL)
        count_fault("kill")
    finally:
        run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL

    keys = env.keys()
    assert not any(k.endswith(("dump.pgc", "manifest.json")) for k in keys), keys
    with pytest.raises(BackupMissing):
        choose_backup(list_backups.fn(env.store, env.dbname), None)

    deadline = time.monotonic() + 20
    while env.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (env.dbname,),
    ) != [(0,)]:
        assert time.monotonic() < deadline, "pg_dump or the snapshot session outlived the run"
        time.sleep(0.5)

    # The killed run could not abort its upload; the sweep in later runs does, once stale
    # and once its upload lease has run out (the server keeps it for a lease after the death).
    pending = find_pending_uploads.fn(env.store, env.dbname)
    assert len(pending) == 1
    assert live_writers(env.dbname) == 1, "the dead run's lease is held until it expires"
    now = datetime.now(UTC)
    assert sweep_uploads(pending, now, writers=0).abort == (), "too young to sweep yet"
    later = now + timedelta(hours=7)
    assert sweep_uploads(pending, later, writers=1).abort == (), "leased: still writing"
    stale = sweep_uploads(pending, later, writers=0).abort
    assert abort_uploads.fn(env.store, list(stale)) == 1
    _no_trace(env)
