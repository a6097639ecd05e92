"""Recover a scratch instance, copy the database out and verify the copy: shared by the
restore-to-time runbook and the restore drill. Nothing live is touched here."""

from dataclasses import dataclass
from datetime import datetime

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.backups import Manifest
from decisions.wal import RestorePlan
from opsflows.errors import VerificationFailed
from opsflows.settings import get_settings
from tasks.base_backup import archiving_status
from tasks.pitr_copy import CopyResult, copy_recovered
from tasks.pitr_instance import Recovered, recovered_instance
from tasks.restore import drop_scratch
from tasks.scratch import claim, mark_scratch_verified, scratch_name
from tasks.verify import VerificationReport, preload, read_user_suites, verify_restore


@dataclass(frozen=True)
class PitrRestored:
    """A verified copy of the database as recovered, in a scratch database on the server."""

    scratch: str
    instance: Recovered
    copied: CopyResult
    report: VerificationReport


def _manifest(label: str, database: str, plan: RestorePlan, copied: CopyResult) -> Manifest:
    """What the copy is verified against: the fingerprint taken in its own snapshot."""
    moment: datetime = plan.target or plan.newest_archived_at
    return Manifest(
        backup_id=label,
        database=database,
        server_version=copied.server_version,
        started_at=plan.base.started_at,
        finished_at=moment,
        snapshot_at=moment,
        dump_key=plan.base.key,
        size_bytes=plan.base.size_bytes,
        sha256=plan.base.sha256,
        parts=0,
        compression="zstd",
        fingerprint=copied.fingerprint,
    )


def recover_and_verify(
    target: PostgresTarget,
    admin: PostgresTarget,
    store: BackupStore,
    cluster: str,
    plan: RestorePlan,
    label: str,
    expectations: str | None = None,
    row_samples: bool = False,
) -> PitrRestored:
    """Recover to ``plan``, copy ``target``'s database into a new scratch database, verify it.

    The user's suites are read first (a refused one stops the run before anything is
    downloaded). The scratch database is claimed while it fills and is verified; a failed
    verification drops it and raises ``VerificationFailed``. The scratch instance is gone
    before the verification starts.
    """
    preload()
    suites = read_user_suites(store, target.database, expectations)
    version = int(archiving_status(admin)["server_version_num"])
    scratch = scratch_name(target.database, label)
    timeout_s = get_settings().pitr_recovery_timeout_s
    with claim(admin, scratch):
        with recovered_instance(store, cluster, plan, version, timeout_s) as instance:
            source = instance.target(admin, target.database)
            copied = copy_recovered(source, admin, scratch, target.database, label)
        manifest = _manifest(label, target.database, plan, copied)
        try:
            report = verify_restore(admin, scratch, manifest, suites, row_samples)
        except BaseException:
            drop_scratch(admin, scratch)
            raise
        if not report.success:
            drop_scratch(admin, scratch)
            raise VerificationFailed(
                "the point-in-time copy did not match its fingerprint: "
                + "; ".join(report.summary()["failed"][:5]),
                hint="the scratch database was dropped; see the restore-verification artifact",
            )
        mark_scratch_verified(admin, scratch, target.database, label)
    return PitrRestored(scratch, instance, copied, report)
