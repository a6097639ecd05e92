"""Restore drill runbook (weekly): prove the newest backup restores and verifies.

Restores the newest complete backup into a scratch database, verifies it against its
manifest, drops it, and records RTO (time to a verified restore) and RPO (age of the
backup) in the operation log. Notifies when the drill fails or the backup is too old.

Then the point-in-time drill (``pitr``): a scratch instance recovers from the newest base
backup through every archived WAL file, the copy is verified and dropped; its RTO and its
achieved RPO (now minus the last transaction the archive replayed) are recorded beside the
dump's. No base backup yet is an issue on the entry, not a failure.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.backups import choose_backup, judge_drill
from decisions.wal import plan_latest
from opsflows.errors import ConfigurationError
from opsflows.settings import get_settings
from opsflows.thresholds import THRESHOLDS
from procedures.operation import (
    APP_DB,
    APP_DB_ADMIN,
    BACKUPS,
    ROUTING,
    hung,
    load_block,
    operation_log,
    safe_notify,
    try_load_ops_db,
    try_load_routing,
)
from procedures.pitr_restore import recover_and_verify
from procedures.restore import restore_and_verify
from tasks.catalog import list_backups
from tasks.pitr_store import list_archived, list_base_backups
from tasks.restore import drop_scratch


@flow(name="restore-drill", timeout_seconds=get_settings().drill_timeout_s)
def restore_drill(
    database: str = APP_DB,
    admin_database: str = APP_DB_ADMIN,
    store: str = BACKUPS,
    max_backup_age_h: float = THRESHOLDS.backup_max_age_h,
    routing: str = ROUTING,
    expectations: str | None = None,
    row_samples: bool = False,
    pitr: bool = True,
    cluster: str = "main",
) -> dict[str, Any]:
    """Restore the newest backup into scratch, verify it, drop it; record RTO and RPO.

    Args:
        database: PostgresTarget block of the live database whose backups are drilled.
        admin_database: PostgresTarget block of a superuser on the same server.
        store: BackupStore block holding the backups.
        max_backup_age_h: notify when the newest backup is older than this (hours).
        routing: NotificationRouting block; failures go out as P2 (a stalled restore and
            a run past ``OPSFLOWS_DRILL_TIMEOUT_S`` too), a stale backup as P3.
        expectations: folder of the user's suites under the store prefix (default
            "expectations/<database>/"); column and table expectations that take no
            SQL, run as the read-only role opsflows_verify.
        row_samples: show sample values of the rows a user expectation found unexpected
            in the artifacts and errors (default off: counts and percentages only).
        pitr: also drill point-in-time recovery (newest base backup + every archived WAL
            file); its RTO and achieved RPO are recorded as ``pitr_rto_s``/``pitr_rpo_s``.
        cluster: the cluster's name in the store's ``pitr/`` folder.
    """
    started = time.monotonic()
    ops_db, routes = try_load_ops_db(), try_load_routing(routing)
    with operation_log("restore drill", "weekly restore drill", ops_db, routes) as rec:
        if max_backup_age_h <= 0:
            raise ConfigurationError("max_backup_age_h must be positive")
        target = load_block(PostgresTarget, database)
        try:
            admin = load_block(PostgresTarget, admin_database)
            backups = load_block(BackupStore, store)
            record = choose_backup(list_backups(backups, target.database), None)
            assert record.manifest is not None
            rec.details["backup_id"] = record.backup_id
            done = restore_and_verify(target, admin, backups, record, expectations, row_samples)
            rto_s = time.monotonic() - started
            drop_scratch(admin, done.scratch)
            point_in_time = (
                _pitr_drill(target, admin, backups, cluster, expectations) if pitr else {}
            )
        except BaseException as exc:
            if not isinstance(exc, Exception) and not hung(exc):
                raise
            why = str(exc) if isinstance(exc, Exception) else "it ran out of time (timeout)"
            safe_notify(
                "P2",
                f"restore drill of {target.database} failed",
                f"The weekly restore drill failed: {why}. Backups may not be restorable; "
                "investigate before the next incident needs them.",
            )
            rec.follow_up.append("investigate the failed drill and run it again")
            raise
        verdict = judge_drill(
            rto_s, record.manifest.snapshot_at, datetime.now(UTC), timedelta(hours=max_backup_age_h)
        )
        rec.details.update(
            rto_s=verdict.rto_s,
            rpo_s=verdict.rpo_s,
            backup_snapshot_at=record.manifest.snapshot_at.isoformat(),
            expectations_passed=len(done.report.checks),
            **point_in_time,
        )
        if pitr and "pitr_rto_s" not in point_in_time:
            rec.issues.append(str(point_in_time.get("pitr_skipped", "")))
        rec.impact = "none (scratch database restored, verified and dropped)"
        if verdict.backup_too_old:
            rec.issues.extend(verdict.messages)
            rec.follow_up.append("check the daily backup schedule and its last runs")
            safe_notify(
                "P3",
                f"newest backup of {target.database} is too old",
                f"{verdict.messages[0]}. The drill restored it fine (RTO {verdict.rto_s:.0f} s), "
                "but a restore today would lose that much data.",
            )
        return {
            "backup_id": record.backup_id,
            "rto_s": verdict.rto_s,
            "rpo_s": verdict.rpo_s,
            "backup_too_old": verdict.backup_too_old,
            "verification": done.report.summary(),
            "scratch_dropped": done.scratch,
            **point_in_time,
        }


def _pitr_drill(
    target: PostgresTarget,
    admin: PostgresTarget,
    backups: BackupStore,
    cluster: str,
    expectations: str | None,
) -> dict[str, Any]:
    """Recover everything archived into scratch, verify, drop; RTO and achieved RPO."""
    started = time.monotonic()
    try:
        plan = plan_latest(list_base_backups(backups, cluster), list_archived(backups, cluster))
    except ConfigurationError as exc:
        return {"pitr_skipped": f"point-in-time recovery not drilled: {exc.message}"}
    done = recover_and_verify(target, admin, backups, cluster, plan, "pitrdrill", expectations)
    rto_s = round(time.monotonic() - started, 3)
    drop_scratch(admin, done.scratch)
    last = done.instance.last_replayed
    replayed_at = datetime.fromisoformat(last) if last else plan.base.finished_at
    return {
        "pitr_base_backup": plan.base.backup_id,
        "pitr_rto_s": rto_s,
        "pitr_rpo_s": round((datetime.now(UTC) - replayed_at).total_seconds(), 3),
        "pitr_last_replayed": replayed_at.isoformat(),
        "pitr_wal_files": done.instance.wal_fetched,
    }
