"""The backup catalog in S3: list backups and manifests, write manifests, apply retention.

Layout under the store's prefix, one folder per backup::

    <prefix><database>/<backup_id>/dump.pgc       the pg_dump custom-format archive
    <prefix><database>/<backup_id>/manifest.json  written last: the backup is complete
    <prefix><database>/<backup_id>/verified.json  a restore verified it (drill or restore)
    <prefix>expectations/<database>/<table>.json  optional user expectation suites (GX 1.x;
                                                  or <schema>.<table>.json)

Only folders named like a backup id (``20251119T020000123456Z``) are backups. The manifest
names its dump relative to itself, so a backup folder copied to another prefix or bucket is a
backup there too. What retention does with folders it cannot read (quarantine, never delete)
is decided in :mod:`decisions.retention`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from blocks.storage import BackupStore
from decisions.backups import (
    DUMP,
    LAYOUT,
    MANIFEST,
    VERIFIED,
    BackupRecord,
    Manifest,
    folder_of,
    manifest_from_dict,
    manifest_to_dict,
    parse_backup_id,
)
from decisions.retention import PendingUpload, RetentionPlan, UploadSweep, assess
from opsflows import retry
from opsflows.errors import ConfigurationError, NotFoundError, PermanentError
from tasks.storage import aws_errors

__all__ = ["DUMP", "MANIFEST", "VERIFIED"]  # the layout, re-exported for callers of this module


def database_prefix(store: BackupStore, database: str) -> str:
    """Folder of every backup of ``database``."""
    return store.key(database) + "/"


def backup_keys(store: BackupStore, database: str, backup_id: str) -> dict[str, str]:
    """The object keys of one backup."""
    base = store.key(database, backup_id)
    return {
        "dump": f"{base}/{DUMP}",
        "manifest": f"{base}/{MANIFEST}",
        "verified": f"{base}/{VERIFIED}",
    }


def _get_json(client: Any, bucket: str, key: str) -> dict[str, Any]:
    with aws_errors(f"read s3://{bucket}/{key}"):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ConfigurationError(f"s3://{bucket}/{key} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"s3://{bucket}/{key} is not a JSON object")
    return data


@task(name="list backups", **retry.NETWORK)
def list_backups(store: BackupStore, database: str) -> list[BackupRecord]:
    """Every backup folder of ``database``, oldest first (manifests read and parsed)."""
    client = store.s3_client()
    prefix = database_prefix(store, database)
    objects: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    with aws_errors(f"list s3://{store.bucket}/{prefix}"):
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                rest = str(obj["Key"])[len(prefix) :]
                backup_id, _, name = rest.partition("/")
                # Only folders named like our backup ids: anything else under the prefix
                # (e.g. the suites of a database named "expectations") is not a backup.
                if name and parse_backup_id(backup_id) is not None:
                    objects[backup_id][name] = obj
    return [
        _record(client, store.bucket, database, backup_id, files)
        for backup_id, files in sorted(objects.items())
    ]


def _record(
    client: Any, bucket: str, database: str, backup_id: str, files: dict[str, dict[str, Any]]
) -> BackupRecord:
    """One backup folder: its manifest read (or why not), its dump, stray objects."""
    manifest: Manifest | None = None
    error = ""
    if MANIFEST in files:
        key = str(files[MANIFEST]["Key"])
        try:
            manifest = manifest_from_dict(_get_json(client, bucket, key), key)
        except PermanentError as exc:
            # Not JSON, fields missing, a newer version, refused: quarantined, never deleted.
            error = str(exc)
            get_run_logger().warning("backup %s quarantined: %s", backup_id, error)
    dump_name = manifest.dump_key.rpartition("/")[2] if manifest else DUMP
    dump = files.get(dump_name)
    known = LAYOUT | {dump_name}
    verified = files.get(VERIFIED)
    return BackupRecord(
        backup_id=backup_id,
        database=database,
        dump_key=str(dump["Key"]) if dump else None,
        dump_size=int(dump["Size"]) if dump else None,
        dump_modified=dump["LastModified"].astimezone(UTC) if dump else None,
        manifest=manifest,
        verified_at=verified["LastModified"].astimezone(UTC) if verified else None,
        keys=tuple(str(f["Key"]) for f in files.values()),
        manifest_error=error,
        stray_keys=tuple(str(f["Key"]) for name, f in files.items() if name not in known),
        modified=max(f["LastModified"] for f in files.values()).astimezone(UTC),
    )


@task(name="write manifest", **retry.NETWORK)
def write_manifest(store: BackupStore, manifest: Manifest) -> str:
    """Write the manifest beside the dump: from now on the backup is complete."""
    key = backup_keys(store, manifest.database, manifest.backup_id)["manifest"]
    if folder_of(manifest.dump_key) != folder_of(key):
        raise ConfigurationError(
            f"the dump {manifest.dump_key} is not beside its manifest {key}",
            hint="a manifest names its dump relative to itself: write both in one folder",
        )
    body = json.dumps(manifest_to_dict(manifest), indent=2).encode()
    with aws_errors(f"write manifest {key}"):
        store.s3_client().put_object(
            Bucket=store.bucket, Key=key, Body=body, ContentType="application/json"
        )
    return key


@task(name="mark backup verified", **retry.NETWORK)
def mark_verified(store: BackupStore, record: BackupRecord, summary: dict[str, Any]) -> str:
    """Record that a restore of this backup was verified (retention keeps the newest)."""
    key = backup_keys(store, record.database, record.backup_id)["verified"]
    body = json.dumps({"verified_at": datetime.now(UTC).isoformat(), **summary}, default=str)
    with aws_errors(f"write {key}"):
        store.s3_client().put_object(
            Bucket=store.bucket, Key=key, Body=body.encode(), ContentType="application/json"
        )
    return key


@task(name="delete expired backups", **retry.NETWORK)
def delete_backups(store: BackupStore, plan: RetentionPlan) -> list[str]:
    """Delete every object of the backups the retention plan drops; the keys deleted."""
    keys = plan.delete_keys()
    client = store.s3_client()
    for start in range(0, len(keys), 1000):
        batch = keys[start : start + 1000]
        with aws_errors(f"delete {len(batch)} expired backup objects"):
            resp = client.delete_objects(
                Bucket=store.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
        if resp.get("Errors"):
            first = resp["Errors"][0]
            raise NotFoundError(f"could not delete {first.get('Key')}: {first.get('Code')}")
    return keys


@task(name="find pending uploads", **retry.NETWORK)
def find_pending_uploads(store: BackupStore, database: str) -> list[PendingUpload]:
    """Multipart uploads under the database's folder that were never completed or aborted."""
    client = store.s3_client()
    prefix = database_prefix(store, database)
    found: list[PendingUpload] = []
    with aws_errors("list multipart uploads"):
        pages = list(
            client.get_paginator("list_multipart_uploads").paginate(
                Bucket=store.bucket, Prefix=prefix
            )
        )
    for up in (u for page in pages for u in page.get("Uploads", [])):
        key = str(up["Key"])
        initiated = up["Initiated"].astimezone(UTC)
        backup_id, _, name = key[len(prefix) :].partition("/")
        # The backup id in the key is when its run started. Take the later of the two:
        # some S3 implementations (moto) report a fixed Initiated date, which would make
        # a concurrent run's upload look stale.
        started = parse_backup_id(backup_id)
        if started is not None:
            initiated = max(initiated, started)
        found.append(
            PendingUpload(
                key=key,
                upload_id=str(up["UploadId"]),
                initiated=initiated,
                ours=started is not None and name == DUMP,
            )
        )
    return found


