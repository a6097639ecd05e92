"""Backup runbook: dump the database to S3, write its manifest, apply retention.

Daily at 02:00 UTC, before every migration (as a subflow), and from the UI.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.backups import Manifest, backup_id_for
from decisions.parts import choose_part_size, estimate_dump_bytes
from decisions.retention import plan_retention, sweep_uploads
from opsflows.errors import ConfigurationError
from opsflows.settings import get_settings
from procedures.operation import (
    APP_DB,
    BACKUPS,
    ROUTING,
    load_block,
    operation_log,
    page_if_hung,
    try_load_ops_db,
    try_load_routing,
)
from procedures.phase_report import publish_phases
from procedures.upload_lease import live_writers, upload_lease
from tasks.catalog import (
    abort_uploads,
    backup_keys,
    delete_backups,
    find_pending_uploads,
    list_backups,
    publish_catalog,
    publish_plan,
    write_manifest,
)
from tasks.dump import dump_to_s3, parse_compression
from tasks.phase_clock import PhaseClock
from tasks.postgres import check_database
from tasks.together import results, start_together, together


def _check_store(store: BackupStore) -> None:
    if store.retention_days < 1 or store.min_backups < 1:
        raise ConfigurationError(
            f"backup store retention ({store.retention_days} days, min {store.min_backups}) "
            "would delete every backup",
            hint="set retention_days and min_backups to at least 1 in the BackupStore block",
        )


@flow(name="backup-database", timeout_seconds=get_settings().backup_timeout_s)
def backup_database(
    database: str = APP_DB,
    store: str = BACKUPS,
    reason: str = "scheduled daily backup",
    dry_run_retention: bool = False,
    compression: str = "zstd:1",
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Back up a PostgreSQL database to S3 and apply the retention policy.

    ``pg_dump -Fc`` streams into an S3 multipart upload (no temporary file, flat memory)
    with its SHA-256; the data fingerprint (tables, row counts, schema hash) is taken in the
    same snapshot (after the stream, while S3 assembles the upload; beside the dump for a
    database above ``OPSFLOWS_FINGERPRINT_BESIDE_BYTES``). The manifest is written last: only
    then is the backup complete. Then
    retention keeps 30 days (the store's setting), never fewer than the minimum count and
    never the newest verified backup; the plan is shown as an artifact before deleting.
    Backups it cannot read, or that are not ours, are quarantined: reported, never deleted
    (``decisions/retention.py``). A pending upload is aborted only when no backup of the
    database holds an upload lease and it is older than 6 h (``procedures/upload_lease.py``).

    A dump that stops moving for ``OPSFLOWS_DUMP_STALL_S`` fails with ``Stalled`` (tools
    killed, upload aborted, no manifest), and the run as a whole is bounded by
    ``OPSFLOWS_BACKUP_TIMEOUT_S``, so a hung run never holds the schedule's queue; either
    pages P2 through ``routing``.

    Args:
        database: PostgresTarget block of the database to back up.
        store: BackupStore block of the bucket (retention settings live there).
        reason: why this backup is taken (operation log).
        dry_run_retention: only show the retention plan, delete nothing.
        compression: "zstd:N" (default zstd:1), "gzip:N" or "none".
        routing: NotificationRouting block; a run that hung or timed out pages P2.

    Returns:
        backup id, object key, size, SHA-256, tables, and what retention deleted.
    """
    clock = PhaseClock()
    # The four blocks load at once (four round trips to the Prefect API); a missing target
    # or store is raised inside the operation log below, as before.
    loading = start_together(
        try_load_ops_db,
        lambda: try_load_routing(routing),
        lambda: load_block(PostgresTarget, database),
        lambda: load_block(BackupStore, store),
    )
    ops_db, routes = loading[0].result(), loading[1].result()
    with (
        operation_log("database backup", reason, ops_db, routes) as rec,
        page_if_hung(rec, f"backup of {database}"),
    ):
        began = clock.since()
        rec.details["database"] = database  # the backup alerts are per database, even failed
        parse_compression(compression)
        target, backups = loading[2].result(), loading[3].result()
        _check_store(backups)
        # Read only, at once: the server's state and the bucket's backups. Meanwhile the run
        # takes its upload lease (held until the upload is completed or aborted, so no other
        # run's retention pass aborts it; a failed check gives it back).
        checking = start_together(
            lambda: check_database(target), lambda: list_backups(backups, target.database)
        )
        with upload_lease(target.database):
            server, catalog = results(checking)
            history = [
                (r.manifest.size_bytes, r.manifest.database_bytes) for r in catalog if r.manifest
            ]
            expected = estimate_dump_bytes(server.size_bytes, history)
            backup_id = backup_id_for(datetime.now(UTC))
            keys = backup_keys(backups, target.database, backup_id)
            clock.span("checks, catalog and lease", began)
            dumped = dump_to_s3(
                target,
                backups,
                keys["dump"],
                part_size=choose_part_size(expected),
                compression=compression,
                expected_bytes=expected,
                database_bytes=server.size_bytes,
            )
        clock.join(dumped.phases, dumped.origin)
        began = clock.since()
        manifest = Manifest(
            backup_id=backup_id,
            database=target.database,
            server_version=dumped.snapshot.server_version,
            started_at=dumped.started_at,
            finished_at=dumped.finished_at,
            snapshot_at=dumped.snapshot.taken_at,
            dump_key=dumped.upload.key,
            size_bytes=dumped.upload.size_bytes,
            sha256=dumped.upload.sha256,
            parts=dumped.upload.parts,
            compression=dumped.compression,
            fingerprint=dumped.fingerprint,
            reason=reason,
            database_bytes=server.size_bytes,
        )
        write_manifest(backups, manifest)
        clock.span("manifest", began)
        rec.impact = f"backup {backup_id} of {target.database} written to s3://{backups.bucket}"
        began = clock.since()

        # The backups and the pending uploads are listed at once (two reads of the bucket).
        catalog, pending = together(
            lambda: list_backups(backups, target.database),
            lambda: find_pending_uploads(backups, target.database),
        )
        now = datetime.now(UTC)
        plan = plan_retention(
            catalog, now, keep_days=backups.retention_days, min_count=backups.min_backups
        )
        # Listed first, then the lease count: an upload listed while its run was writing
        # is still leased when counted (or finished, and then nothing is left to abort).
        # The lease count is read only when there is an upload to judge (one API call less
        # on every ordinary run: the run's own upload is complete by now).
        writers = live_writers(target.database) if pending else 0
        sweep = sweep_uploads(pending, now, writers=writers)
        publish_plan(plan, dry_run_retention, sweep)
        deleted: list[str] = []
        if not dry_run_retention:
            if plan.delete:
                deleted = delete_backups(backups, plan)
            if sweep.abort:
                abort_uploads(backups, list(sweep.abort))
        quarantined = {item.record.backup_id: item.reason for item in plan.quarantine}
        for other, why in quarantined.items():
            rec.issues.append(f"backup {other} quarantined (never deleted): {why}")
        if quarantined:
            rec.follow_up.append(
                f"inspect the quarantined backups under s3://{backups.bucket}/"
                f"{backups.key(target.database)}/ and repair or remove them by hand"
            )
        expired = [item.record.backup_id for item in plan.delete]
        remaining = [r for r in catalog if dry_run_retention or r.backup_id not in expired]
        clock.span("retention", began)
        breakdown = clock.breakdown()
        # The catalog and the phases are two artifacts that do not depend on each other.
        title = f"Backup {backup_id}: where the time went"
        together(
            lambda: publish_catalog(remaining, target.database),
            lambda: publish_phases(breakdown, "backup-phases", title),
        )
        rec.details = {
            "database": database,
            "backup_id": backup_id,
            "key": dumped.upload.key,
            "size_mib": round(dumped.upload.size_bytes / 2**20, 2),
            "sha256": dumped.upload.sha256,
            "tables": len(dumped.fingerprint.tables),
            "retention": f"keep {len(plan.keep)}, delete {len(plan.delete)}, "
            f"quarantine {len(plan.quarantine)}" + (" (dry run)" if dry_run_retention else ""),
            "quarantined": quarantined,
            "uploads_kept": {up.key: why for up, why in sweep.keep},
            "phases": breakdown.seconds(),
        }
        return {
            "backup_id": backup_id,
            "database": target.database,
            "key": dumped.upload.key,
            "manifest_key": keys["manifest"],
            "size_bytes": dumped.upload.size_bytes,
            "sha256": dumped.upload.sha256,
            "parts": dumped.upload.parts,
            "compression": dumped.compression,
            "snapshot_at": dumped.snapshot.taken_at.isoformat(),
            "tables": {t.name: t.rows for t in dumped.fingerprint.tables},
            "schema_hash": dumped.fingerprint.schema_hash,
            "retention_expired": expired,
            "deleted_keys": deleted,
            "quarantined": quarantined,
            "stale_uploads": [u.key for u in sweep.abort],
            "uploads_kept": {up.key: why for up, why in sweep.keep},
            "dry_run_retention": dry_run_retention,
            "phases": breakdown.seconds(),
            "phases_total_s": round(breakdown.total_s, 3),
        }
