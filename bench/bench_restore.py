"""Restore benchmark: the restore flow (with verification) against download → pg_restore.

naive: boto3 ``download_fileobj`` of a ``pg_dump -Fc`` archive straight into ``pg_restore``
(no verification). flow: ``restore_database`` (newest backup, SHA-256 while streaming,
scratch database, Great Expectations verification), run in a child process whose peak RSS
is measured. Backups for both are made first (untimed) in a private moto server; the last
line printed is the JSON.

    uv run python -m bench.bench_restore
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from psycopg import sql

from bench.bench_backup import raw_backup_key
from bench.common import (
    BUCKET,
    admin_target,
    drop_database,
    emit,
    ensure_bench_db,
    log,
    pgbin,
    private_moto,
    run_child,
    s3_client,
    save_blocks,
    size_summary,
    stack_info,
)


def raw_restore(admin: Any, key: str, endpoint: str, target_db: str) -> float:
    """The naive restore into a new database; seconds."""
    import psycopg

    client = s3_client(endpoint)
    started = time.monotonic()
    with psycopg.connect(admin.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target_db)))
    env = {**os.environ, **admin.libpq_env(), "PGDATABASE": target_db}
    proc = subprocess.Popen(
        [pgbin("pg_restore"), f"--dbname={target_db}"], stdin=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None
    client.download_fileobj(BUCKET, key, proc.stdin)
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit("raw pg_restore failed")
    return time.monotonic() - started


def child(database: str, admin: str, store: str) -> None:
    """Run the restore flow once in this process and print its timing."""
    from bench.common import emit as say
    from flows.restore import restore_database

    started = time.monotonic()
    out = restore_database(database=database, admin_database=admin, store=store, reason="bench")
    say(
        {
            "flow_s": time.monotonic() - started,
            "scratch": out["scratch_database"],
            "checks": out["verification"]["evaluated"],
        }
    )


def main() -> None:
    info = stack_info()
    admin = admin_target(info)
    results: dict[str, dict[str, float]] = {}
    with private_moto(info) as endpoint:
        for label in ("1x", "2x"):
            database, db_mb = ensure_bench_db(admin, label)
            blocks = save_blocks(info, database, endpoint)
            log(f"{label}: making the backups to restore (untimed)")
            key = raw_backup_key(admin, database, endpoint)
            run_child("bench.bench_backup", "--child", blocks.database, blocks.store)
            copy = f"{database}_rawrestore"
            drop_database(admin, copy)
            log(f"{label}: raw download -> pg_restore")
            raw_s = raw_restore(admin, key, endpoint, copy)
            drop_database(admin, copy)
            log(f"{label}: raw {raw_s:.1f} s; now the flow")
            flow, rss = run_child(
                "bench.bench_restore", "--child", blocks.database, blocks.admin, blocks.store
            )
            drop_database(admin, str(flow["scratch"]))
            log(f"{label}: flow {flow['flow_s']:.1f} s ({flow['checks']} checks), RSS {rss:.0f} MB")
            results[label] = {
                "raw_s": raw_s,
                "flow_s": float(flow["flow_s"]),
                "rss": rss,
                "db_mb": db_mb,
            }
    one, two = results["1x"], results["2x"]
    emit(size_summary("restore", one, two))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
