"""Retention and the upload sweep: pure decisions, no services."""

from __future__ import annotations

from datetime import timedelta

import pytest

from decisions.backups import BackupRecord, Manifest, backup_id_for
from decisions.retention import (
    BackupState,
    PendingUpload,
    assess,
    last_activity,
    plan_retention,
    sweep_uploads,
)
from opsflows.errors import ConfigurationError
from tests.unit.test_backup_decisions import NOW, daily, record


def _ids(items: object) -> set[str]:
    return {i.record.backup_id for i in items}  # type: ignore[attr-defined]


def unreadable(
    days_ago: float, error: str = "s3://b/k/manifest.json is not valid JSON"
) -> BackupRecord:
    """A folder whose manifest is there but does not parse: no manifest value, its error."""
    base = record(NOW - timedelta(days=days_ago))
    return BackupRecord(**{**base.__dict__, "manifest": None, "manifest_error": error})


def with_manifest(base: BackupRecord, **changes: object) -> BackupRecord:
    assert base.manifest is not None
    return BackupRecord(
        **{**base.__dict__, "manifest": Manifest(**{**base.manifest.__dict__, **changes})}
    )


# --- the existing rules, unchanged -----------------------------------------------------------


def test_retention_keeps_30_days_and_deletes_older() -> None:
    records = daily(40)
    plan = plan_retention(records, NOW, keep_days=30, min_count=7)
    kept_ages = sorted((NOW - i.record.point_in_time).days for i in plan.keep)  # type: ignore[operator]
    assert kept_ages == list(range(31)), "day 30 is exactly at the horizon and kept"
    assert len(plan.delete) == 9 and plan.quarantine == ()
    assert set(plan.delete_keys()) == {k for i in plan.delete for k in i.record.keys}


def test_retention_never_goes_below_the_minimum_count() -> None:
    old = [record(NOW - timedelta(days=100 + d)) for d in range(10)]
    plan = plan_retention(old, NOW, keep_days=30, min_count=7)
    assert len(plan.keep) == 7
    assert _ids(plan.keep) == {r.backup_id for r in old[:7]}, "the newest seven survive"
    assert all("newest 7" in i.reason for i in plan.keep)


def test_retention_never_deletes_the_newest_verified_backup() -> None:
    records = daily(10) + [record(NOW - timedelta(days=60), verified=True)]
    records.append(record(NOW - timedelta(days=70), verified=True))
    plan = plan_retention(records, NOW, keep_days=30, min_count=3)
    newest_verified = backup_id_for(NOW - timedelta(days=60))
    assert newest_verified in _ids(plan.keep)
    assert backup_id_for(NOW - timedelta(days=70)) in _ids(plan.delete)


def test_incomplete_leftovers_are_deleted_after_the_grace_period_only() -> None:
    fresh = record(NOW - timedelta(hours=1), complete=False)
    stale = record(NOW - timedelta(days=2), complete=False)
    plan = plan_retention([*daily(3), fresh, stale], NOW)
    assert fresh.backup_id in _ids(plan.keep)
    assert stale.backup_id in _ids(plan.delete)
    assert "not a backup" in next(i.reason for i in plan.delete if i.record is stale)


def test_incomplete_dumps_do_not_count_towards_the_minimum() -> None:
    records = [record(NOW - timedelta(days=90 + d)) for d in range(3)]
    records += [record(NOW - timedelta(days=d), complete=False) for d in range(1, 5)]
    plan = plan_retention(records, NOW, keep_days=30, min_count=3)
    assert {r.backup_id for r in records[:3]} <= _ids(plan.keep)


@pytest.mark.parametrize(("days", "minimum"), [(0, 7), (30, 0)])
def test_retention_refuses_settings_that_delete_everything(days: int, minimum: int) -> None:
    with pytest.raises(ConfigurationError):
        plan_retention(daily(3), NOW, keep_days=days, min_count=minimum)


# --- quarantine: unreadable and foreign backups ----------------------------------------------


def test_an_unreadable_manifest_past_the_grace_period_is_quarantined_not_deleted() -> None:
    broken = unreadable(2.5)
    plan = plan_retention([*daily(3), broken], NOW)
    assert broken.backup_id not in _ids(plan.delete) | _ids(plan.keep)
    assert _ids(plan.quarantine) == {broken.backup_id}
    assert not set(broken.keys) & set(plan.delete_keys()), "the dump is not deleted either"
    reason = plan.quarantine[0].reason
    assert reason.startswith("unreadable: manifest unreadable") and "not valid JSON" in reason
    ancient = unreadable(400)
    assert _ids(plan_retention([ancient], NOW).quarantine) == {ancient.backup_id}


