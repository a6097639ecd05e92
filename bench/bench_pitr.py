"""Point-in-time recovery benchmark: the RPO under steady writes, the WAL archived per hour,
and restore-to-time of the 1 GB benchmark database beside the logical restore's.

1. RPO (``bench/pitr_writes.py``): a row committed every 0.2 s into a database of its own for
   ``--window-s``; every ``--sample-s`` the S3 archive is listed and the RPO at that moment is
   the age of the newest row whose WAL is all archived. ``rpo_s_max``/``rpo_s_p95`` with the
   server's ``archive_timeout``; the WAL volume is the segments archived in the window
   (compressed bytes in S3, and raw at 16 MiB each) extrapolated to an hour.
2. Restore: a base backup of the cluster (``base-backup``, in-process, retention a dry run),
   marker rows in ``bench_data_1x`` (three, the moment T, two more), the WAL archived; then
   ``restore-to-time`` to T and the logical ``restore-database`` of a dump made by
   ``backup-database`` after the markers, each in a child whose peak RSS is measured. The
   figures count only if the point-in-time copy holds exactly the three markers before T
   (else the bench fails). Everything it made (scratch databases, the base backup, the dump,
   the writes' database, the markers) is removed at the end; the archived WAL stays.

It uses the stack's own S3 (the WAL archive is there), the ``backups`` store of
``opsflows bootstrap`` (saved again here). The last line printed is the JSON.

    uv run python -m bench.bench_pitr [--window-s 180] [--sample-s 0.5] [--no-restore]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import (
    MB,
    admin_target,
    drop_database,
    emit,
    ensure_bench_db,
    log,
    run_child,
    s3_client,
    stack_info,
)
from bench.pitr_writes import ArchiveWatch, measure_rpo, switch_and_wait
from devstack.stack import BACKUP_BUCKET, PITR_CLUSTER, StackInfo, stack_secrets

WRITES_DB = "bench_pitr_writes"
MARKS = "bench_pitr_marks"
#: Markers committed before and after the moment restored to.
BEFORE, AFTER = (1, 2, 3), (4, 5)
GAP_S = 0.5
DB_BLOCK, ADMIN_BLOCK = "bench-pitr-db", "bench-pitr-admin"


def backups_store() -> Any:
    from blocks.storage import BackupStore
    from procedures.operation import BACKUPS

    return BackupStore.load(BACKUPS)


def rpo_phase(info: StackInfo, admin: Any, window_s: float, sample_s: float) -> dict[str, Any]:
    from tasks.pitr_store import wal_prefix

    prefix = wal_prefix(backups_store(), PITR_CLUSTER)
    client = s3_client(info.aws_endpoint_url)
    drop_database(admin, WRITES_DB)
    with psycopg.connect(admin.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(WRITES_DB)))
    log(f"RPO: a row every 0.2 s for {window_s:g} s, the S3 archive listed every {sample_s:g} s")
    try:
        result = measure_rpo(
            admin.conninfo("postgres"),
            admin.conninfo(WRITES_DB),
            lambda after: ArchiveWatch(client, BACKUP_BUCKET, prefix, after),
            window_s,
            sample_s,
        )
    finally:
        drop_database(admin, WRITES_DB)
    figures = result.summary()
    log(
        f"RPO max {figures['rpo_s_max']} s, p95 {figures['rpo_s_p95']} s (archive_timeout "
        f"{figures['archive_timeout_s']} s); {figures['wal_segments']} segments archived, "
        f"{figures['wal_bytes_per_hour'] / MB:.1f} MiB/h compressed, "
        f"{figures['wal_raw_bytes_per_hour'] / MB:.0f} MiB/h raw"
    )
    return figures


def _marks(admin: Any, database: str) -> list[int]:
    with psycopg.connect(admin.conninfo(database), autocommit=True) as conn:
        rows = conn.execute(f"SELECT id FROM {MARKS} ORDER BY id").fetchall()
    return [int(r[0]) for r in rows]


def write_marks(admin: Any, database: str) -> datetime:
    """Commit the markers around a moment; that moment (between the last before and the
    first after, ``GAP_S`` from each)."""
    with psycopg.connect(admin.conninfo(database), autocommit=True) as conn:
        for i in BEFORE:
            conn.execute(f"INSERT INTO {MARKS} (id) VALUES (%s)", (i,))
            time.sleep(GAP_S)
        moment = datetime.now(UTC)
        time.sleep(GAP_S)
        for i in AFTER:
            conn.execute(f"INSERT INTO {MARKS} (id) VALUES (%s)", (i,))
            time.sleep(0.1)
    return moment


def check_copy(admin: Any, scratch: str, want: tuple[int, ...], what: str) -> None:
    got = _marks(admin, scratch)
    if got != list(want):
        raise SystemExit(
            f"{what} in {scratch} holds markers {got}, not {list(want)}: the restore is wrong "
            "and its time does not count"
        )


def save_targets(info: StackInfo, database: str) -> None:
    """Superuser PostgresTargets on the bench database (the flows' database and admin)."""
    admin_target(info, database).save(DB_BLOCK, overwrite=True)
    admin_target(info, database).save(ADMIN_BLOCK, overwrite=True)


def cluster_mb(admin: Any) -> float:
    with psycopg.connect(admin.conninfo("postgres"), autocommit=True) as conn:
        row: Any = conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()
    return float(row[0]) / MB


def restore_phase(info: StackInfo, admin: Any) -> dict[str, Any]:
    from flows.base_backup import base_backup
    from tasks.pitr_store import delete_pitr_objects

    database, db_mb = ensure_bench_db(admin, "1x")
    save_targets(info, database)
    store = backups_store()
    scratches: list[str] = []
    backup_id = ""
    with psycopg.connect(admin.conninfo(database), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {MARKS}")
        conn.execute(f"CREATE TABLE {MARKS} (id int PRIMARY KEY)")
    try:
        whole = cluster_mb(admin)
        log(f"base backup of the cluster ({whole:.0f} MB, {database} {db_mb:.0f} MB)")
        started = time.monotonic()
        base = base_backup(admin_database=ADMIN_BLOCK, reason="bench", dry_run_retention=True)
        base_s = time.monotonic() - started
        backup_id = str(base["backup_id"])
        log(f"base backup {backup_id}: {base_s:.1f} s, {base['size_bytes'] / MB:.0f} MiB")
        moment = write_marks(admin, database)
        switch_and_wait(admin.conninfo("postgres"))
        if _marks(admin, database) != [*BEFORE, *AFTER]:
            raise SystemExit(f"the markers were not all written to {database}")
        log(f"restore-to-time {moment.isoformat()} (markers {BEFORE} before, {AFTER} after)")
        pitr, pitr_rss = run_child("bench.bench_pitr", "--child-pitr", moment.isoformat())
        scratches.append(str(pitr["scratch"]))
        check_copy(admin, str(pitr["scratch"]), BEFORE, "the point-in-time copy")
        drop_database(admin, scratches.pop())
        log(
            f"restore-to-time {pitr['flow_s']:.1f} s (recovery {pitr['recovery_s']:.1f} s, copy "
            f"{pitr['copy_s']:.1f} s, {pitr['wal_files']} WAL files, {pitr['checks']} checks), "
            f"RSS {pitr_rss:.0f} MB"
        )
        log("logical: the dump to restore (backup-database, untimed)")
        run_child("bench.bench_backup", "--child", DB_BLOCK, "backups")
        logical, logical_rss = run_child(
            "bench.bench_restore", "--child", DB_BLOCK, ADMIN_BLOCK, "backups"
        )
        scratches.append(str(logical["scratch"]))
        check_copy(admin, str(logical["scratch"]), (*BEFORE, *AFTER), "the logical restore")
        drop_database(admin, scratches.pop())
        log(f"restore-database {logical['flow_s']:.1f} s, RSS {logical_rss:.0f} MB")
    finally:
        for name in scratches:
            drop_database(admin, name)
        with psycopg.connect(admin.conninfo(database), autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {MARKS}")
        if backup_id:
            delete_pitr_objects.fn(store, PITR_CLUSTER, [backup_id], [])
        _delete_dumps(info, store.key(database) + "/")
    pitr_s, logical_s = float(pitr["flow_s"]), float(logical["flow_s"])
    return {
        "pitr_restore_s": round(pitr_s, 2),
        "pitr_recovery_s": round(float(pitr["recovery_s"]), 2),
        "pitr_copy_s": round(float(pitr["copy_s"]), 2),
        "pitr_wal_files": int(pitr["wal_files"]),
        "logical_restore_s": round(logical_s, 2),
        "ratio": round(pitr_s / logical_s, 3),
        "peak_rss_mb": round(pitr_rss, 1),
        "logical_peak_rss_mb": round(logical_rss, 1),
        "db_mb": round(db_mb),
        "cluster_mb": round(whole),
        "base_backup_s": round(base_s, 2),
        "base_backup_mb": round(int(base["size_bytes"]) / MB),
    }


def _delete_dumps(info: StackInfo, prefix: str) -> None:
    """The bench database's dumps (the benchmark's own; nothing else writes there)."""
    client = s3_client(info.aws_endpoint_url)
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BACKUP_BUCKET, Prefix=prefix
    ):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=BACKUP_BUCKET, Key=obj["Key"])


def child_pitr(at: str) -> None:
    """Run restore-to-time once in this process and print its timing and phases."""
    from flows.restore_to_time import restore_to_time

    started = time.monotonic()
    out = restore_to_time(at=at, database=DB_BLOCK, admin_database=ADMIN_BLOCK, reason="bench")
    emit(
        {
            "flow_s": time.monotonic() - started,
            "recovery_s": out["recovery_s"],
            "copy_s": out["copy_s"],
            "wal_files": out["wal_files_fetched"],
            "scratch": out["scratch_database"],
            "checks": out["verification"]["evaluated"],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pitr", description=__doc__)
    parser.add_argument("--window-s", type=float, default=180.0, help="steady writes (180 s)")
    parser.add_argument("--sample-s", type=float, default=0.5, help="RPO sample interval (0.5 s)")
    parser.add_argument("--no-restore", action="store_true", help="only the RPO and WAL part")
    args = parser.parse_args()
    if args.window_s < 2 * args.sample_s or args.sample_s <= 0:
        parser.error("--window-s must be at least two samples long")
    from devstack.bootstrap import bootstrap

    info = stack_info()
    admin = admin_target(info)
    bootstrap(info, stack_secrets(Path(info.state_dir)))
    started = time.monotonic()
    result: dict[str, Any] = {"bench": "pitr"}
    result.update(rpo_phase(info, admin, args.window_s, args.sample_s))
    if not args.no_restore:
        result.update(restore_phase(info, admin))
    result["bench_s"] = round(time.monotonic() - started, 1)
    emit(result)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child-pitr":
        child_pitr(sys.argv[2])
    else:
        main()