@task(name="abort stale uploads", **retry.NETWORK)
def abort_uploads(store: BackupStore, uploads: list[PendingUpload]) -> int:
    """Abort uploads left by killed runs (their parts are billed and useless); how many.

    One that is gone already (completed or aborted since it was listed) is skipped.
    """
    client = store.s3_client()
    aborted = 0
    for up in uploads:
        try:
            with aws_errors(f"abort stale upload of {up.key}"):
                client.abort_multipart_upload(
                    Bucket=store.bucket, Key=up.key, UploadId=up.upload_id
                )
        except NotFoundError:
            get_run_logger().info("upload of %s ended before it was aborted", up.key)
            continue
        aborted += 1
    return aborted


def _when(record: BackupRecord) -> str:
    seen = record.seen_at
    return seen.strftime("%Y-%m-%d %H:%M:%S UTC") if seen else "?"


def _cell(text: str) -> str:
    """Text safe in a markdown table cell (reasons quote manifests we could not read)."""
    return " ".join(text.split()).replace("|", "\\|")


def _status(record: BackupRecord) -> str:
    verdict = assess(record)
    if record.complete:
        status = "yes" if record.size_matches else "SIZE MISMATCH"
        return f"{status} (QUARANTINED: {verdict.reason})" if verdict.quarantined else status
    if verdict.quarantined:
        return f"NO: QUARANTINED, {verdict.state}: {verdict.reason}"
    return f"NO ({verdict.reason})"


