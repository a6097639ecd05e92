"""When the backup's fingerprint runs (tasks/dump.py): after the stream, while S3 assembles
the upload, for a database up to ``fingerprint_beside_bytes``; beside the dump above it. Either
way it counts in the dump's snapshot, and a fingerprint that fails leaves no object behind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import tasks.dump
from decisions.backups import Fingerprint, backup_id_for
from devstack.stack import BACKUP_BUCKET
from opsflows.errors import PermanentError
from opsflows.settings import get_settings
from tasks.catalog import backup_keys
from tasks.dump import DumpResult, dump_to_s3
from tests.backup_support import BackupEnv, backup_env, fill

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    with backup_env(stack, "fpt") as made:
        fill(made, 8_000, payload_bytes=900)  # ~8 MiB: two parts of 5 MiB
        yield made


@pytest.fixture
def beside_above(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``set(n)``: databases above ``n`` bytes count beside the dump (settings re-read)."""

    def set_limit(limit: int) -> None:
        monkeypatch.setenv("OPSFLOWS_FINGERPRINT_BESIDE_BYTES", str(limit))
        get_settings.cache_clear()

    yield set_limit
    get_settings.cache_clear()  # monkeypatch restores the environment after this


def _key(env: BackupEnv) -> str:
    return backup_keys(env.store, env.dbname, backup_id_for(datetime.now(UTC)))["dump"]


def _phase(out: DumpResult, name: str) -> tuple[float, float]:
    found = [p for p in out.phases if p.name == name]
    assert len(found) == 1, [p.name for p in out.phases]
    return found[0].start_s, found[0].start_s + found[0].seconds


def _write_first(env: BackupEnv, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the fingerprint commit a new order just before it counts; the orders it saw."""
    real = tasks.dump.fingerprint_in
    seen: list[int] = []

    def late(target: Any, conn: Any, timeout_s: float) -> Fingerprint:
        env.sql("INSERT INTO orders (customer_id, note) VALUES (1, 'after the dump began')")
        seen.append(env.sql("SELECT count(*) FROM orders")[0][0])
        return real(target, conn, timeout_s)

    monkeypatch.setattr(tasks.dump, "fingerprint_in", late)
    return seen


def test_a_small_database_is_counted_after_the_stream_in_the_dumps_snapshot(
    env: BackupEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = _write_first(env, monkeypatch)
    try:
        out = dump_to_s3(env.app, env.store, _key(env), part_size=5 * MIB, database_bytes=1)
        _, stream_end = _phase(out, "dump stream")
        counted, _ = _phase(out, "fingerprint")
        assert counted >= stream_end, "counted once the stream had ended"
        orders = out.fingerprint.table("public.orders")
        assert orders is not None and orders.rows == live[0] - 1, "the late row is not in it"
        complete, _ = _phase(out, "complete and tag")
        assert counted <= complete + 0.5, "counted while S3 assembled the upload"
    finally:
        env.sql("DELETE FROM orders WHERE note = 'after the dump began'")


def test_a_large_database_is_counted_beside_the_dump(
    env: BackupEnv, monkeypatch: pytest.MonkeyPatch, beside_above: Any
) -> None:
    beside_above(1024)
    live = _write_first(env, monkeypatch)
    try:
        out = dump_to_s3(env.app, env.store, _key(env), part_size=5 * MIB, database_bytes=2048)
        _, stream_end = _phase(out, "dump stream")
        counted, _ = _phase(out, "fingerprint")
        assert counted < stream_end, "counted while the dump streamed"
        orders = out.fingerprint.table("public.orders")
        assert orders is not None and orders.rows == live[0] - 1
    finally:
        env.sql("DELETE FROM orders WHERE note = 'after the dump began'")


@pytest.mark.parametrize("database_bytes", [1, 2048], ids=["after the stream", "beside"])
def test_a_failed_fingerprint_leaves_no_object_and_no_upload(
    env: BackupEnv, monkeypatch: pytest.MonkeyPatch, beside_above: Any, database_bytes: int
) -> None:
    beside_above(1024)

    def broken(target: Any, conn: Any, timeout_s: float) -> Fingerprint:
        raise PermanentError("counting failed", hint="a test fault")

    monkeypatch.setattr(tasks.dump, "fingerprint_in", broken)
    key = _key(env)
    with pytest.raises(PermanentError, match="counting failed"):
        dump_to_s3.with_options(retries=0)(
            env.app, env.store, key, part_size=5 * MIB, database_bytes=database_bytes
        )
    assert key not in env.keys(), "no dump without its fingerprint"
    assert env.uploads() == []
    env.client.head_bucket(Bucket=BACKUP_BUCKET)
