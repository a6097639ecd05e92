"""Runbook "Base backup": the physical backup point-in-time recovery starts from.

Daily (after the logical dump), and from the UI. ``pg_basebackup`` of the whole cluster is
streamed to ``pitr/<cluster>/base/<id>/`` in the backup store; the base backup is complete
once every WAL file of its range is found archived and its manifest is written. Retention
then keeps the store's days of base backups (never fewer than its minimum) and every WAL file
the oldest kept one needs, and deletes older WAL (``decisions/wal.py``).

Why both this and the logical dump: the dump restores one database anywhere (another major
version, another server) and is what the weekly drill verifies; the base backup plus the
WAL archive restores to any second since (RPO ≤ ``archive_timeout``), which a daily dump
cannot (RPO ≤ 24 h).
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.backups import backup_id_for
from decisions.parts import choose_part_size
from decisions.wal import (
    BaseBackup,
    archiving_refusal,
    missing_segments,
    plan_wal_retention,
)
from opsflows.errors import ConfigurationError, PermanentError
from opsflows.settings import get_settings
from procedures.operation import (
    APP_DB_ADMIN,
    BACKUPS,
    ROUTING,
    load_block,
    operation_log,
    page_if_hung,
    try_load_ops_db,
    try_load_routing,
)
from tasks.base_backup import archiving_status, base_backup_to_s3
from tasks.pitr_store import (
    base_prefix,
    delete_pitr_objects,
    find_backup_history,
    list_archived,
    list_base_backups,
    write_base_manifest,
)

OPERATION = "base backup"


@flow(name="base-backup", timeout_seconds=get_settings().backup_timeout_s)
def base_backup(
    admin_database: str = APP_DB_ADMIN,
    store: str = BACKUPS,
    cluster: str = "main",
    reason: str = "scheduled daily base backup",
    dry_run_retention: bool = False,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Take a base backup of the cluster for point-in-time recovery and apply retention.

    Args:
        admin_database: PostgresTarget block of a superuser (or REPLICATION role) on the
            server; the whole cluster is backed up.
        store: BackupStore block of the bucket (retention settings live there).
        cluster: the cluster's name in the store (``pitr/<cluster>/``), as its
            archive_command writes it.
        reason: why this base backup is taken (operation log).
        dry_run_retention: only show what retention would delete.
        routing: NotificationRouting block; a run that hung or timed out pages P2.
    """
    ops_db, routes = try_load_ops_db(), try_load_routing(routing)
    with (
        operation_log(OPERATION, reason, ops_db, routes) as rec,
        page_if_hung(rec, f"base backup of {cluster}"),
    ):
        if not cluster.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError(f"cluster must be a plain name, got {cluster!r}")
        admin = load_block(PostgresTarget, admin_database)
        backups = load_block(BackupStore, store)
        rec.details["cluster"] = cluster
        status = archiving_status(admin)
        refused = archiving_refusal(
            status["archive_mode"],
            status["has_command"],
            status["last_archived_time"],
            status["last_failed_time"],
            status["last_failed_wal"],
        )
        if refused is not None:
            raise refused
        backup_id = backup_id_for(datetime.now(UTC))
        key = f"{base_prefix(backups, cluster)}{backup_id}/base.tar.zst"
        size = int(status["cluster_bytes"] or 0)
        label = f"opsflows base {backup_id}"
        done = base_backup_to_s3(admin, backups, key, label, part_size=choose_part_size(size))
        history = find_backup_history(backups, cluster, label)
        start_wal, stop_wal = history.start_wal, history.stop_wal
        archived = list_archived(backups, cluster)
        wanted, missing = missing_segments(start_wal, [f.name for f in archived])
        if missing or stop_wal not in wanted:
            raise PermanentError(
                f"base backup {backup_id} is not usable: WAL "
                f"{', '.join(missing) or stop_wal} is not archived",
                hint="the manifest was not written (the base backup is incomplete); check "
                "WAL archiving (pg_stat_archiver), then run again",
            )
        base = BaseBackup(
            backup_id=backup_id,
            started_at=done.started_at,
            finished_at=done.finished_at,
            timeline=history.timeline,
            start_lsn=history.start_lsn,
            stop_lsn=history.stop_lsn,
            start_wal=start_wal,
            stop_wal=stop_wal,
            key=key,
            size_bytes=done.upload.size_bytes,
            sha256=done.upload.sha256,
            server_version=done.server_version,
        )
        write_base_manifest(backups, cluster, base)
        rec.impact = f"base backup {backup_id} of cluster {cluster} in s3://{backups.bucket}"

        plan = plan_wal_retention(
            list_base_backups(backups, cluster),
            list_archived(backups, cluster),
            datetime.now(UTC),
            keep_days=backups.retention_days,
            min_count=backups.min_backups,
        )
        create_table_artifact(
            key="base-backup-retention",
            table=[
                {"base backup": b, "action": "delete" if b in plan.delete_bases else "keep"}
                for b in (*plan.keep_bases, *plan.delete_bases)
            ]
            + [{"base backup": f"{len(plan.delete_wal)} WAL file(s)", "action": "delete"}],
            description=f"Retention of base backups and WAL ({backups.retention_days} days, "
            f"min {backups.min_backups}); oldest WAL kept: {plan.oldest_needed}"
            + (" (dry run: nothing deleted)" if dry_run_retention else ""),
        )
        deleted = 0
        if not dry_run_retention and (plan.delete_bases or plan.delete_wal):
            deleted = delete_pitr_objects(backups, cluster, plan.delete_bases, plan.delete_wal)
        rec.details.update(
            backup_id=backup_id,
            size_mib=round(done.upload.size_bytes / 2**20, 2),
            wal=f"{start_wal}..{stop_wal}",
            retention=f"keep {len(plan.keep_bases)}, delete {len(plan.delete_bases)} base "
            f"backup(s) and {len(plan.delete_wal)} WAL file(s)"
            + (" (dry run)" if dry_run_retention else ""),
        )
        return {
            **base.as_dict(),
            "started_at": base.started_at.isoformat(),
            "finished_at": base.finished_at.isoformat(),
            "retention": plan.as_dict(),
            "deleted_objects": deleted,
            "dry_run_retention": dry_run_retention,
        }
