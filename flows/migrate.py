"""Runbook "Running a database migration": plan and lint, back up, apply safely, verify.

1. Plan: pending files (name order), the lock each statement takes, which files run outside
   a transaction, squawk's findings, and the expectation suites that will be validated.
   The plan is an artifact; ``dry_run`` stops here. Edited applied files, missing files and
   out-of-order files refuse the run; a squawk finding not marked reviewed
   (``-- squawk-ignore rule``) blocks it; a suite that is not valid JSON, not a GX 1.x
   suite, or uses an expectation type outside the allow-list (``decisions.suite_policy``:
   nothing that takes SQL) or an argument GX does not know is rejected. Nothing is
   written.
   A statement that runs outside a transaction and could not run again after a partial
   failure (``CREATE INDEX CONCURRENTLY`` without ``IF NOT EXISTS`` ...) is refused here.
2. Back up with the backup runbook (a subflow); ``skip_backup`` is recorded in the log.
3. Apply under the strict concurrency limits ``change-<environment>`` (shared with deploys:
   never under a deploy's bake) and ``change-db-<database>@<host>:<port>`` (two migrations
   of one database never overlap, whatever their ``environment``), taken together. The
   pending files are applied in units: consecutive transactional files in ONE transaction
   (all or none), each file that must run outside a transaction on its own; with
   ``lock_timeout`` and ``statement_timeout``, lock timeouts retried with backoff, recorded
   in ``schema_migrations``. A run that lost its slots (lease not renewed) stops before the
   next unit.
4. Verify: the ``-- verify:`` declarations of the applied files, and every Great
   Expectations suite kept with the migrations, validated against the migrated database
   (the ``migration-validation`` table artifact). Write the operation log.

Expectation suites: ``<migrations_dir>/expectations/<table>.json`` (or
``<schema>.<table>.json``; schema ``public`` by default) holds one GX 1.x suite, as
``ExpectationSuite.to_json_dict()`` writes it (``name``, ``expectations`` of
``{"type": ..., "kwargs": {...}}``), validated against that table after every run that
applied something. They describe the database as it must be after the newest migration.

A failed migration (SQL error, lock timeout retries spent) or a failed verification is
paged as P2 through the notification routing; the operation log names the failed file or
the failed checks and the pre-migration backup to fall back on. A failed migration's report
(:mod:`decisions.migration_failure`: files applied, files not applied, a half-applied
statement such as an INVALID index, the SQL that finishes or reverts it) is in the operation
log, the page, the exception's hint and the ``migration-failure`` artifact.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

from prefect import flow
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run

from blocks.postgres import PostgresTarget
from decisions.expectation_suites import TableSuite, render_suites
from decisions.expectation_suites import failures as suite_failures
from decisions.migration_failure import FailureReport, render_failure
from decisions.migration_plan_render import render_plan
from decisions.migration_verify import final_expectations
from decisions.migrations import ApplyPolicy, Expectation, Plan
from opsflows.errors import (
    ConfigurationError,
    OpsError,
    VerificationFailed,
)
from procedures.backup import backup_database
from procedures.change_slot import change_slot, check_slots, require_slots
from procedures.migration_plan import compute_plan, load_migrations, refuse_if_blocked
from procedures.migration_report import IndexSnapshot, error_text, indexes_before, report_failure
from procedures.operation import (
    APP_DB,
    BACKUPS,
    current_run,
    load_block,
    operation_log,
    safe_notify,
    try_load_ops_db,
    try_load_routing,
)
from procedures.schema_approval import approve_schema_change, needs_approval
from tasks.gitref import folder_at_ref
from tasks.gx_validation import preload
from tasks.migrate import apply_batch
from tasks.migration_checks import check_suites, load_suites, validate_suites
from tasks.migration_schema import hash_schema, verify_schema

_BACKUP_FIELDS = ("backup_id", "key", "manifest_key", "sha256", "snapshot_at", "tables")
_ENVIRONMENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


def _backup(database: str, store: str, names: Sequence[str]) -> dict[str, Any]:
    result = backup_database(
        database=database, store=store, reason=f"pre-migration backup before {', '.join(names)}"
    )
    shown = [k for k in _BACKUP_FIELDS if k in result] or list(result)
    return {k: str(result[k])[:200] for k in shown}


@flow(name="migrate-database", log_prints=True)
def migrate_database(
    migrations_dir: str,
    database: str = APP_DB,
    environment: str = "production",
    dry_run: bool = False,
    skip_backup: bool = False,
    lock_timeout_s: float = 5,
    statement_timeout_s: float = 900,
    lock_retries: int = 4,
    backup_store: str = BACKUPS,
    concurrency_timeout_s: float = 600,
    reason: str = "apply pending schema migrations",
    git_ref: str | None = None,
    repository: str = ".",
    approval_timeout_s: int = 3600,
    approval_poll_s: int = 10,
) -> dict[str, Any]:
    """Lint, back up, and apply pending SQL migrations without stalling the application.

    After applying, verifies the files' ``-- verify:`` declarations and validates every
    Great Expectations 1.x suite in ``<migrations_dir>/expectations/<table>.json`` against
    its table (``migration-validation`` artifact). A failed migration or expectation fails
    the run and pages P2; a malformed suite is refused before the backup.

    Args:
        migrations_dir: Folder of ``*.sql`` migration files, applied in name order, and of
            the ``expectations/`` suites.
        database: PostgresTarget block of the database to migrate.
        environment: Environment whose change limit (``change-<environment>``) is taken,
            with the database's own (``change-db-<database>@<host>:<port>``).
        dry_run: Stop after the plan (published as the ``migration-plan`` artifact).
        skip_backup: Do not take the pre-migration backup (recorded in the operation log).
        lock_timeout_s: Longest wait for a table lock before giving up and retrying.
        statement_timeout_s: Longest any single statement may run.
        lock_retries: Retries (with exponential backoff) after a lock timeout.
        backup_store: BackupStore block the pre-migration backup goes to.
        concurrency_timeout_s: Longest wait for another change of the environment to end.
        reason: Why the migration runs (for the operation log).
        git_ref: Apply the migrations as they are at this branch, tag or commit of
            ``repository`` (``migrations_dir`` is then relative to the repository root).
        repository: The git checkout ``git_ref`` is read from.
        approval_timeout_s: How long a migration in an environment of the roles policy's
            ``change-schema`` gate (production) waits for a DBA to approve the plan.
        approval_poll_s: How often the paused run checks for the answer.
    """
    source = migrations_dir if git_ref is None else f"{migrations_dir}@{git_ref}"
    options: dict[str, Any] = {
        "database": database,
        "environment": environment,
        "dry_run": dry_run,
        "skip_backup": skip_backup,
        "lock_timeout_s": lock_timeout_s,
        "statement_timeout_s": statement_timeout_s,
        "lock_retries": lock_retries,
        "backup_store": backup_store,
        "concurrency_timeout_s": concurrency_timeout_s,
        "approval": (approval_timeout_s, approval_poll_s),
    }
    # The log starts first: a bad git ref or folder still leaves its entry.
    with operation_log("database migration", reason, try_load_ops_db(), try_load_routing()) as rec:
        rec.details.update(
            migrations_dir=source,
            database=database,
            environment=environment,
            dry_run=dry_run,
            skip_backup=skip_backup,
            lock_timeout_s=lock_timeout_s,
            statement_timeout_s=statement_timeout_s,
        )
        if git_ref is None:
            return _migrate(migrations_dir, **options)
        with folder_at_ref(repository, git_ref, migrations_dir) as folder:
            return _migrate(str(folder), **options)


def _migrate(
    migrations_dir: str,
    *,
    database: str,
    environment: str,
    dry_run: bool,
    skip_backup: bool,
    lock_timeout_s: float,
    statement_timeout_s: float,
    lock_retries: int,
    backup_store: str,
    concurrency_timeout_s: float,
    approval: tuple[int, int],
) -> dict[str, Any]:
    rec = current_run().record
    if not _ENVIRONMENT.match(environment):
        raise ConfigurationError(f"environment {environment!r} is not a valid name")
    if min(approval) < 1:
        raise ConfigurationError(
            f"approval_timeout_s and approval_poll_s must be at least 1 (got {approval})"
        )
    gated = needs_approval(environment)  # a policy without the gate fails before any change
    policy = ApplyPolicy(lock_timeout_s, statement_timeout_s, lock_retries)
    directory, migrations = load_migrations(migrations_dir)
    suites = load_suites(directory)
    if suites:
        preload()  # GX takes seconds to import: warm it while the plan is made
    target = load_block(PostgresTarget, database)

    plan = compute_plan(directory, migrations, target)
    create_markdown_artifact(
        key="migration-plan",
        markdown=render_plan(plan, markdown=True) + render_suites(suites, markdown=True),
        description=f"Migration plan for {database} ({len(plan.pending)} pending)",
    )
    names = [p.migration.name for p in plan.pending]
    suite_files = [s.file for s in suites]
    rec.details.update(pending=names, blocked=plan.blocked, suites=suite_files)
    summary: dict[str, Any] = {"pending": names, "dry_run": dry_run, "suites": suite_files}
    refuse_if_blocked(plan)
    if suites:
        check_suites(suites)
    if not plan.pending or dry_run:
        rec.impact = "none: " + ("dry run, plan only" if dry_run else "nothing pending")
        return summary

    require_slots(environment)  # before the backup: a missing limit changes nothing
    if gated:
        plan_text = render_plan(plan, markdown=True)
        approve_schema_change(database, environment, plan_text, *approval)
    progress = Progress()
    if skip_backup:
        rec.issues.append("pre-migration backup skipped (skip_backup=True)")
        rec.follow_up.append("take a backup of the migrated database")
        progress.backup = "skipped by parameter skip_backup=True"
    else:
        progress.backup = _backup(database, backup_store, names)
    rec.details["backup"] = progress.backup

    expectations = final_expectations(step.migration for step in plan.pending)
    with change_slot(environment, concurrency_timeout_s, database=target):
        try:
            failures = _apply_and_verify(target, plan, policy, expectations, suites, progress)
        except Exception as exc:
            where = progress.failed
            subject = f"migration of {target.database} failed" + (f" at {where}" if where else "")
            _page(progress, subject, exc)
            if isinstance(exc, OpsError) and progress.report is not None:
                hint = "; ".join(h for h in (exc.hint, progress.report.hint()) if h)
                raise type(exc)(exc.message, hint=hint) from exc
            raise
    applied = progress.applied_names()
    rec.impact = f"applied {len(applied)} migration(s): {', '.join(applied) or 'none'}"
    if failures:
        fallback = _fallback(progress.backup)
        rec.follow_up.append(f"write a fix-forward migration, or restore {fallback}")
        shown = "; ".join(failures[:10]) + (
            f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
        )
        failed = VerificationFailed(
            f"the migrated database failed {len(failures)} verification check(s): {shown}",
            hint="the migrations are committed (schema_migrations): write a follow-up"
            " migration that fixes the schema or data and re-run (applied files are"
            f" skipped), or restore {fallback}",
        )
        _page(progress, f"migration of {target.database} failed verification", failed)
        raise failed
    return {**summary, **rec.details, "verified": [e.describe() for e in expectations]}


@dataclass
class Progress:
    """A migration run's working state: its fallback backup, what it applied, where it failed.

    Decisions read this, never the operation record (which only gets copies for the log).
    """

    backup: dict[str, Any] | str | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)
    failed: str | None = None
    #: Units applied so far; the indexes before the unit under way (outside a transaction),
    #: None until they were read (then the unit has not started).
    units_done: int = 0
    indexes_before: IndexSnapshot | None = None
    report: FailureReport | None = None

    def applied_names(self) -> list[str]:
        """Files this run changed the database with (not the ones already applied)."""
        return [str(r["name"]) for r in self.applied if not r["skipped"]]


def _fallback(backup: Any) -> str:
    """Where to go back to: the pre-migration backup, as the operation log recorded it."""
    if isinstance(backup, dict) and backup.get("key"):
        when = (
            f" (restore-database at={backup['snapshot_at']})" if backup.get("snapshot_at") else ""
        )
        return f"the pre-migration backup {backup['key']}{when}"
    return "a backup taken before the migration (none was taken by this run: skip_backup=True)"


def _page(progress: Progress, subject: str, exc: Exception) -> None:
    """Send a P2 for a failure after the migration started; record that it went out."""
    applied = progress.applied_names()
    message, hint = error_text(exc), exc.hint if isinstance(exc, OpsError) else None
    body = f"{message}\n\nApplied by this run: {', '.join(applied) or 'none'}."
    if "backup" not in (hint or ""):
        body += f" To fall back on: {_fallback(progress.backup)}."
    if progress.report is not None:
        body += "\n\n" + render_failure(progress.report)
    if hint:
        body += f"\n\nWhat to do: {hint}"
    delivered = safe_notify("P2", subject, body)
    current_run().record.details["notified"] = f"P2 to {delivered} channel(s): {subject}"


def _apply_and_verify(
    target: PostgresTarget,
    plan: Plan,
    policy: ApplyPolicy,
    expectations: tuple[Expectation, ...],
    suites: Sequence[TableSuite],
    progress: Progress,
) -> tuple[str, ...]:
    """Apply the pending files unit by unit, then check declarations and suites; the failures.

    ``progress`` holds what was applied (the working state); the operation log gets a copy.
    A failure is reported (:func:`procedures.migration_report.report_failure`) before it is
    raised.
    """
    rec = current_run().record
    details = rec.details
    applied_by = str(flow_run.id or "manual")
    details["applied"] = progress.applied  # the same list: the log shows what ran so far
    details["schema_hash_before"] = hash_schema(target)
    units = plan.units
    details["units"] = [list(u.names) for u in units]
    meter = cast(UUID, create_progress_artifact(0.0, description="migrations applied"))
    try:
        for unit in units:
            progress.indexes_before = None  # the unit has not started
            progress.indexes_before = indexes_before(target, unit)
            check_slots()  # a safe point: a run that lost its slots stops before the next unit
            run = apply_batch.with_options(task_run_name=f"apply {', '.join(unit.names)}")
            progress.applied.extend(run(target, unit, policy, applied_by))
            progress.units_done += 1
            update_progress_artifact(meter, 100.0 * progress.units_done / len(units))
    except Exception as exc:
        report = progress.report = report_failure(
            target,
            units,
            progress.units_done,
            progress.applied_names(),
            progress.indexes_before,
            exc,
            _fallback(progress.backup),
        )
        progress.failed = details["failed"] = report.failed_file or ", ".join(
            units[progress.units_done].names
        )
        details["failure"] = report.as_details()
        rec.impact = report.impact()
        rec.follow_up.append(
            f"applied before the failure: {', '.join(report.applied) or 'none'}; not applied:"
            f" {', '.join(report.not_applied)}"
        )
        rec.follow_up += [f"half-applied: {x.what}" for x in report.leftovers]
        rec.follow_up.append("to finish: " + " ".join(report.finish))
        rec.follow_up.append("to revert: " + " ".join(report.revert))
        raise
    details["schema_hash_after"] = hash_schema(target)
    failures = verify_schema(target, expectations)
    if not suites:
        return failures
    results = validate_suites(target, suites)
    failed = suite_failures(results)
    details["validation"] = {
        "suites": [s.file for s in suites],
        "evaluated": len(results),
        "failed": list(failed),
    }
    return failures + failed
