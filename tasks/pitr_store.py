"""The point-in-time recovery folders of the backup store: base backups and archived WAL.

Listing and reading only, plus retention's deletions; the layout is ``decisions/wal.py``'s.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from blocks.storage import BackupStore
from decisions.wal import (
    ArchivedFile,
    BackupHistory,
    BaseBackup,
    base_folder,
    parse_backup_history,
    wal_folder,
)
from opsflows import retry
from opsflows.errors import NotFoundError, PermanentError
from tasks.storage import aws_errors

MANIFEST = "manifest.json"


def wal_prefix(store: BackupStore, cluster: str) -> str:
    return store.key(wal_folder(cluster)) + "/"


def base_prefix(store: BackupStore, cluster: str) -> str:
    return store.key(base_folder(cluster)) + "/"


def _objects(store: BackupStore, prefix: str) -> Iterable[dict[str, Any]]:
    client = store.s3_client()
    paginator = client.get_paginator("list_objects_v2")
    with aws_errors(f"list s3://{store.bucket}/{prefix}"):
        for page in paginator.paginate(Bucket=store.bucket, Prefix=prefix):
            yield from page.get("Contents", [])


@task(name="list archived WAL", **retry.NETWORK)
def list_archived(store: BackupStore, cluster: str) -> list[ArchivedFile]:
    """Every archived WAL file of ``cluster`` (segments, .history and .backup files)."""
    prefix = wal_prefix(store, cluster)
    found = []
    for obj in _objects(store, prefix):
        name = str(obj["Key"])[len(prefix) :].removesuffix(".zst")
        found.append(
            ArchivedFile(name, obj["LastModified"].astimezone(UTC), int(obj.get("Size", 0)))
        )
    return sorted(found, key=lambda f: f.name)


def manifest_to_dict(base: BaseBackup) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in base.as_dict().items()}


def manifest_from_dict(data: dict[str, Any]) -> BaseBackup:
    fields = dict(data)
    for name in ("started_at", "finished_at"):
        fields[name] = datetime.fromisoformat(fields[name])
    return BaseBackup(**fields)


@task(name="list base backups", **retry.NETWORK)
def list_base_backups(store: BackupStore, cluster: str) -> list[BaseBackup]:
    """Complete base backups (a manifest was written), oldest first; an unreadable manifest
    is skipped with a warning (that base backup cannot be restored from)."""
    client = store.s3_client()
    found = []
    for obj in _objects(store, base_prefix(store, cluster)):
        key = str(obj["Key"])
        if not key.endswith("/" + MANIFEST):
            continue
        with aws_errors(f"read {key}"):
            body = client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
        try:
            found.append(manifest_from_dict(json.loads(body)))
        except (ValueError, TypeError, KeyError) as exc:
            get_run_logger().warning("skipping unreadable base backup manifest %s: %s", key, exc)
    return sorted(found, key=lambda b: b.finished_at)


@task(name="write base backup manifest", **retry.NETWORK)
def write_base_manifest(store: BackupStore, cluster: str, base: BaseBackup) -> str:
    """Written last: from now on the base backup is complete."""
    key = f"{base_prefix(store, cluster)}{base.backup_id}/{MANIFEST}"
    body = json.dumps(manifest_to_dict(base), indent=2).encode()
    with aws_errors(f"write {key}"):
        store.s3_client().put_object(
            Bucket=store.bucket, Key=key, Body=body, ContentType="application/json"
        )
    return key


@task(name="delete expired base backups and WAL", **retry.NETWORK)
def delete_pitr_objects(
    store: BackupStore, cluster: str, bases: Iterable[str], wal: Iterable[str]
) -> int:
    """Delete base backup folders (every object under them) and WAL files; how many."""
    client = store.s3_client()
    keys = [f"{wal_prefix(store, cluster)}{name}.zst" for name in wal]
    for backup_id in bases:
        folder = f"{base_prefix(store, cluster)}{backup_id}/"
        # The manifest first: a folder without it is no base backup any more.
        keys.append(folder + MANIFEST)
        keys.extend(
            str(o["Key"]) for o in _objects(store, folder) if not str(o["Key"]).endswith(MANIFEST)
        )
    deleted = 0
    for i in range(0, len(keys), 1000):
        batch = keys[i : i + 1000]
        with aws_errors(f"delete {len(batch)} objects"):
            client.delete_objects(
                Bucket=store.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
        deleted += len(batch)
    return deleted


def read_archived(store: BackupStore, cluster: str, name: str) -> bytes:
    """An archived WAL file's content, decompressed and checked against its SHA-256."""
    key = f"{wal_prefix(store, cluster)}{name}.zst"
    with aws_errors(f"read {key}"):
        got = store.s3_client().get_object(Bucket=store.bucket, Key=key)
    body, want = got["Body"].read(), got.get("Metadata", {}).get("sha256")
    done = subprocess.run(["zstd", "-d", "-q", "-c"], input=body, capture_output=True)
    if done.returncode != 0 or hashlib.sha256(done.stdout).hexdigest() != want:
        raise PermanentError(
            f"archived WAL file {name} is corrupted (does not decompress or its SHA-256 "
            "does not match the one recorded when it was archived)",
            hint=f"s3://{store.bucket}/{key}; take a new base backup",
        )
    return bytes(done.stdout)


@task(name="find the base backup's WAL range", **retry.NETWORK)
def find_backup_history(
    store: BackupStore, cluster: str, label: str, wait_s: float = 60.0
) -> BackupHistory:
    """The archived backup history file of the base backup labelled ``label`` (the server
    archives it when the backup stops; waited for up to ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    seen: set[str] = set()
    while True:
        for f in reversed(list_archived.fn(store, cluster)):
            if not f.name.endswith(".backup") or f.name in seen:
                continue
            seen.add(f.name)
            history = parse_backup_history(read_archived(store, cluster, f.name).decode())
            if history.label == label:
                return history
        if time.monotonic() > deadline:
            raise NotFoundError(
                f"no archived backup history file labelled {label!r} within {wait_s:g} s",
                hint="WAL archiving did not deliver it: check pg_stat_archiver and the "
                "PostgreSQL log; the base backup is incomplete (no manifest written)",
            )
        time.sleep(1)
