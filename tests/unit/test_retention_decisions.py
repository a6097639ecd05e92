"""Retention and the upload sweep: pure decisions, no services."""

from __future__ import annotations

from datetime import timedelta

import pytest

from decisions.backups import backup_id_for
from decisions.retention import PendingUpload, plan_retention, stale_uploads
from opsflows.errors import ConfigurationError
from tests.unit.test_backup_decisions import NOW, daily, record


def _ids(items: object) -> set[str]:
    return {i.record.backup_id for i in items}  # type: ignore[attr-defined]


def test_retention_keeps_30_days_and_deletes_older() -> None:
    records = daily(40)
    plan = plan_retention(records, NOW, keep_days=30, min_count=7)
    kept_ages = sorted((NOW - i.record.point_in_time).days for i in plan.keep)  # type: ignore[operator]
    assert kept_ages == list(range(31)), "day 30 is exactly at the horizon and kept"
    assert len(plan.delete) == 9
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


def test_stale_uploads_are_those_past_the_grace_period() -> None:
    old = PendingUpload("k1", "u1", NOW - timedelta(hours=7))
    young = PendingUpload("k2", "u2", NOW - timedelta(minutes=5))
    assert stale_uploads([old, young], NOW) == [old]
