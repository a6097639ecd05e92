"""Dump, restore and verify against the real PostgreSQL and S3 (moto) of the test stack."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from psycopg import sql

from decisions.backups import Manifest, backup_id_for
from devstack.stack import BACKUP_BUCKET
from opsflows.errors import PermanentError, VerificationFailed
from tasks.catalog import backup_keys, list_backups, write_manifest
from tasks.dump import dump_to_s3
from tasks.fingerprint import exported_snapshot, take_fingerprint
from tasks.multipart import MultipartUpload
from tasks.pipes import pg_tool
from tasks.restore import restore_into_scratch
from tasks.verify import run_checks
from tests.backup_support import BackupEnv, backup_env, fill

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    """One database with ~12 MiB of incompressible rows, so a dump takes several parts."""
    with backup_env(stack, "int") as made:
        fill(made, 12_000, payload_bytes=900)
        yield made


def _dump(env: BackupEnv, compression: str = "zstd:1") -> Manifest:
    bid = backup_id_for(datetime.now(UTC))
    key = backup_keys(env.store, env.dbname, bid)["dump"]
    out = dump_to_s3(env.app, env.store, key, part_size=5 * MIB, compression=compression)
    manifest = Manifest(
        backup_id=bid,
        database=env.dbname,
        server_version=out.snapshot.server_version,
        started_at=out.started_at,
        finished_at=out.finished_at,
        snapshot_at=out.snapshot.taken_at,
        dump_key=key,
        size_bytes=out.upload.size_bytes,
        sha256=out.upload.sha256,
        parts=out.upload.parts,
        compression=out.compression,
        fingerprint=out.fingerprint,
    )
    write_manifest.fn(env.store, manifest)
    return manifest


@pytest.fixture(scope="module")
def manifest(env: BackupEnv) -> Manifest:
    return _dump(env)


def test_dump_streams_in_parts_with_checksum_tag_and_fingerprint(
    env: BackupEnv, manifest: Manifest
) -> None:
    assert manifest.parts >= 2, "incompressible rows over 5 MiB parts need several parts"
    head = env.client.head_object(Bucket=BACKUP_BUCKET, Key=manifest.dump_key)
    assert head["ContentLength"] == manifest.size_bytes
    tags = env.client.get_object_tagging(Bucket=BACKUP_BUCKET, Key=manifest.dump_key)["TagSet"]
    assert {"Key": "sha256", "Value": manifest.sha256} in tags
    rows = {t.name: t.rows for t in manifest.fingerprint.tables}
    assert rows == {"public.customers": 12_000, "public.orders": 12_000}
    assert manifest.fingerprint.table("public.orders").max_pk == 12_000  # type: ignore[union-attr]
    assert len(manifest.fingerprint.schema_hash) == 64
    assert env.uploads() == [], "a completed upload leaves no pending multipart upload"
    records = list_backups.fn(env.store, env.dbname)
    assert [r.backup_id for r in records if r.complete] == [manifest.backup_id]


def test_catalog_ignores_folders_that_are_not_backups(env: BackupEnv, manifest: Manifest) -> None:
    # e.g. the user's suites when a database is named "expectations": never a backup to prune
    stray = env.store.key(env.dbname, "orders", "orders.json")
    env.client.put_object(Bucket=BACKUP_BUCKET, Key=stray, Body=b"{}")
    try:
        ids = [r.backup_id for r in list_backups.fn(env.store, env.dbname)]
    finally:
        env.client.delete_object(Bucket=BACKUP_BUCKET, Key=stray)
    assert ids == [manifest.backup_id]


def test_fingerprint_and_dump_share_one_snapshot(env: BackupEnv) -> None:
    """Rows written after the snapshot is exported are in neither the counts nor the dump."""
    scratch = env.dbname + "_snap"
    env.sql(
        sql.SQL("CREATE DATABASE {} OWNER app").format(sql.Identifier(scratch)), database="postgres"
    )  # type: ignore[arg-type]
    with exported_snapshot(env.app) as (conn, snap):
        env.sql("INSERT INTO customers (name) VALUES ('written after the snapshot')")
        prints = take_fingerprint(conn)
        dump = subprocess.run(
            [pg_tool("pg_dump", snap.server_version_num), "-Fc", f"--snapshot={snap.snapshot_id}"],
            env={**os.environ, **env.app.libpq_env()},
            capture_output=True,
            check=True,
        ).stdout
    subprocess.run(
        [pg_tool("pg_restore", snap.server_version_num), f"--dbname={scratch}"],
        input=dump,
        env={**os.environ, **env.admin.libpq_env()},
        check=True,
    )
    live = env.sql("SELECT count(*) FROM customers")[0][0]
    restored = env.sql("SELECT count(*) FROM customers", database=scratch)[0][0]
    assert prints.table("public.customers").rows == restored == live - 1  # type: ignore[union-attr]
    env.sql("DELETE FROM customers WHERE name = 'written after the snapshot'")


def test_restore_streams_back_and_verifies_with_great_expectations(
    env: BackupEnv, manifest: Manifest
) -> None:
    scratch = env.dbname + "_ok"
    result = restore_into_scratch(env.store, manifest, env.admin, scratch, env.dbname)
    assert result.sha256 == manifest.sha256 and result.bytes_read == manifest.size_bytes
    owner = env.sql(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
        (scratch,),
        database="postgres",
    )
    assert owner == [("app",)], "the scratch database has the live database's owner"
    report = run_checks(env.admin, scratch, manifest)
    assert report.success, report.summary()
    checks = {c.check for c in report.checks}
    assert checks == {"tables present", "row counts", "schema hash"}

    # The same checks fail when the data or the schema differ from the manifest.
    env.sql("DELETE FROM orders WHERE id > 11990", database=scratch)
    env.sql("ALTER TABLE customers ADD COLUMN extra int", database=scratch)
    env.sql("CREATE TABLE stray (id int)", database=scratch)
    failed = run_checks(env.admin, scratch, manifest)
    assert not failed.success
    assert {c.check for c in failed.failures} == {"tables present", "row counts", "schema hash"}
    assert any("public.orders" in c.observed and "11990" in c.observed for c in failed.failures)


def test_user_suites_from_the_store_run_and_can_fail(env: BackupEnv, manifest: Manifest) -> None:
    """GX-native suites under expectations/<db>/, one per table, as the migrations keep them."""
    from tasks.verify import load_user_suites

    customers = {
        "name": "customers",
        "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "name"}},
            {
                "type": "expect_column_values_to_match_regex",
                "kwargs": {"column": "name", "regex": "^vip "},
            },
        ],
        "meta": {"great_expectations_version": "1.24.1"},
    }
    gone = {
        "name": "gone",
        "expectations": [{"type": "expect_table_row_count_to_equal", "kwargs": {"value": 0}}],
    }
    folder = env.store.key("expectations", env.dbname)
    keys = [f"{folder}/public.customers.json", f"{folder}/gone.json", f"{folder}/README.md"]
    for key, body in zip(keys, [customers, gone, "not a suite"], strict=True):
        env.client.put_object(Bucket=BACKUP_BUCKET, Key=key, Body=json.dumps(body).encode())
    try:
        loaded = load_user_suites(env.store, env.dbname)
        assert [(s.qualified, s.location) for s in loaded] == [
            ("public.gone", f"s3://{BACKUP_BUCKET}/{keys[1]}"),
            ("public.customers", f"s3://{BACKUP_BUCKET}/{keys[0]}"),
        ]
        report = run_checks(env.admin, env.dbname, manifest, loaded)
        sampled = run_checks(env.admin, env.dbname, manifest, loaded, row_samples=True)
    finally:
        for key in keys:
            env.client.delete_object(Bucket=BACKUP_BUCKET, Key=key)
    user = [(c.check, c.success, c.observed) for c in report.checks if c.check.startswith("user")]
    assert user == [
        ("user suite public.gone", False, "table missing"),
        ("user suite public.customers", True, "0 of 12000 rows unexpected (0%)"),
        ("user suite public.customers", False, user[2][2]),
    ]
    # By default the failure says how many rows, never their values; row_samples shows them.
    assert "rows unexpected" in user[2][2] and "customer 1" not in user[2][2], user[2][2]
    failed = [c.observed for c in sampled.checks if c.check.startswith("user") and not c.success]
    assert "customer 1" in failed[-1], "asked for, the failure shows values that did not match"
    assert load_user_suites(env.store, env.dbname) == (), "no suite folder: no user checks"


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_damaged_object_fails_the_checksum_and_leaves_nothing(
    env: BackupEnv, manifest: Manifest, damage: str
) -> None:
    body = env.client.get_object(Bucket=BACKUP_BUCKET, Key=manifest.dump_key)["Body"].read()
    if damage == "corrupt":
        middle = len(body) // 2
        bad = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
    else:
        bad = body[: len(body) - 3 * MIB]
    damaged_key = manifest.dump_key.replace("dump.pgc", f"{damage}.pgc")
    env.client.put_object(Bucket=BACKUP_BUCKET, Key=damaged_key, Body=bad)
    broken = Manifest(**{**manifest.__dict__, "dump_key": damaged_key})
    scratch = f"{env.dbname}_{damage}"
    with pytest.raises(VerificationFailed, match="checksum mismatch") as info:
        restore_into_scratch(env.store, broken, env.admin, scratch, env.dbname)
    assert manifest.sha256 in str(info.value) and "corrupt or truncated" in str(info.value)
    assert scratch not in env.databases(), "the scratch database was dropped"
    env.client.delete_object(Bucket=BACKUP_BUCKET, Key=damaged_key)


def test_failed_dump_aborts_the_upload(env: BackupEnv) -> None:
    """pg_dump dies (a table the role may not read): no object, no pending parts."""
    env.sql("CREATE TABLE private_audit (id int); INSERT INTO private_audit VALUES (1)")
    key = env.store.key(env.dbname, "failing", "dump.pgc")
    try:
        with pytest.raises(PermanentError, match="permission denied"):
            dump_to_s3(env.app, env.store, key, part_size=5 * MIB)
    finally:
        env.sql("DROP TABLE private_audit")
    assert key not in env.keys()
    assert env.uploads() == []


def test_multipart_upload_is_aborted_when_the_body_fails(env: BackupEnv) -> None:
    class Exploding:
        def __init__(self) -> None:
            self.calls = 0

        def readinto(self, view: memoryview) -> int:
            self.calls += 1
            if self.calls > 8:
                raise OSError("disk on fire")
            view[:MIB] = b"x" * MIB
            return MIB

    key = env.store.key(env.dbname, "exploding", "dump.pgc")
    with (
        pytest.raises(PermanentError, match="disk on fire"),
        MultipartUpload(env.client, BACKUP_BUCKET, key) as upload,
    ):
        upload.feed(Exploding(), 5 * MIB)  # type: ignore[arg-type]
    assert env.uploads() == [] and key not in env.keys()
