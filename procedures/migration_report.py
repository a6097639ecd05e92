"""The failure report of a migration run: what is applied, what is not, what is half-applied
(an INVALID index), and the commands that finish or revert it.

The decision is :func:`decisions.migration_failure.failure_report`; this module gathers what
it needs from the database after the failure (the indexes the failed file builds or drops
CONCURRENTLY, and every index that became INVALID) and publishes the report as the
``migration-failure`` markdown artifact. The flow puts the same report in the operation log,
the page and the exception's hint.
"""

from collections.abc import Sequence

from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from decisions.migration_failure import (
    ARTIFACT_KEY,
    FailureReport,
    failure_report,
    render_failure,
    touched_indexes,
)
from decisions.migrations import ApplyUnit
from opsflows.errors import OpsError, scrub
from tasks.migrate import failed_at, inspect_indexes

#: Named indexes' validity (None: absent) and every INVALID index, as read at one moment.
IndexSnapshot = tuple[dict[str, bool | None], frozenset[str]]


def error_text(exc: BaseException) -> str:
    """The error as people should read it: our message, or a scrubbed vendor message."""
    if isinstance(exc, OpsError):
        return exc.message
    return f"{type(exc).__name__}: {scrub(str(exc))}"


def indexes_before(target: PostgresTarget, unit: ApplyUnit) -> IndexSnapshot:
    """Before a unit that runs outside a transaction: the indexes its file builds or drops
    CONCURRENTLY, and every INVALID index (for :func:`report_failure`)."""
    if unit.transactional:
        return {}, frozenset()
    return inspect_indexes(target, touched_indexes(unit.files[0]))


def report_failure(
    target: PostgresTarget,
    units: Sequence[ApplyUnit],
    failed_unit: int,
    applied: Sequence[str],
    before: IndexSnapshot | None,
    exc: BaseException,
    fallback: str,
) -> FailureReport:
    """Build the report of the failure ``exc`` of ``units[failed_unit]`` and publish it.

    Args:
        target: The migrated database.
        units: Every unit of the run, in order.
        failed_unit: Index of the unit that failed.
        applied: Files this run committed before the failure.
        before: :func:`indexes_before` the failed unit; None when the unit failed before
            it started (then nothing of it changed: the state after counts as before).
        exc: What the unit raised.
        fallback: The backup to fall back on, described.
    """
    unit = units[failed_unit]
    after: IndexSnapshot | None = ({}, frozenset())
    if not unit.transactional:  # a transaction that failed left nothing behind
        try:
            after = inspect_indexes(target, touched_indexes(unit.files[0]))
        except Exception as inspect_error:  # noqa: BLE001 - the report says it could not look
            get_run_logger().warning(
                "could not read the indexes after the failure: %s", scrub(str(inspect_error))
            )
            after = None
    if before is None:
        before = after or ({}, frozenset())
    report = failure_report(
        database=target.database,
        units=units,
        failed_unit=failed_unit,
        applied=applied,
        failed_at=failed_at(exc),
        before=before[0],
        after=after[0] if after else None,
        invalid_before=before[1],
        invalid_after=after[1] if after else before[1],
        error=error_text(exc),
        fallback=fallback,
    )
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=render_failure(report, markdown=True),
        description=f"What the failed migration of {target.database} applied and left behind",
    )
    return report
