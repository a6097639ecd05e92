"""Retention never deletes what it cannot read, copies of backups stay backups, and a
running upload is never aborted by another run's retention pass (issue 12, item 2)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from decisions.backups import (
    Fingerprint,
    Manifest,
    TableFingerprint,
    backup_id_for,
    manifest_to_dict,
)
from devstack.stack import BACKUP_BUCKET
from flows.backup import backup_database
from flows.restore import restore_database
from tests.backup_support import BackupEnv, admin_target, backup_env, fill
from tests.support import flow_run_artifacts, flow_run_id

MIB = 1024 * 1024
LEGACY = "20000101T000000000000Z"


@pytest.fixture
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    with backup_env(stack, "ret") as made:
        fill(made, 50)
        yield made


def _backup(env: BackupEnv, **kw: Any) -> Any:
    return backup_database(database=env.db_block, store=env.store_block, reason="e2e", **kw)


def _oplog_details(stack: Any, run_id: UUID) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(admin_target(stack, "opsflows").conninfo()) as conn:
        row = conn.execute(
            "SELECT details FROM ops_log WHERE flow_run_id = %s", (str(run_id),)
        ).fetchone()
    assert row is not None
    return dict(row[0])


def _folder(env: BackupEnv, days_ago: float) -> tuple[str, str]:
    bid = backup_id_for(datetime.now(UTC) - timedelta(days=days_ago))
    return bid, env.store.key(env.dbname, bid)


def _manifest(env: BackupEnv, bid: str, base: str, database: str | None = None) -> bytes:
    at = datetime.now(UTC) - timedelta(days=2)
    fake = Manifest(
        backup_id=bid,
        database=database or env.dbname,
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
    return json.dumps(manifest_to_dict(fake)).encode()


def test_unreadable_and_foreign_backups_are_quarantined_never_deleted(
    env: BackupEnv, stack: Any
) -> None:
    put = env.client.put_object
    # A manifest that is not JSON, two days old (past the 6 h grace), with its dump.
    broken, broken_base = _folder(env, 2)
    put(Bucket=BACKUP_BUCKET, Key=f"{broken_base}/dump.pgc", Body=b"x" * 10)
    put(Bucket=BACKUP_BUCKET, Key=f"{broken_base}/manifest.json", Body=b'{"backup_id": "')
    # A manifest of another database, 40 days old (past the retention horizon too).
    other, other_base = _folder(env, 40)
    put(Bucket=BACKUP_BUCKET, Key=f"{other_base}/dump.pgc", Body=b"x" * 10)
    put(
        Bucket=BACKUP_BUCKET,
        Key=f"{other_base}/manifest.json",
        Body=_manifest(env, other, other_base, database="someone_else"),
    )
    # A dump without a manifest beside an object opsflows never writes.
    stray, stray_base = _folder(env, 3)
    put(Bucket=BACKUP_BUCKET, Key=f"{stray_base}/dump.pgc", Body=b"x" * 10)
    put(Bucket=BACKUP_BUCKET, Key=f"{stray_base}/notes.txt", Body=b"kept by a person")
    quarantined = {broken, other, stray}
    before = {k for k in env.keys() if any(b in k for b in quarantined)}
    assert len(before) == 6

    state = _backup(env, return_state=True)
    made = state.result()
    assert before <= set(env.keys()), "nothing of an unreadable or foreign backup is deleted"
    assert not quarantined & set(made["retention_expired"])
    plan = next(a for a in flow_run_artifacts(flow_run_id(state)) if "backup-retention" in a)
    for bid in quarantined:
        assert f"| {bid} |" in plan and "quarantine" in plan
    assert "manifest.json is not valid JSON" in plan
    assert "someone_else" in plan and "notes.txt" in plan
    details = _oplog_details(stack, flow_run_id(state))
    assert set(details["quarantined"]) == quarantined
    # The run reports its own backup, not the last quarantined one.
    assert made["backup_id"] not in quarantined
    assert made["key"].split("/")[-2] == made["backup_id"] == details["backup_id"]
    assert f"Backup {made['backup_id']}: where the time went" in next(
        a for a in flow_run_artifacts(flow_run_id(state)) if "backup-phases" in a
    )


def test_a_copied_backup_lists_and_restores_as_complete(env: BackupEnv) -> None:
    """Keys in a manifest are relative to it: a copy in another bucket is still a backup,
    and so is a copy of a manifest written before that (with an absolute dump key)."""
    from blocks.storage import BackupStore
    from tasks.catalog import list_backups

    made = _backup(env)
    bucket = f"opsflows-copy-{secrets.token_hex(3)}"
    client = env.client
    client.create_bucket(Bucket=bucket)
    prefix = f"copies/{secrets.token_hex(2)}/"
    block = f"{env.store_block}-copy"
    manifest = json.loads(
        client.get_object(Bucket=BACKUP_BUCKET, Key=made["manifest_key"])["Body"].read()
    )
    assert manifest["dump"] == "dump.pgc", "the manifest names its dump relative to itself"
    # As opsflows wrote it before version 2, under its own prefix, taken at 2000-01-01.
    legacy = {k: v for k, v in manifest.items() if k != "dump"} | {
        "version": 1,
        "dump_key": f"backups/{env.dbname}/{LEGACY}/dump.pgc",
        "snapshot_at": "2000-01-01T00:00:00+00:00",
    }
    try:
        for bid, body in ((made["backup_id"], manifest), (LEGACY, legacy)):
            base = f"{prefix}{env.dbname}/{bid}"
            client.copy_object(
                Bucket=bucket,
                Key=f"{base}/dump.pgc",
                CopySource={"Bucket": BACKUP_BUCKET, "Key": made["key"]},
            )
            body = {**body, "backup_id": bid}
            client.put_object(
                Bucket=bucket, Key=f"{base}/manifest.json", Body=json.dumps(body).encode()
            )
        env.save_store(env.info.aws_endpoint_url, block)
        copy = BackupStore.load(block)
        copy.bucket, copy.prefix = bucket, prefix
        copy.save(block, overwrite=True)

        records = list_backups.fn(copy, env.dbname)
        assert [(r.backup_id, r.complete, r.size_matches) for r in records] == [
            (LEGACY, True, True),
            (made["backup_id"], True, True),
        ]
        restored = restore_database(
            database=env.db_block, admin_database=env.admin_block, store=block
        )
        assert restored["backup_id"] == made["backup_id"]
        assert restored["verification"]["success"]
        old = restore_database(
            database=env.db_block,
            admin_database=env.admin_block,
            store=block,
            at="2000-01-01 00:00:01",
        )
        assert old["backup_id"] == LEGACY, "the legacy manifest restores too"
    finally:
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        for obj in listed:
            client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)


def test_an_upload_still_running_survives_another_runs_retention(env: BackupEnv) -> None:
    """A backup that started 8 h ago is still uploading: another run's retention pass keeps
    its multipart upload, which then completes; once no backup is writing, a pass aborts an
    upload that old."""
    from procedures.upload_lease import upload_lease

    def start(days_ago: float) -> tuple[str, str]:
        bid, base = _folder(env, days_ago)
        key = f"{base}/dump.pgc"
        upload = env.client.create_multipart_upload(Bucket=BACKUP_BUCKET, Key=key)
        return key, str(upload["UploadId"])

    with upload_lease(env.dbname):  # what a running backup holds while it uploads
        key, upload_id = start(8 / 24)
        part = env.client.upload_part(
            Bucket=BACKUP_BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"y" * MIB
        )
        made = _backup(env)
        assert made["stale_uploads"] == []
        assert [u["UploadId"] for u in env.uploads()] == [upload_id], "the upload survives"
        assert made["uploads_kept"] == {key: made["uploads_kept"][key]}
        assert "writing" in made["uploads_kept"][key]
        env.client.complete_multipart_upload(
            Bucket=BACKUP_BUCKET,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
    assert key in env.keys() and env.uploads() == []

    abandoned, abandoned_id = start(8 / 24)
    swept = _backup(env)
    assert swept["stale_uploads"] == [abandoned], "no backup is writing: the old one is aborted"
    assert abandoned_id not in [u["UploadId"] for u in env.uploads()]
