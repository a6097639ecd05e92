"""The disk-full runbook's pure decisions: the log policy, the backup advice, the verdict."""

from __future__ import annotations

from datetime import timedelta

import pytest

from decisions.retention import plan_retention
from decisions.triage_disk import (
    MIB,
    DatabaseUsage,
    Filesystem,
    LogFile,
    LogPolicy,
    VolumeFacts,
    backup_advice,
    database_check,
    decide_disk_full,
    filesystems_check,
    logs_check,
    logs_to_clear,
    volume_check,
)
from opsflows.errors import ConfigurationError
from tests.unit.test_backup_decisions import NOW, record

H = 3600.0
SIZE = 100 * MIB


def vol(logs: list[LogFile], uploads: int = 0) -> VolumeFacts:
    log_bytes = sum(f.bytes for f in logs)
    return VolumeFacts(
        "/vol",
        SIZE,
        log_bytes + uploads,
        (("logs", log_bytes, len(logs)), ("uploads", uploads, 1 if uploads else 0)),
        tuple(logs),
    )


OLD = LogFile("old.log", 50 * MIB, 48 * H)
OLDER = LogFile("older.log", 20 * MIB, 72 * H)
FRESH = LogFile("fresh.log", 10 * MIB, 60.0)


def test_the_policy_clears_old_logs_oldest_first_and_never_the_newest() -> None:
    policy = LogPolicy(max_age_h=24)
    assert logs_to_clear([FRESH, OLD, OLDER], policy) == (OLDER, OLD)
    # the newest file is kept however old it is: the app writes to it
    assert logs_to_clear([OLD], policy) == ()
    assert logs_to_clear([], policy) == ()


def test_the_size_rule_clears_what_is_beyond_the_newest_keep_mb() -> None:
    recent = [LogFile(f"{i}.log", 10 * MIB, i * 60.0) for i in range(5)]
    cleared = logs_to_clear(recent, LogPolicy(max_age_h=24, keep_mb=25))
    assert [f.name for f in cleared] == ["4.log", "3.log", "2.log"]  # 0 and 1 = 20 MiB kept
    assert logs_to_clear(recent, LogPolicy(max_age_h=24)) == ()


@pytest.mark.parametrize(("age", "keep"), [(0, None), (-1, None), (24 * 366, None), (24, -1)])
def test_a_policy_that_makes_no_sense_is_refused(age: float, keep: float | None) -> None:
    with pytest.raises(ConfigurationError):
        LogPolicy(age, keep)


def test_a_full_volume_with_old_logs_clears_them() -> None:
    volume = vol([FRESH, OLD, OLDER], uploads=5 * MIB)  # 85%
    decision = decide_disk_full(volume, [], LogPolicy(), 0.8)
    assert decision.action == "clear-logs"
    assert decision.clear == (OLDER, OLD) and decision.freed_bytes == 70 * MIB
    assert "85.0% full" in decision.reason and "about 15.0%" in decision.reason
    assert decision.recommendations == ()
    assert volume_check(volume, 0.8).passed is False


def test_clearing_too_little_still_clears_and_recommends_a_bigger_volume() -> None:
    volume = vol([FRESH, LogFile("a.log", 5 * MIB, 48 * H)], uploads=75 * MIB)  # 90%
    decision = decide_disk_full(volume, [], LogPolicy(), 0.8)
    assert decision.action == "clear-logs"
    (rec,) = decision.recommendations
    assert "increase the volume /vol" in rec and "uploads/" in rec


def test_nothing_deletable_escalates_with_recommendations() -> None:
    volume = vol([FRESH], uploads=80 * MIB)
    decision = decide_disk_full(volume, [], LogPolicy(), 0.8, extra=["backups: x"])
    assert decision.action == "escalate" and decision.clear == ()
    assert "may clear nothing" in decision.reason
    assert decision.recommendations[-1] == "backups: x"
    assert logs_check(volume, (), LogPolicy()).passed is False


def test_a_full_host_filesystem_is_escalated_never_cleared() -> None:
    volume = vol([FRESH, OLD])  # 60%
    root = Filesystem("/", 100, 10)
    decision = decide_disk_full(volume, [root], LogPolicy(), 0.8)
    assert decision.action == "escalate" and decision.clear == ()
    assert "/ is 90.0% full" in decision.reason
    assert any("clears no host filesystem" in r for r in decision.recommendations)
    assert filesystems_check([root, Filesystem("/boot", 100, 90)], 0.8).passed is False


def test_nothing_full_changes_nothing_and_unreadable_escalates() -> None:
    assert decide_disk_full(vol([FRESH]), [], LogPolicy(), 0.8).action == "none"
    assert decide_disk_full(None, None, LogPolicy(), 0.8).action == "escalate"
    assert volume_check(None, 0.8).passed is None
    assert filesystems_check(None, 0.8).passed is None


def test_database_sizes_and_wal_evidence() -> None:
    usage = DatabaseUsage(
        (("app", 12 * MIB), ("opsflows", 9 * MIB)),
        (("public.orders", "table", 4 * MIB), ("public.orders_pkey", "index", MIB)),
        48 * MIB,
        3,
    )
    sizes, wal = database_check(usage)
    assert (
        "app 12.0 MiB" in sizes.evidence and "public.orders_pkey 1.0 MiB (index)" in sizes.evidence
    )
    assert wal.evidence == "48.0 MiB in 3 segment files"
    assert [c.passed for c in database_check(None)] == [None, None]
    _, unlisted = database_check(DatabaseUsage(usage.databases, (), None, None))
    assert unlisted.passed is None and "pg_monitor" in unlisted.evidence


def test_backups_retention_keeps_are_never_recommended_for_deletion() -> None:
    young = [record(NOW - timedelta(days=d)) for d in range(3)]
    check, rec = backup_advice(plan_retention(young, NOW), "s3://b/app")
    assert "retention forbids deleting any of the 3 backups" in check.evidence
    assert "none deleted" in check.evidence and rec == ""
    # below the minimum count, even very old ones stay
    old = [record(NOW - timedelta(days=100 + d)) for d in range(5)]
    check, rec = backup_advice(plan_retention(old, NOW, min_count=7), "s3://b/app")
    assert "forbids" in check.evidence and rec == ""


def test_expired_backups_are_a_recommendation_not_a_deletion() -> None:
    records = [record(NOW - timedelta(days=d)) for d in range(40)]
    check, rec = backup_advice(plan_retention(records, NOW), "s3://b/app")
    assert "retention allows deleting 9 of 40" in check.evidence
    assert "not deleted here" in check.evidence
    assert rec.startswith("run the backup's retention pass") and "frees no space" in rec
    check, rec = backup_advice(None, "s3://b/app", "S3 refused")
    assert check.passed is None and "S3 refused" in check.evidence and rec == ""
