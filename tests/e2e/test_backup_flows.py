"""The backup, restore and drill flows through the real Prefect server and the local stack."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client

from decisions.backups import (
    Fingerprint,
    Manifest,
    TableFingerprint,
    backup_id_for,
    manifest_to_dict,
)
from devstack import stack as devstack
from devstack.stack import BACKUP_BUCKET
from flows.backup import backup_database
from flows.restore_drill import restore_drill
from opsflows.errors import BackupMissing, VerificationFailed
from tests.backup_runs_support import backup as _backup
from tests.backup_runs_support import customers as _customers
from tests.backup_runs_support import oplog as _oplog
from tests.backup_runs_support import restore as _restore
from tests.backup_support import BackupEnv, backup_env, fill
from tests.support import assert_no_secret, flow_run_artifacts, flow_run_id, flow_run_texts


@pytest.fixture
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    with backup_env(stack, "e2e") as made:
        fill(made, 50)
        yield made


def test_restore_to_an_earlier_timestamp_gives_the_earlier_rows(env: BackupEnv, stack: Any) -> None:
    first_state = _backup(env, return_state=True)
    first = first_state.result()
    earlier = _customers(env)
    assert first["tables"] == {"public.customers": 50, "public.orders": 50}
    assert first["key"] in env.keys() and first["manifest_key"] in env.keys()
    env.sql("UPDATE customers SET name = 'renamed ' || id WHERE id <= 10; DELETE FROM orders")
    second = _backup(env)
    assert second["tables"]["public.orders"] == 0

    between = (
        datetime.fromisoformat(first["snapshot_at"])
        + (
            datetime.fromisoformat(second["snapshot_at"])
            - datetime.fromisoformat(first["snapshot_at"])
        )
        / 2
    )
    at = between.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # naive text means UTC
    state = _restore(env, at=at, return_state=True)
    result = state.result()
    assert result["backup_id"] == first["backup_id"]
    assert result["verification"]["success"] and result["rto_s"] > 0
    scratch = result["scratch_database"]
    assert _customers(env, scratch) == earlier
    assert env.sql("SELECT count(*) FROM orders", database=scratch) == [(50,)]
    assert _customers(env) != earlier, "the live database is untouched"

    newest = _restore(env)
    assert newest["backup_id"] == second["backup_id"]
    assert _customers(env, newest["scratch_database"]) == _customers(env)

    run = flow_run_id(state)
    status, details = _oplog(stack, run)
    assert status == "succeeded" and details["backup_id"] == first["backup_id"]
    assert any("restore-verification" in a for a in flow_run_artifacts(run))
    secrets = devstack.stack_secrets(Path(stack.state_dir))
    texts = flow_run_texts(run) + flow_run_texts(flow_run_id(first_state))
    assert any("backup-catalog" in t for t in texts), "the backup publishes its catalog"
    assert_no_secret(texts, [secrets["postgres"], secrets["app"]])

    with pytest.raises(BackupMissing, match=first["backup_id"]):
        _restore(env, at="2001-01-01 00:00:00")


def test_corrupt_backup_fails_verification_and_leaves_live_untouched(
    env: BackupEnv, stack: Any
) -> None:
    """(Truncation is covered at the task level in tests/integration/test_dump_restore.py.)"""
    made = _backup(env)
    body = env.client.get_object(Bucket=BACKUP_BUCKET, Key=made["key"])["Body"].read()
    body = body[:100] + bytes([body[100] ^ 0x55]) + body[101:]
    env.client.put_object(Bucket=BACKUP_BUCKET, Key=made["key"], Body=body)
    before = _customers(env)
    state = _restore(env, replace_live=True, approval_poll_s=1, return_state=True)
    assert state.is_failed()
    with pytest.raises(VerificationFailed, match="checksum mismatch") as info:
        state.result()
    assert made["sha256"] in str(info.value)
    assert _customers(env) == before
    assert env.databases() == [env.dbname], "no scratch database is left behind"
    status, _ = _oplog(stack, flow_run_id(state))
    assert status == "failed"


class _Sink(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", "0"))
        self.received.append(json.loads(self.rfile.read(length) or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sink_routing(env: BackupEnv) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A NotificationRouting block whose P2/P3 go to a webhook served by this test."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from blocks.notify import NotificationRouting

    received: list[dict[str, Any]] = []
    handler = type("Sink", (_Sink,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"{env.db_block}-sink"
    CustomWebhookNotificationBlock(
        name="drill sink",
        url=f"http://127.0.0.1:{server.server_address[1]}/hook",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,
    ).save(name, overwrite=True)
    ref = f"custom-webhook/{name}"
    NotificationRouting(routes={"P1": [], "P2": [ref], "P3": [ref], "P4": []}).save(
        name, overwrite=True
    )
    yield name, received
    server.shutdown()
    for cls in (CustomWebhookNotificationBlock, NotificationRouting):
        cls.delete(name)


def test_restore_drill_records_rto_rpo_and_notifies(
    env: BackupEnv, stack: Any, sink_routing: tuple[str, list[dict[str, Any]]]
) -> None:
    routing, received = sink_routing
    made = _backup(env)
    drill = dict(
        database=env.db_block,
        admin_database=env.admin_block,
        store=env.store_block,
        routing=routing,
    )
    state = restore_drill(**drill, return_state=True)  # type: ignore[arg-type]
    result = state.result()
    assert result["backup_id"] == made["backup_id"] and not result["backup_too_old"]
    assert env.databases() == [env.dbname], "the drill drops its scratch database"
    status, details = _oplog(stack, flow_run_id(state))
    assert status == "succeeded"
    # RPO is the age of the backup when the drill ran: from the manifest's snapshot time to
    # the drill's own start and end; RTO fits inside the drill run's wall time.
    snapshot = datetime.fromisoformat(made["snapshot_at"])
    assert datetime.fromisoformat(details["backup_snapshot_at"]) == snapshot
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id(state))
    assert run.start_time is not None and run.end_time is not None
    assert (run.start_time - snapshot).total_seconds() <= details["rpo_s"]
    assert details["rpo_s"] <= (run.end_time - snapshot).total_seconds()
    assert 0 < details["rto_s"] <= (run.end_time - run.start_time).total_seconds()
    assert received == []
    verified = [k for k in env.keys() if k.endswith("verified.json")]
    assert len(verified) == 1, "a verified drill marks the backup verified"

    stale = restore_drill(**drill, max_backup_age_h=0.0001)  # type: ignore[arg-type]
    assert stale["backup_too_old"]
    assert [m["subject"] for m in received] == [f"[P3] newest backup of {env.dbname} is too old"]

    env.client.delete_object(Bucket=BACKUP_BUCKET, Key=made["key"])
    failed = restore_drill(**drill, return_state=True)  # type: ignore[arg-type]
    assert failed.is_failed()
    assert received[-1]["subject"] == f"[P2] restore drill of {env.dbname} failed"
    assert _oplog(stack, flow_run_id(failed))[0] == "failed"


def _fake_backup(
    env: BackupEnv, days_ago: int, *, verified: bool = False, manifest: bool = True
) -> str:
    at = datetime.now(UTC) - timedelta(days=days_ago)
    bid = backup_id_for(at)
    base = env.store.key(env.dbname, bid)
    env.client.put_object(Bucket=BACKUP_BUCKET, Key=f"{base}/dump.pgc", Body=b"x" * 10)
    if manifest:
        fake = Manifest(
            backup_id=bid,
            database=env.dbname,
            server_version="15",
            started_at=at,
            finished_at=at,
            snapshot_at=at,
            dump_key=f"{base}/dump.pgc",
            size_bytes=10,
            sha256="0" * 64,
            parts=1,
            compression="zstd:1",
            fingerprint=Fingerprint((TableFingerprint("public.t", 1),), "0" * 64),
        )
        body = json.dumps(manifest_to_dict(fake)).encode()
        env.client.put_object(Bucket=BACKUP_BUCKET, Key=f"{base}/manifest.json", Body=body)
    if verified:
        env.client.put_object(Bucket=BACKUP_BUCKET, Key=f"{base}/verified.json", Body=b"{}")
    return bid


def test_retention_keeps_what_it_must(env: BackupEnv) -> None:
    from blocks.storage import BackupStore

    store = BackupStore.load(env.store_block)
    store.min_backups = 2
    store.save(env.store_block, overwrite=True)
    old = {d: _fake_backup(env, d, verified=(d == 42)) for d in (40, 41, 42, 43)}
    # A dump without a manifest, named 45 days old but written just now (S3's clock): a run
    # may still be writing its manifest, so it is kept (past 6 h it goes: unit tests).
    leftover = _fake_backup(env, 45, manifest=False)
    dry = _backup(env, dry_run_retention=True)
    # One new backup + the 40-day one are the newest two; 42 days is the newest verified.
    assert set(dry["retention_expired"]) == {old[41], old[43]}
    assert dry["deleted_keys"] == []
    assert all(bid in " ".join(env.keys()) for bid in [*old.values(), leftover])

    made = _backup(env)
    ids = {k.split("/")[-2] for k in env.keys()}
    assert ids == {dry["backup_id"], made["backup_id"], old[42], leftover}, (
        "keeps the two new backups, the newest verified one and the recent leftover"
    )
    assert set(made["retention_expired"]) == {old[40], old[41], old[43]}


def test_bad_input_fails_before_any_side_effect(env: BackupEnv) -> None:
    from opsflows.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="cannot read 'yesterday' as a timestamp"):
        _restore(env, at="yesterday")
    with pytest.raises(ConfigurationError, match="restore point 2999-01-01T00:00:00.* future"):
        _restore(env, at="2999-01-01 00:00:00")
    with pytest.raises(ConfigurationError, match="unknown compression 'lz4'"):
        _backup(env, compression="lz4")
    with pytest.raises(ConfigurationError, match="missing or invalid"):
        backup_database(database="no-such-block", store=env.store_block)
    assert env.keys() == [] and env.databases() == [env.dbname]


def test_restore_not_matching_its_manifest_fails_and_drops_the_scratch(env: BackupEnv) -> None:
    made = _backup(env)
    body = json.loads(
        env.client.get_object(Bucket=BACKUP_BUCKET, Key=made["manifest_key"])["Body"].read()
    )
    for table in body["fingerprint"]["tables"]:
        if table["name"] == "public.customers":
            table["rows"] += 1  # the manifest promises a row the dump does not hold
    env.client.put_object(
        Bucket=BACKUP_BUCKET, Key=made["manifest_key"], Body=json.dumps(body).encode()
    )
    with pytest.raises(VerificationFailed, match="did not match its manifest: row counts"):
        _restore(env)
    assert env.databases() == [env.dbname], "the failed restore's scratch database is gone"
    assert not any(k.endswith("verified.json") for k in env.keys())