def test_foreign_backups_are_quarantined() -> None:
    other_db = with_manifest(record(NOW - timedelta(days=50)), database="billing")
    other_id = with_manifest(record(NOW - timedelta(days=51)), backup_id="20200101T000000000000Z")
    stray_base = record(NOW - timedelta(days=52), complete=False)
    note = f"backups/app/{stray_base.backup_id}/notes.txt"
    stray = BackupRecord(
        **{**stray_base.__dict__, "keys": (*stray_base.keys, note), "stray_keys": (note,)}
    )
    plan = plan_retention([*daily(3), other_db, other_id, stray], NOW, min_count=1)
    reasons = {i.record.backup_id: i.reason for i in plan.quarantine}
    assert set(reasons) == {other_db.backup_id, other_id.backup_id, stray.backup_id}
    assert "database 'billing'" in reasons[other_db.backup_id]
    assert "of backup '20200101T000000000000Z'" in reasons[other_id.backup_id]
    assert reasons[stray.backup_id] == "foreign: holds objects opsflows does not write: notes.txt"
    assert plan.delete == ()


def test_a_complete_backup_beside_a_stray_object_is_quarantined_but_restorable() -> None:
    base = record(NOW - timedelta(days=60))
    note = f"backups/app/{base.backup_id}/README"
    odd = BackupRecord(**{**base.__dict__, "keys": (*base.keys, note), "stray_keys": (note,)})
    assert odd.complete, "a stray object does not hide a backup from a restore"
    assert assess(odd).state is BackupState.FOREIGN
    plan = plan_retention([odd], NOW, min_count=1)
    assert _ids(plan.quarantine) == {odd.backup_id} and plan.delete == ()


def test_quarantined_backups_count_as_neither_kept_nor_deletable() -> None:
    """The minimum counts complete backups only: a quarantined one does not make it up, and
    does not displace a complete one either."""
    old = [record(NOW - timedelta(days=100 + d)) for d in range(5)]
    broken = [unreadable(1 + d) for d in range(4)]
    plan = plan_retention([*old, *broken], NOW, keep_days=30, min_count=3)
    assert _ids(plan.keep) == {r.backup_id for r in old[:3]}
    assert _ids(plan.delete) == {r.backup_id for r in old[3:]}
    assert _ids(plan.quarantine) == {r.backup_id for r in broken}
    assert len(plan.keep) + len(plan.delete) + len(plan.quarantine) == 9


def test_a_readable_manifest_whose_dump_is_gone_is_an_incomplete_leftover() -> None:
    base = record(NOW - timedelta(days=3))
    gone = BackupRecord(**{**base.__dict__, "dump_key": None, "dump_size": None})
    verdict = assess(gone)
    assert verdict.state is BackupState.INCOMPLETE and "dump.pgc" in verdict.reason
    assert _ids(plan_retention([*daily(2), gone], NOW).delete) == {gone.backup_id}


def test_an_incomplete_folder_changed_recently_is_kept_whatever_its_id_says() -> None:
    """A backup that started 8 h ago and finished its upload a minute ago has an old id but
    a new dump: its manifest may be on its way."""
    started = record(NOW - timedelta(hours=8), complete=False)
    finishing = BackupRecord(**{**started.__dict__, "modified": NOW - timedelta(minutes=1)})
    assert last_activity(finishing) == NOW - timedelta(minutes=1)
    plan = plan_retention([*daily(2), finishing], NOW)
    assert finishing.backup_id in _ids(plan.keep)


# --- the upload sweep --------------------------------------------------------------------------


OLD = PendingUpload("backups/app/x/dump.pgc", "u1", NOW - timedelta(hours=7))
YOUNG = PendingUpload("backups/app/y/dump.pgc", "u2", NOW - timedelta(minutes=5))
NOT_OURS = PendingUpload("backups/app/other/file.bin", "u3", NOW - timedelta(days=9), ours=False)


def test_old_uploads_are_aborted_only_when_no_backup_is_writing() -> None:
    idle = sweep_uploads([OLD, YOUNG, NOT_OURS], NOW, writers=0)
    assert idle.abort == (OLD,)
    kept = dict(idle.keep)
    assert "less than 6 h" in kept[YOUNG] and "outside the backup layout" in kept[NOT_OURS]

    busy = sweep_uploads([OLD, YOUNG], NOW, writers=1)
    assert busy.abort == (), "a backup holds an upload lease: nothing is aborted"
    assert all("are writing" in why for _, why in busy.keep)


def test_no_lease_count_aborts_nothing() -> None:
    unknown = sweep_uploads([OLD], NOW + timedelta(days=30), writers=None)
    assert unknown.abort == () and "cannot tell" in unknown.keep[0][1]
