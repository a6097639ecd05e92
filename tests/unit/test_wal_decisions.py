"""Point-in-time recovery decisions: WAL names, the restorable range, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from decisions.wal import (
    ArchivedFile,
    BaseBackup,
    missing_segments,
    parse_backup_history,
    parse_lsn,
    plan_restore,
    plan_wal_retention,
    restorable_range,
    segment_name,
)
from opsflows.errors import ConfigurationError

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def seg(n: int, tl: int = 1) -> str:
    return f"{tl:08X}{n // 256:08X}{n % 256:08X}"


def base(bid: str, at: datetime, first: int, last: int | None = None) -> BaseBackup:
    return BaseBackup(
        backup_id=bid,
        started_at=at - timedelta(minutes=1),
        finished_at=at,
        timeline=1,
        start_lsn="0/0",
        stop_lsn="0/0",
        start_wal=seg(first),
        stop_wal=seg(last if last is not None else first),
        key=f"base/{bid}/base.tar.zst",
        size_bytes=1,
        sha256="x",
    )


def wal(n: int, at: datetime) -> ArchivedFile:
    return ArchivedFile(seg(n), at)


def test_lsn_and_segment_names_match_postgres() -> None:
    # pg_walfile_name('0/3000028') on timeline 1 = 000000010000000000000003
    assert segment_name(1, parse_lsn("0/3000028")) == "000000010000000000000003"
    # 1/FF000000 → log id 1, segment FF
    assert segment_name(2, parse_lsn("1/FF000000")) == "0000000200000001000000FF"
    assert segment_name(1, parse_lsn("1/0")) == "000000010000000100000000"
    with pytest.raises(ValueError):
        parse_lsn("nonsense")


def test_segment_numbers_cross_a_log_id() -> None:
    wanted, missing = missing_segments(seg(254), [seg(254), seg(255), seg(257)])
    assert wanted == [seg(254), seg(255), seg(256), seg(257)]
    assert missing == [seg(256)]
    assert seg(256) == "000000010000000100000000"


def test_range_runs_from_the_oldest_base_to_the_newest_wal() -> None:
    bases = [base("b1", T0, 2), base("b2", T0 + timedelta(days=1), 40)]
    archived = [wal(n, T0 + timedelta(hours=n)) for n in range(2, 50)]
    assert restorable_range(bases, archived) == (T0, T0 + timedelta(hours=49))
    assert restorable_range([], archived) is None
    assert restorable_range(bases, []) is None


def test_the_newest_base_before_the_target_is_chosen_with_every_wal_after_it() -> None:
    bases = [base("b1", T0, 2), base("b2", T0 + timedelta(hours=10), 12)]
    archived = [wal(n, T0 + timedelta(hours=n)) for n in range(2, 20)]
    plan = plan_restore(T0 + timedelta(hours=11), bases, archived)
    assert plan.base.backup_id == "b2"
    assert plan.needed[0] == seg(12) and plan.needed[-1] == seg(19)
    early = plan_restore(T0 + timedelta(hours=9), bases, archived)
    assert early.base.backup_id == "b1" and early.needed[0] == seg(2)


@pytest.mark.parametrize("hours", [-1, 30])
def test_a_target_outside_the_range_is_refused_naming_the_range(hours: int) -> None:
    bases = [base("b1", T0, 2)]
    archived = [wal(n, T0 + timedelta(hours=n)) for n in range(2, 20)]
    with pytest.raises(ConfigurationError) as err:
        plan_restore(T0 + timedelta(hours=hours), bases, archived)
    assert "possible: 2026-11-01 00:00:00 to 2026-11-01 19:00:00 UTC" in err.value.message


def test_no_base_backup_is_refused_saying_so() -> None:
    with pytest.raises(ConfigurationError, match="no base backup"):
        plan_restore(T0, [], [wal(2, T0)])


def test_a_gap_in_the_archive_is_refused_naming_the_missing_segment() -> None:
    bases = [base("b1", T0, 2)]
    archived = [wal(n, T0 + timedelta(hours=n)) for n in range(2, 20) if n != 7]
    with pytest.raises(ConfigurationError, match=seg(7)):
        plan_restore(T0 + timedelta(hours=15), bases, archived)


def test_retention_keeps_the_wal_of_the_oldest_kept_base_and_deletes_older() -> None:
    now = T0 + timedelta(days=40)
    bases = [
        base("old", T0, 2),
        base("mid", T0 + timedelta(days=20), 30),
        base("new", T0 + timedelta(days=39), 60),
    ]
    archived = [wal(n, T0 + timedelta(hours=n)) for n in range(2, 70)]
    archived.append(ArchivedFile("00000002.history", T0))
    plan = plan_wal_retention(bases, archived, now, keep_days=30, min_count=1)
    assert plan.delete_bases == ("old",) and set(plan.keep_bases) == {"mid", "new"}
    assert plan.oldest_needed == seg(30)
    assert plan.delete_wal == tuple(seg(n) for n in range(2, 30))
    assert "00000002.history" not in plan.delete_wal
    # min_count keeps the old one too, and with it all of its WAL
    kept = plan_wal_retention(bases, archived, now, keep_days=30, min_count=3)
    assert kept.delete_bases == () and kept.delete_wal == ()


def test_retention_without_a_base_backup_deletes_nothing() -> None:
    plan = plan_wal_retention([], [wal(2, T0)], T0, keep_days=1, min_count=1)
    assert plan.delete_wal == () and plan.delete_bases == ()


HISTORY = """START WAL LOCATION: 0/4000028 (file 000000010000000000000004)
STOP WAL LOCATION: 0/4000138 (file 000000010000000000000004)
CHECKPOINT LOCATION: 0/4000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-12-02 22:10:00 UTC
LABEL: opsflows base 20261202T221000Z
START TIMELINE: 1
STOP TIME: 2026-12-02 22:10:01 UTC
STOP TIMELINE: 1
"""


def test_a_backup_history_file_names_the_wal_range() -> None:
    got = parse_backup_history(HISTORY)
    assert (got.label, got.start_lsn, got.stop_lsn, got.timeline) == (
        "opsflows base 20261202T221000Z",
        "0/4000028",
        "0/4000138",
        1,
    )
    assert got.start_wal == got.stop_wal == "000000010000000000000004"
    with pytest.raises(ValueError, match="not a backup history file"):
        parse_backup_history("LABEL: x\n")


def test_the_latest_plan_starts_at_the_newest_base_and_replays_everything() -> None:
    from decisions.wal import plan_latest

    bases = [base("b1", T0, 2), base("b2", T0 + timedelta(hours=10), 12)]
    archived = [wal(n, T0 + timedelta(hours=n)) for n in range(2, 20)]
    plan = plan_latest(bases, archived)
    assert plan.target is None and plan.base.backup_id == "b2"
    assert plan.needed == tuple(seg(n) for n in range(12, 20))
    assert plan.describe_target() == "the end of the WAL archive"
    with pytest.raises(ConfigurationError, match="no base backup"):
        plan_latest([], archived)
    with pytest.raises(ConfigurationError, match=seg(15)):
        plan_latest(bases, [f for f in archived if f.name != seg(15)])


def test_a_base_backup_is_refused_while_archiving_is_off_or_failing() -> None:
    from decisions.wal import archiving_refusal

    ok = archiving_refusal("on", True, T0, T0 - timedelta(hours=1), "000000010000000000000002")
    assert ok is None and archiving_refusal("on", True, None, None, None) is None
    off = archiving_refusal("off", True, None, None, None)
    assert isinstance(off, ConfigurationError) and "archiving is off" in off.message
    assert archiving_refusal("on", False, None, None, None) is not None
    failing = archiving_refusal("on", True, T0, T0 + timedelta(seconds=1), seg(9))
    assert failing is not None and seg(9) in failing.message
    assert archiving_refusal("on", True, None, T0, seg(2)) is not None
