"""Restore drill runbook (weekly): prove the newest backup restores and verifies.

Restores the newest complete backup into a scratch database, verifies it against its
manifest, drops it, and records RTO (time to a verified restore) and RPO (age of the
backup) in the operation log. Notifies when the drill fails or the backup is too old.
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
from procedures.restore import restore_and_verify
from tasks.catalog import list_backups
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
        )
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
        }
