"""Backup choice, part sizes and manifests: pure decisions, no services.

Retention is in ``test_retention_decisions.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from decisions.backups import (
    BackupRecord,
    Fingerprint,
    Manifest,
    TableFingerprint,
    backup_id_for,
    choose_backup,
    judge_drill,
    manifest_from_dict,
    manifest_to_dict,
    parse_backup_id,
    parse_timestamp,
    restore_point,
)
from decisions.parts import (
    MIB,
    S3_MAX_PARTS,
    S3_MIN_PART,
    choose_part_size,
    estimate_dump_bytes,
    max_upload_bytes,
    part_size_for,
)
from opsflows.errors import BackupMissing, ConfigurationError

NOW = datetime(2025, 11, 30, 12, 0, tzinfo=UTC)


def record(
    at: datetime,
    *,
    complete: bool = True,
    verified: bool = False,
    finished_after_s: float = 60,
    backup_id: str | None = None,
) -> BackupRecord:
    bid = backup_id or backup_id_for(at)
    key = f"backups/app/{bid}/dump.pgc"
    manifest = Manifest(
        backup_id=bid,
        database="app",
        server_version="15.8",
        started_at=at,
        finished_at=at + timedelta(seconds=finished_after_s),
        snapshot_at=at,
        dump_key=key,
        size_bytes=1000,
        sha256="ab" * 32,
        parts=1,
        compression="zstd:1",
        fingerprint=Fingerprint((TableFingerprint("public.t", 3, 3),), "cd" * 32),
    )
    return BackupRecord(
        backup_id=bid,
        database="app",
        dump_key=key,
        dump_size=1000,
        dump_modified=at + timedelta(seconds=finished_after_s),
        manifest=manifest if complete else None,
        verified_at=at + timedelta(hours=1) if verified else None,
        keys=(key,) + ((f"backups/app/{bid}/manifest.json",) if complete else ()),
    )


def daily(days: int, **kw: object) -> list[BackupRecord]:
    return [record(NOW - timedelta(days=d), **kw) for d in range(days)]  # type: ignore[arg-type]


# --- timestamps ---------------------------------------------------------------------------


def test_naive_timestamp_is_utc_and_zones_are_respected() -> None:
    assert parse_timestamp("2025-11-19 10:00:00") == datetime(2025, 11, 19, 10, tzinfo=UTC)
    assert parse_timestamp("2025-11-19T10:00:00Z") == datetime(2025, 11, 19, 10, tzinfo=UTC)
    paris = parse_timestamp("2025-11-19 11:00:00+01:00")
    assert paris == datetime(2025, 11, 19, 10, tzinfo=UTC)
    assert parse_timestamp("2025-11-19 10:00", timezone(timedelta(hours=-5))).utcoffset() == (
        timedelta(hours=-5)
    )


@pytest.mark.parametrize("text", ["", "   ", "yesterday", "2025-13-01 10:00", "19/11/2025"])
def test_bad_timestamps_are_configuration_errors(text: str) -> None:
    with pytest.raises(ConfigurationError, match="timestamp"):
        parse_timestamp(text)


def test_a_restore_point_in_the_future_is_refused() -> None:
    """A future ``at`` used to restore the newest backup silently: it is refused instead."""
    with pytest.raises(ConfigurationError, match="in the future") as info:
        restore_point("2025-11-30 12:00:01", NOW)
    assert "2025-11-30T12:00:01+00:00" in info.value.message
    assert info.value.hint and "leave `at` empty" in info.value.hint
    with pytest.raises(ConfigurationError, match="in the future"):
        restore_point("2025-11-30 13:30:00+01:00", NOW)  # 12:30 UTC


def test_a_restore_point_now_or_earlier_is_taken_and_none_means_newest() -> None:
    assert restore_point("2025-11-30 12:00:00", NOW) == NOW
    assert restore_point("2025-11-30 12:30:00+01:00", NOW) == NOW - timedelta(minutes=30)
    assert restore_point(None, NOW) is None
    assert restore_point("  ", NOW) is None
    with pytest.raises(ConfigurationError, match="timestamp"):
        restore_point("tomorrow", NOW)


def test_backup_ids_sort_by_time_and_round_trip() -> None:
    a, b = NOW, NOW + timedelta(microseconds=1)
    assert backup_id_for(a) < backup_id_for(b)
    assert parse_backup_id(backup_id_for(a)) == a
    assert parse_backup_id("not-an-id") is None


# --- choosing -----------------------------------------------------------------------------


def test_newest_complete_at_or_before_the_timestamp() -> None:
    records = daily(5)
    chosen = choose_backup(records, NOW - timedelta(days=1, hours=3))
    assert chosen.point_in_time == NOW - timedelta(days=2)
    exact = choose_backup(records, NOW - timedelta(days=3))
    assert exact.point_in_time == NOW - timedelta(days=3), "at-or-before includes equality"
    assert choose_backup(records, None).point_in_time == NOW


def test_incomplete_backups_are_never_chosen() -> None:
    records = [record(NOW - timedelta(days=1)), record(NOW - timedelta(hours=1), complete=False)]
    assert choose_backup(records, NOW).point_in_time == NOW - timedelta(days=1)
    with pytest.raises(BackupMissing, match="no complete backup"):
        choose_backup([record(NOW, complete=False)], None)


def test_a_truncated_dump_is_still_chosen_so_its_restore_fails_loudly() -> None:
    good = record(NOW - timedelta(days=1))
    torn = BackupRecord(**{**record(NOW).__dict__, "dump_size": 999})
    assert good.size_matches and not torn.size_matches
    assert choose_backup([good, torn], NOW) is torn, "no silent fall-back to older data"
    missing = BackupRecord(**{**record(NOW).__dict__, "dump_key": None, "dump_size": None})
    assert not missing.complete, "a manifest without its dump is not a backup"


def test_timestamp_in_another_zone_compares_in_utc() -> None:
    records = [record(datetime(2025, 11, 19, 9, 30, tzinfo=UTC))]
    at_paris = parse_timestamp("2025-11-19 10:45:00+01:00")  # 09:45 UTC
    assert choose_backup(records, at_paris) is records[0]
    too_early = parse_timestamp("2025-11-19 10:15:00+01:00")  # 09:15 UTC
    with pytest.raises(BackupMissing):
        choose_backup(records, too_early)


def test_ties_prefer_verified_then_later_finished() -> None:
    at = NOW - timedelta(hours=5)
    plain = record(at, backup_id="a", finished_after_s=10)
    verified = record(at, backup_id="b", verified=True, finished_after_s=5)
    later = record(at, backup_id="c", finished_after_s=99)
    assert choose_backup([plain, verified, later], NOW).backup_id == "b"
    assert choose_backup([plain, later], NOW).backup_id == "c"
    assert choose_backup([later, plain], NOW).backup_id == "c", "input order does not matter"


def test_none_old_enough_lists_the_nearest() -> None:
    records = daily(6)
    with pytest.raises(BackupMissing) as info:
        choose_backup(records, NOW - timedelta(days=30), nearest=2)
    message = str(info.value)
    assert "no complete backup at or before 2025-10-31T12:00:00+00:00" in message
    oldest = [backup_id_for(NOW - timedelta(days=d)) for d in (5, 4)]
    assert all(bid in message for bid in oldest)
    assert backup_id_for(NOW - timedelta(days=3)) not in message, "only the nearest are listed"


# --- part sizes ---------------------------------------------------------------------------


def test_part_size_respects_s3_minimum_and_grows_with_the_estimate() -> None:
    assert choose_part_size(0) == 8 * MIB
    assert choose_part_size(10 * 2**30) == 8 * MIB
    huge = choose_part_size(4 * 2**40)  # 4 TiB
    assert huge > 8 * MIB and huge % MIB == 0
    assert choose_part_size(1, minimum=1) == S3_MIN_PART


def test_growing_parts_keep_any_plausible_dump_under_10000_parts() -> None:
    base = choose_part_size(50 * 2**30)  # a 50 GiB estimate
    assert part_size_for(1, base) == base
    assert part_size_for(1000, base) == base
    assert part_size_for(1001, base) == 2 * base
    assert max_upload_bytes(8 * MIB) > 5 * 2**40, "8 MiB base: > 5 TiB fits in 10,000 parts"
    total, parts = 0, 0
    while total < 2 * 2**40:  # a 2 TiB dump, far above the estimate
        parts += 1
        total += part_size_for(parts, base)
    assert parts < S3_MAX_PARTS
    with pytest.raises(ValueError):
        part_size_for(0, base)


def test_dump_estimate_uses_the_last_ratio() -> None:
    assert estimate_dump_bytes(1000) == 1000
    assert estimate_dump_bytes(2000, [(100, 1000), (300, 1000)]) == 600
    assert estimate_dump_bytes(2000, [(300, 1000), (0, 0)]) == 600


# --- manifests and the drill ----------------------------------------------------------------


def test_manifest_round_trips_and_rejects_garbage() -> None:
    manifest = record(NOW).manifest
    assert manifest is not None
    here = manifest.dump_key.replace("dump.pgc", "manifest.json")
    assert manifest_from_dict(manifest_to_dict(manifest), here) == manifest
    broken = manifest_to_dict(manifest)
    del broken["sha256"]
    with pytest.raises(ConfigurationError, match="malformed backup manifest"):
        manifest_from_dict(broken, here)
    broken = {**manifest_to_dict(manifest), "fingerprint": {"schema_hash": "x", "tables": [1]}}
    with pytest.raises(ConfigurationError, match="malformed backup manifest"):
        manifest_from_dict(broken, here)


def test_manifest_names_its_dump_relative_to_itself() -> None:
    manifest = record(NOW).manifest
    assert manifest is not None
    data = manifest_to_dict(manifest)
    assert data["dump"] == "dump.pgc" and data["version"] == 2
    assert data["dump_key"] == manifest.dump_key, "kept for readers before version 2"
    bid = manifest.backup_id
    copied = manifest_from_dict(data, f"elsewhere/app/{bid}/manifest.json")
    assert copied.dump_key == f"elsewhere/app/{bid}/dump.pgc", "resolved beside the manifest"
    assert manifest_from_dict(data, "manifest.json").dump_key == "dump.pgc"
    for bad in ("../other/dump.pgc", "sub/dump.pgc", "", ".."):
        with pytest.raises(ConfigurationError, match="not a name beside it"):
            manifest_from_dict({**data, "dump": bad}, f"backups/app/{bid}/manifest.json")


def test_a_manifest_with_an_absolute_dump_key_still_reads() -> None:
    """Version 1 wrote only the absolute key: read as the same name beside the manifest."""
    manifest = record(NOW).manifest
    assert manifest is not None
    bid = manifest.backup_id
    legacy = {k: v for k, v in manifest_to_dict(manifest).items() if k != "dump"}
    legacy["version"] = 1
    in_place = manifest_from_dict(legacy, f"backups/app/{bid}/manifest.json")
    assert in_place.dump_key == manifest.dump_key and in_place.version == 1
    moved = manifest_from_dict(legacy, f"copy/prefix/app/{bid}/manifest.json")
    assert moved.dump_key == f"copy/prefix/app/{bid}/dump.pgc"
    other = {**legacy, "dump_key": "backups/app/20250101T000000000000Z/dump.pgc"}
    with pytest.raises(ConfigurationError, match="not in the folder of backup"):
        manifest_from_dict(other, f"backups/app/{bid}/manifest.json")


def test_a_manifest_newer_than_this_code_is_not_read() -> None:
    manifest = record(NOW).manifest
    assert manifest is not None
    with pytest.raises(ConfigurationError, match="manifest version 3 is newer"):
        manifest_from_dict({**manifest_to_dict(manifest), "version": 3}, "a/b/manifest.json")


def test_a_manifest_of_another_database_or_backup_is_not_complete() -> None:
    good = record(NOW)
    assert good.manifest is not None and good.complete and not good.foreign_manifest
    other_db = BackupRecord(
        **{**good.__dict__, "manifest": Manifest(**{**good.manifest.__dict__, "database": "x"})}
    )
    assert not other_db.complete and "database 'x'" in other_db.foreign_manifest
    other_id = BackupRecord(**{**good.__dict__, "backup_id": "20250101T000000000000Z"})
    assert not other_id.complete and "of backup" in other_id.foreign_manifest
    with pytest.raises(BackupMissing):
        choose_backup([other_db, other_id], None)


def test_drill_verdict_flags_a_backup_older_than_the_threshold() -> None:
    ok = judge_drill(42.5, NOW - timedelta(hours=20), NOW, timedelta(hours=26))
    assert (ok.rpo_s, ok.rto_s, ok.backup_too_old) == (72000.0, 42.5, False)
    late = judge_drill(10, NOW - timedelta(hours=30), NOW, timedelta(hours=26))
    assert late.backup_too_old and "30.0 h old" in late.messages[0]


def test_decisions_import_no_vendor_sdk() -> None:
    import subprocess
    import sys

    code = (
        "import sys, decisions.backups, decisions.parts, decisions.retention; "
        "print(sorted(m for m in ('boto3', 'botocore', 'psycopg', 'prefect', 'kubernetes')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
