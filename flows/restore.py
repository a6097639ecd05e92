"""Restore runbook: restore a backup from a timestamp into a scratch database, verify it,
and only with an explicit approval swap it in for the live database.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.approvals import (
    ReplaceFacts,
    replace_description,
)
from decisions.backups import choose_backup, restore_point
from decisions.phases import Breakdown
from opsflows.errors import ConfigurationError, OpsError
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
from procedures.phase_report import publish_phases
from procedures.replace_live import await_replace_approval, keep_name
from procedures.restore import VerifiedRestore, restore_and_verify
from tasks.catalog import list_backups
from tasks.phase_clock import PhaseClock
from tasks.scratch import (
    database_sizes,
)
from tasks.swap import recover_swap, swap_in

_MAX_IDENT = 63


def _description(
    target: PostgresTarget,
    admin: PostgresTarget,
    done: VerifiedRestore,
    rto_s: float,
    keep_as: str,
    timeout_s: int,
) -> str:
    """The markdown above the replace-live form (sizes measured now, on the server)."""
    manifest = done.record.manifest
    assert manifest is not None
    try:
        sizes = database_sizes(admin, [target.database, done.scratch])
    except OpsError as exc:  # the sizes inform the approver; their absence blocks nothing
        get_run_logger().warning("could not measure the database sizes: %s", exc.message)
        sizes = {}
    summary = done.report.summary()
    return replace_description(
        ReplaceFacts(
            database=target.database,
            backup_id=done.record.backup_id,
            snapshot_at=manifest.snapshot_at,
            now=datetime.now(UTC),
            backup_bytes=manifest.size_bytes,
            scratch=done.scratch,
            keep_as=keep_as,
            checks_passed=int(summary["evaluated"]) - len(summary["failed"]),
            checks_failed=tuple(summary["failed"]),
            live_bytes=sizes.get(target.database),
            scratch_bytes=sizes.get(done.scratch),
            rto_s=rto_s,
            timeout_s=timeout_s,
            tables=tuple((t.name, t.rows) for t in manifest.fingerprint.tables),
        )
    )


@flow(name="restore-database", timeout_seconds=get_settings().restore_timeout_s)
def restore_database(
    at: str | None = None,
    database: str = APP_DB,
    admin_database: str = APP_DB_ADMIN,
    store: str = BACKUPS,
    replace_live: bool = False,
    approval_timeout_s: int = 3600,
    approval_poll_s: int = 10,
    expectations: str | None = None,
    reason: str = "restore requested",
    routing: str = ROUTING,
    row_samples: bool = False,
) -> dict[str, Any]:
    """Restore the newest complete backup at or before ``at`` and verify it.

    The backup is streamed into a new scratch database with its SHA-256 checked on the way,
    then verified with Great Expectations against the manifest fingerprint (tables, row
    counts, schema hash) and the user's expectation suites (one per table, read and checked
    before anything is restored). Only then, and only when asked to replace the live
    database, the run pauses for an approval (approve, approver, reason) and swaps the
    databases, keeping the old one. Reports the RTO. A swap that a killed run left half done
    is undone first (finished if the restore already holds the live name), and scratch
    databases that interrupted restores of the same database left unverified are dropped;
    both are listed in the result and the operation log.

    Args:
        at: restore point, e.g. "2025-11-19 10:00:00" (UTC unless a zone is given);
            empty for the newest backup; a point in the future is refused.
        database: PostgresTarget block of the live database (names the backups).
        admin_database: PostgresTarget block of a superuser on the same server.
        store: BackupStore block holding the backups.
        replace_live: after verification, ask for approval and replace the live database.
        approval_timeout_s: how long to wait for the approval before giving up.
        approval_poll_s: how often the paused run checks for the approval.
        expectations: folder (under the store prefix) of the user's GX 1.x suites, one
            <table>.json (or <schema>.<table>.json) per table; default
            "expectations/<database>/" when it holds any. Only column and table
            expectations that take no SQL are accepted (README "Expectation suites"); they
            run as the read-only role opsflows_verify, never as the admin.
        reason: why the restore is done (operation log).
        routing: NotificationRouting block; a restore that stalls (no byte moving for
            ``OPSFLOWS_RESTORE_STALL_S``) or outlives the run's timeout
            (``OPSFLOWS_RESTORE_TIMEOUT_S``, the approval wait included) pages P2.
        row_samples: show sample values of the rows a user expectation found unexpected
            in the artifacts and errors (default off: counts and percentages only).
    """
    started = time.monotonic()
    ops_db, routes = try_load_ops_db(), try_load_routing(routing)
    with (
        operation_log("database restore", reason, ops_db, routes) as rec,
        page_if_hung(rec, f"restore of {database}"),
    ):
        when = restore_point(at, datetime.now(UTC))
        if approval_timeout_s < 1 or approval_poll_s < 1:
            raise ConfigurationError("approval timeout and poll interval must be at least 1 s")
        limit = run_timeout_s()
        if replace_live and limit and approval_timeout_s >= limit:
            raise ConfigurationError(
                f"approval_timeout_s ({approval_timeout_s}) must be shorter than the run's "
                f"timeout ({limit:g} s): the run waits for the approval within it",
                hint="lower approval_timeout_s or raise OPSFLOWS_RESTORE_TIMEOUT_S",
            )
        target = load_block(PostgresTarget, database)
        admin = load_block(PostgresTarget, admin_database)
        backups = load_block(BackupStore, store)
        # A swap a killed run left half done is undone first, so the live database serves.
        recovered = recover_swap(admin, target.database)
        if recovered:
            rec.details["recovered_swaps"] = recovered
            rec.issues.extend(recovered)
            rec.impact = "a half-done swap of an earlier run was recovered: " + "; ".join(recovered)
        record = choose_backup(list_backups(backups, target.database), when)
        assert record.manifest is not None
        rec.details.update(
            backup_id=record.backup_id,
            requested_at=when.isoformat() if when else "newest",
            snapshot_at=record.manifest.snapshot_at.isoformat(),
        )
        done = restore_and_verify(target, admin, backups, record, expectations, row_samples)
        rto_s = round(time.monotonic() - started, 3)
        clock = PhaseClock(started)
        clock.add("checks and catalog", done.origin - started, 0.0)
        clock.join(done.phases, done.origin)
        breakdown = Breakdown.of(clock.phases, rto_s)
        publish_phases(
            breakdown, "restore-phases", f"Restore of {record.backup_id}: where the time went"
        )
        rec.details.update(scratch=done.scratch, rto_verified_s=rto_s, phases=breakdown.seconds())
        if done.dropped_leftovers:
            rec.details["dropped_leftovers"] = list(done.dropped_leftovers)
            rec.issues.append(
                "dropped scratch database(s) abandoned by an interrupted restore: "
                + ", ".join(done.dropped_leftovers)
            )
        result: dict[str, Any] = {
            "backup_id": record.backup_id,
            "snapshot_at": record.manifest.snapshot_at.isoformat(),
            "scratch_database": done.scratch,
            "dropped_leftovers": list(done.dropped_leftovers),
            "recovered_swaps": recovered,
            "verification": done.report.summary(),
            "rto_s": rto_s,
            "phases": breakdown.seconds(),
            "replaced_live": False,
        }
        if not replace_live:
            rec.impact = f"backup restored into {done.scratch}; live database untouched"
            rec.follow_up.append(f"drop database {done.scratch} when no longer needed")
            return result
        keep_as = keep_name(target.database)
        description = _description(target, admin, done, rto_s, keep_as, approval_timeout_s)
        create_markdown_artifact(
            markdown=description,
            key="restore-approval",
            description="What replacing the live database will do",
        )
        await_replace_approval(
            admin, done.scratch, description, approval_timeout_s, approval_poll_s
        )
        rec.changing = f"the live database {target.database}"
        kept = swap_in(admin, target.database, done.scratch, keep_as)
        total = round(time.monotonic() - started, 3)
        rec.impact = f"{target.database} replaced by backup {record.backup_id}; old kept as {kept}"
        rec.follow_up.append(f"drop database {kept} once the restored data is confirmed")
        rec.details.update(rto_replaced_s=total, previous_database=kept)
        result.update(replaced_live=True, previous_database=kept, rto_replaced_s=total)
        result["scratch_database"] = None
        return result