def catalog_rows(records: list[BackupRecord]) -> list[dict[str, Any]]:
    """One row per backup for a table artifact, newest first."""
    rows = []
    for r in sorted(records, key=lambda r: r.backup_id, reverse=True):
        rows.append(
            {
                "backup": r.backup_id,
                "snapshot": _when(r),
                "complete": _status(r),
                "size_mib": round((r.dump_size or 0) / 2**20, 2),
                "sha256": r.manifest.sha256[:16] + "…" if r.manifest else "",
                "verified": r.verified_at.strftime("%Y-%m-%d %H:%M") if r.verified_at else "",
            }
        )
    return rows


def publish_catalog(records: list[BackupRecord], database: str) -> None:
    """The catalog as a table artifact (key ``backup-catalog``)."""
    create_table_artifact(
        key="backup-catalog",
        table=catalog_rows(records) or [{"backup": "(none)"}],
        description=f"Backups of {database}",
    )


def publish_plan(plan: RetentionPlan, dry_run: bool, uploads: UploadSweep | None = None) -> str:
    """The retention plan as markdown, shown before anything is deleted or aborted."""
    verb = "would delete (dry run)" if dry_run else "deletes"
    lines = [
        f"# Retention plan ({plan.keep_days} days, at least {plan.min_count} backups)",
        "",
        f"Evaluated at {plan.now:%Y-%m-%d %H:%M:%S} UTC: keeps {len(plan.keep)}, {verb} "
        f"{len(plan.delete)}, quarantines {len(plan.quarantine)} (never deleted: unreadable "
        "or foreign, for a person to inspect).",
        "",
        "| backup | snapshot | decision | rule |",
        "|---|---|---|---|",
    ]
    for decision, items in (
        ("keep", plan.keep),
        ("delete", plan.delete),
        ("quarantine", plan.quarantine),
    ):
        for item in items:
            record = item.record
            lines.append(
                f"| {record.backup_id} | {_when(record)} | {decision} | {_cell(item.reason)} |"
            )
    if uploads is not None and (uploads.abort or uploads.keep):
        abort = "would abort (dry run)" if dry_run else "abort"
        lines += ["", "| pending upload | initiated | decision | rule |", "|---|---|---|---|"]
        for up in uploads.abort:
            lines.append(
                f"| {up.key} | {up.initiated:%Y-%m-%d %H:%M:%S} UTC | {abort} | abandoned |"
            )
        for up, why in uploads.keep:
            lines.append(
                f"| {up.key} | {up.initiated:%Y-%m-%d %H:%M:%S} UTC | keep | {_cell(why)} |"
            )
    text = "\n".join(lines) + "\n"
    create_markdown_artifact(markdown=text, key="backup-retention", description="Retention plan")
    return text
