"""Point-in-time recovery through the real stack: WAL archived to S3 (moto) by the live
server, base backups, restore to a second between two writes, and its faults."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack.stack import BACKUP_BUCKET
from flows.backup import backup_database
from flows.base_backup import base_backup
from flows.restore_drill import restore_drill
from flows.restore_to_time import restore_to_time
from opsflows.errors import ConfigurationError, PermanentError
from tests.backup_support import BackupEnv, backup_env
from tests.pitr_support import (
    archive_now,
    create_ticks,
    failing_archive,
    ticks,
    write_around_a_moment,
)

WAL_PREFIX = "backups/pitr/main/wal/"


@pytest.fixture(scope="module")
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    """A database of its own with the ticks table, and a base backup of the cluster after it."""
    with backup_env(stack, "pitr") as made:
        create_ticks(made.app.conninfo())
        done = base_backup(admin_database=made.admin_block, reason="e2e pitr")
        assert done["start_wal"] <= done["stop_wal"]
        yield made


def _restore(env: BackupEnv, at: str, **kw: Any) -> Any:
    return restore_to_time(
        at=at, database=env.db_block, admin_database=env.admin_block, reason="e2e", **kw
    )


def _scratch(env: BackupEnv) -> list[str]:
    return [d for d in env.databases() if d != env.dbname]


def test_a_restore_to_a_second_has_every_row_before_it_and_none_after(env: BackupEnv) -> None:
    written = write_around_a_moment(env.app.conninfo())
    archive_now(env.admin.conninfo())
    result = _restore(env, written.target.isoformat())
    scratch = result["scratch_database"]
    try:
        restored = ticks(env.app.conninfo(scratch))
        live = ticks(env.app.conninfo())
        assert [i for i, _ in restored] == [i for i, at in live if at <= written.target]
        assert restored[-1][0] == written.before
        assert all(at <= written.target for _, at in restored)
        assert all(at > written.target for i, at in live if i > written.before)
        assert result["verification"]["success"] and result["verification"]["evaluated"] > 0
        assert result["tables"]["public.ticks"] == len(restored)
        assert result["wal_files_fetched"] >= 1 and result["rto_s"] > 0
        # The live database is untouched: every row is still there, nothing was renamed.
        assert len(live) == written.total and not result["replaced_live"]
        assert env.dbname in env.databases()
    finally:
        env.sql(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)', database="postgres")


def test_a_moment_before_the_first_base_backup_is_refused_with_the_range(
    env: BackupEnv,
) -> None:
    before = _scratch(env)
    with pytest.raises(ConfigurationError, match="possible: ") as err:
        _restore(env, "2020-01-01 00:00:00")
    assert "cannot restore to 2020-01-01 00:00:00 UTC" in err.value.message
    assert _scratch(env) == before


def test_a_corrupted_segment_in_s3_is_named_and_nothing_is_left(env: BackupEnv) -> None:
    """The segment holding the target's writes is replaced in S3 by other bytes (its recorded
    SHA-256 kept): recovery stops there, the run names it, the scratch database and the
    scratch instance are gone, the live database is as it was; the segment put back, the
    same restore succeeds (nothing archived was lost)."""
    written = write_around_a_moment(env.app.conninfo(), rows_before=5, rows_after=5)
    archive_now(env.admin.conninfo())
    key = f"{WAL_PREFIX}{written.segment}.zst"
    s3 = env.client
    original = s3.get_object(Bucket=BACKUP_BUCKET, Key=key)
    body, meta = original["Body"].read(), original["Metadata"]
    before = _scratch(env)
    s3.put_object(Bucket=BACKUP_BUCKET, Key=key, Body=b"\x28\xb5\x2f\xfd garbage", Metadata=meta)
    try:
        with pytest.raises(PermanentError, match=written.segment) as err:
            _restore(env, written.target.isoformat())
        assert "failed its check" in err.value.message
        assert _scratch(env) == before
        assert len(ticks(env.app.conninfo())) == written.total
    finally:
        s3.put_object(Bucket=BACKUP_BUCKET, Key=key, Body=body, Metadata=meta)
    result = _restore(env, written.target.isoformat())
    env.sql(
        f'DROP DATABASE IF EXISTS "{result["scratch_database"]}" WITH (FORCE)', database="postgres"
    )
    assert result["tables"]["public.ticks"] == written.before


def test_a_base_backup_is_refused_while_archiving_fails_and_nothing_is_lost(
    env: BackupEnv,
) -> None:
    """The newest archive attempt failed: the base backup refuses naming the WAL file, writes
    no manifest; once archiving works again the failed file is archived (nothing lost)."""
    from blocks.storage import BackupStore
    from tasks.pitr_store import list_base_backups

    store = BackupStore.load("backups")
    before = [b.backup_id for b in list_base_backups.fn(store, "main")]
    with failing_archive(env.admin.conninfo()) as failed:
        with pytest.raises(PermanentError, match="WAL archiving is failing") as err:
            base_backup(admin_database=env.admin_block, reason="e2e failing archive")
        assert failed in err.value.message
        assert [b.backup_id for b in list_base_backups.fn(store, "main")] == before
    archive_now(env.admin.conninfo())
    keys = {
        o["Key"]
        for o in env.client.list_objects_v2(
            Bucket=BACKUP_BUCKET, Prefix=f"{WAL_PREFIX}{failed[:16]}"
        ).get("Contents", [])
    }
    assert f"{WAL_PREFIX}{failed}.zst" in keys


def test_a_blank_moment_is_refused_before_anything_is_read(env: BackupEnv) -> None:
    before = _scratch(env)
    with pytest.raises(ConfigurationError, match="`at` is required"):
        _restore(env, " ")
    assert _scratch(env) == before


def test_the_drill_restores_everything_archived_and_records_its_rto_and_rpo(
    env: BackupEnv,
) -> None:
    """The weekly drill's point-in-time part: newest base backup plus every archived WAL
    file, verified, dropped; the achieved RPO is the age of the last replayed transaction."""
    written = write_around_a_moment(env.app.conninfo(), rows_before=2, rows_after=2)
    archive_now(env.admin.conninfo())
    backup_database(database=env.db_block, reason="e2e drill")
    try:
        started = datetime.now(UTC)
        result = restore_drill(database=env.db_block, admin_database=env.admin_block)
        assert result["pitr_rto_s"] > 0 and result["pitr_wal_files"] >= 1
        replayed = datetime.fromisoformat(result["pitr_last_replayed"])
        # Everything written before the switch was archived and replayed ...
        assert replayed >= written.target
        # ... and the RPO is measured from it, at the end of the drill.
        assert 0 <= result["pitr_rpo_s"] <= (datetime.now(UTC) - replayed).total_seconds()
        assert result["pitr_rpo_s"] >= (started - replayed).total_seconds()
        assert _scratch(env) == []
    finally:
        s3 = env.client
        listed = s3.list_objects_v2(Bucket=BACKUP_BUCKET, Prefix=f"backups/{env.dbname}/")
        for obj in listed.get("Contents", []):
            s3.delete_object(Bucket=BACKUP_BUCKET, Key=obj["Key"])
