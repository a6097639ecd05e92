"""Restore a backup into a scratch database and verify it: shared by the restore runbook and
the weekly restore drill. Nothing live is touched here.
"""

from dataclasses import dataclass, field

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.backups import BackupRecord
from decisions.phases import Phase
from opsflows.errors import VerificationFailed
from tasks.catalog import mark_verified
from tasks.phase_clock import PhaseClock
from tasks.restore import RestoreResult, drop_scratch, restore_into_scratch
from tasks.scratch import claim, mark_scratch_verified, scratch_name, sweep_abandoned
from tasks.verify import VerificationReport, preload, read_user_suites, verify_restore


@dataclass(frozen=True)
class VerifiedRestore:
    """A backup restored into a scratch database and verified against its manifest."""

    record: BackupRecord
    scratch: str
    restore: RestoreResult
    report: VerificationReport
    #: Scratch databases abandoned by interrupted restores, dropped before this one began.
    dropped_leftovers: tuple[str, ...] = field(default=())
    #: Where the time went, in seconds after ``origin`` (``time.monotonic()`` at the start).
    origin: float = 0.0
    phases: tuple[Phase, ...] = field(default=())


def restore_and_verify(
    target: PostgresTarget,
    admin: PostgresTarget,
    store: BackupStore,
    record: BackupRecord,
    expectations: str | None,
    row_samples: bool = False,
) -> VerifiedRestore:
    """Restore ``record`` into a new scratch database and verify it (shared with the drill).

    First reads the user's expectation suites (a refused one stops the run before anything
    connects to the server), then drops what interrupted restores of the same database left
    behind (which also fails fast, before any download, when the server cannot be
    reached). The run claims its scratch database while it fills and verifies it, so a
    concurrent restore never takes it for abandoned. A failed verification drops the
    scratch database and raises ``VerificationFailed``.
    """
    assert record.manifest is not None
    clock = PhaseClock()
    preload()  # GX takes seconds to import: overlap it with the download
    with clock.phase("suites and leftovers"):
        suites = read_user_suites(store, target.database, expectations)
        leftovers = sweep_abandoned(admin, target.database)
        scratch = scratch_name(target.database, record.backup_id)
    with claim(admin, scratch):
        began = clock.since()
        restored = restore_into_scratch(store, record.manifest, admin, scratch, target.database)
        clock.add("create scratch", restored.origin - clock.origin - began, began)
        clock.join(restored.phases, restored.origin)
        try:
            began = clock.since()
            report = verify_restore(admin, scratch, record.manifest, suites, row_samples)
            clock.span(
                "verification",
                began,
                detail=f"fingerprint and {report.summary().get('evaluated', 0)} expectations",
            )
        except BaseException:
            drop_scratch(admin, scratch)
            raise
        if not report.success:
            drop_scratch(admin, scratch)
            failed = "; ".join(report.summary()["failed"][:5])
            raise VerificationFailed(
                f"restore of backup {record.backup_id} did not match its manifest: {failed}",
                hint="the scratch database was dropped; see the restore-verification artifact",
            )
        mark_scratch_verified(admin, scratch, target.database, record.backup_id)
    mark_verified(store, record, {"scratch": scratch, **report.summary()})
    return VerifiedRestore(
        record, scratch, restored, report, tuple(leftovers), clock.origin, tuple(clock.phases)
    )
