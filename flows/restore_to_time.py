"""Runbook "Restore to a point in time": any second the WAL archive covers, not last night.

1. The moment ``at`` is checked against what the store holds (the oldest base backup's end
   to the newest archived WAL file) and the WAL from the chosen base backup on is checked for
   gaps, before anything is downloaded (``decisions/wal.py``).
2. A scratch PostgreSQL instance (own folder, Unix socket only, the unprivileged OS user) is
   unpacked from the newest base backup before ``at`` and recovers to it, each WAL file
   fetched from S3 and checked against its SHA-256 (``tasks/pitr_instance.py``).
3. The database is copied out of it into a scratch database on the live server, fingerprinted
   in the copy's snapshot, and verified with Great Expectations against that fingerprint and
   the user's suites, as a restored dump is.
4. Only when asked to, and only with the approval of two DBAs, it replaces the live database
   (the old one is kept). The RTO is reported.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.approvals import ReplaceFacts, replace_description
from decisions.backups import restore_point
from decisions.wal import plan_restore
from opsflows.errors import ConfigurationError
from opsflows.settings import get_settings
from procedures.operation import (
    APP_DB,
    APP_DB_ADMIN,
    BACKUPS,
    ROUTING,
    load_block,
    operation_log,
    page_if_hung,
    run_timeout_s,
    try_load_ops_db,
    try_load_routing,
)
from procedures.pitr_restore import recover_and_verify
from procedures.replace_live import await_replace_approval, keep_name
from tasks.pitr_store import list_archived, list_base_backups
from tasks.scratch import database_sizes
from tasks.swap import recover_swap, swap_in

OPERATION = "point-in-time restore"


def _label(at: datetime) -> str:
    return f"pitr{at.astimezone(UTC):%Y%m%dT%H%M%S}"


@flow(name="restore-to-time", timeout_seconds=get_settings().restore_timeout_s)
def restore_to_time(
    at: str,
    database: str = APP_DB,
    admin_database: str = APP_DB_ADMIN,
    store: str = BACKUPS,
    cluster: str = "main",
    replace_live: bool = False,
    approval_timeout_s: int = 3600,
    approval_poll_s: int = 10,
    expectations: str | None = None,
    reason: str = "point-in-time restore requested",
    routing: str = ROUTING,
    row_samples: bool = False,
) -> dict[str, Any]:
    """Restore the database as it was at ``at`` (to the second) and verify it.

    Args:
        at: the moment, e.g. "2026-12-02 14:03:27" (UTC unless a zone is given); every
            transaction committed at or before it is restored, none after.
        database: PostgresTarget block of the live database.
        admin_database: PostgresTarget block of a superuser on the same server.
        store: BackupStore block holding the base backups and the WAL archive.
        cluster: the cluster's name in the store (``pitr/<cluster>/``).
        replace_live: after verification, ask two DBAs and replace the live database.
        approval_timeout_s: how long to wait for the approval before giving up.
        approval_poll_s: how often the paused run checks for the approval.
        expectations: folder of the user's GX suites (as for restore-database).
        reason: why the restore is done (operation log).
        routing: NotificationRouting block; a hung run pages P2.
        row_samples: show sample values of unexpected rows in artifacts and errors.
    """
    started = time.monotonic()
    ops_db, routes = try_load_ops_db(), try_load_routing(routing)
    with (
        operation_log(OPERATION, reason, ops_db, routes) as rec,
        page_if_hung(rec, f"point-in-time restore of {database}"),
    ):
        now = datetime.now(UTC)
        when = restore_point(at, now)
        if when is None:
            raise ConfigurationError(
                "`at` is required: the moment to restore to",
                hint='e.g. "2026-12-02 14:03:27" (UTC unless a zone is given); for the newest '
                "backup use restore-database",
            )
        if approval_timeout_s < 1 or approval_poll_s < 1:
            raise ConfigurationError("approval timeout and poll interval must be at least 1 s")
        limit = run_timeout_s()
        if replace_live and limit and approval_timeout_s >= limit:
            raise ConfigurationError(
                f"approval_timeout_s ({approval_timeout_s}) must be shorter than the run's "
                f"timeout ({limit:g} s)",
                hint="lower approval_timeout_s or raise OPSFLOWS_RESTORE_TIMEOUT_S",
            )
        target = load_block(PostgresTarget, database)
        admin = load_block(PostgresTarget, admin_database)
        backups = load_block(BackupStore, store)
        plan = plan_restore(
            when, list_base_backups(backups, cluster), list_archived(backups, cluster)
        )
        rec.details.update(
            requested_at=when.isoformat(),
            base_backup=plan.base.backup_id,
            wal_files=len(plan.needed),
            newest_archived_at=plan.newest_archived_at.isoformat(),
        )
        recovered = recover_swap(admin, target.database)
        if recovered:
            rec.issues.extend(recovered)
        done = recover_and_verify(
            target, admin, backups, cluster, plan, _label(when), expectations, row_samples
        )
        instance, copied, report, scratch = done.instance, done.copied, done.report, done.scratch
        rec.details.update(
            scratch=scratch,
            recovery_s=instance.seconds,
            stopped_before=instance.stopped_at,
            last_replayed=instance.last_replayed,
            wal_fetched=instance.wal_fetched,
        )
        rto_s = round(time.monotonic() - started, 3)
        rec.details.update(rto_verified_s=rto_s)
        result: dict[str, Any] = {
            "at": when.isoformat(),
            "base_backup": plan.base.backup_id,
            "wal_files_fetched": instance.wal_fetched,
            "stopped_before": instance.stopped_at,
            "last_replayed": instance.last_replayed,
            "recovery_s": instance.seconds,
            "copy_s": copied.seconds,
            "scratch_database": scratch,
            "verification": report.summary(),
            "tables": {t.name: t.rows for t in copied.fingerprint.tables},
            "rto_s": rto_s,
            "replaced_live": False,
        }
        if not replace_live:
            rec.impact = f"{target.database} as of {when:%Y-%m-%d %H:%M:%S} UTC restored into "
            rec.impact += f"{scratch}; live database untouched"
            rec.follow_up.append(f"drop database {scratch} when no longer needed")
            return result
        keep_as = keep_name(target.database)
        sizes = database_sizes(admin, [target.database, scratch])
        summary = report.summary()
        description = replace_description(
            ReplaceFacts(
                database=target.database,
                backup_id=f"as of {when:%Y-%m-%d %H:%M:%S} UTC (base {plan.base.backup_id})",
                snapshot_at=when,
                now=datetime.now(UTC),
                backup_bytes=plan.base.size_bytes,
                scratch=scratch,
                keep_as=keep_as,
                checks_passed=int(summary["evaluated"]) - len(summary["failed"]),
                checks_failed=tuple(summary["failed"]),
                live_bytes=sizes.get(target.database),
                scratch_bytes=sizes.get(scratch),
                rto_s=rto_s,
                timeout_s=approval_timeout_s,
                tables=tuple((t.name, t.rows) for t in copied.fingerprint.tables),
            )
        )
        create_markdown_artifact(
            markdown=description,
            key="restore-approval",
            description="What replacing the live database will do",
        )
        await_replace_approval(admin, scratch, description, approval_timeout_s, approval_poll_s)
        rec.changing = f"the live database {target.database}"
        kept = swap_in(admin, target.database, scratch, keep_as)
        total = round(time.monotonic() - started, 3)
        rec.impact = (
            f"{target.database} replaced by its state at {when.isoformat()}; old kept as {kept}"
        )
        rec.follow_up.append(f"drop database {kept} once the restored data is confirmed")
        rec.details.update(rto_replaced_s=total, previous_database=kept)
        result.update(
            replaced_live=True, previous_database=kept, rto_replaced_s=total, scratch_database=None
        )
        return result
