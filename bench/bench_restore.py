"""Restore benchmark: the restore flow (with verification) against two raw pipelines.

naive: boto3 ``download_fileobj`` of a ``pg_dump -Fc`` archive straight into ``pg_restore``
(no verification). best: the flow's own zstd backup downloaded with parallel ranged GETs
(``download_fileobj`` with ``upload_concurrency`` parts at once) into ``zstd -d`` and
``pg_restore`` (``best_s``), and, where the disk allows, downloaded to a local file,
decompressed and restored with ``pg_restore -j 2`` (``best_file_s``; stdin cannot do -j).
flow: ``restore_database`` (newest backup, SHA-256 while streaming, scratch database, Great
Expectations verification), run in a child process whose peak RSS is measured. Backups are
made first (untimed) in a private moto server; the last line printed is the JSON
(``ratio``: flow / naive, ``ratio_best``: flow / the faster best pipeline).

    uv run python -m bench.bench_restore
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg import sql

from bench.bench_backup import raw_backup_key
from bench.common import (
    BUCKET,
    admin_target,
    best_summary,
    drop_database,
    emit,
    ensure_bench_db,
    log,
    pgbin,
    preload_like_serve,
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


def _create(admin: Any, target_db: str) -> None:
    import psycopg

    with psycopg.connect(admin.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target_db)))


def _transfer() -> Any:
    from boto3.s3.transfer import TransferConfig

    from opsflows.settings import get_settings

    return TransferConfig(
        multipart_threshold=8 * 2**20,
        multipart_chunksize=8 * 2**20,
        max_concurrency=get_settings().upload_concurrency,
    )


def best_restore(admin: Any, key: str, endpoint: str, target_db: str) -> float:
    """Parallel ranged download -> zstd -d -> pg_restore into a new database; seconds."""
    client = s3_client(endpoint)
    started = time.monotonic()
    _create(admin, target_db)
    env = {**os.environ, **admin.libpq_env(), "PGDATABASE": target_db}
    unzstd = subprocess.Popen(
        ["zstd", "-d", "-q", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    restore = subprocess.Popen(
        [pgbin("pg_restore"), f"--dbname={target_db}"], stdin=unzstd.stdout, env=env
    )
    assert unzstd.stdin is not None and unzstd.stdout is not None
    unzstd.stdout.close()
    client.download_fileobj(BUCKET, key, unzstd.stdin, Config=_transfer())
    unzstd.stdin.close()
    if unzstd.wait() != 0 or restore.wait() != 0:
        raise SystemExit("best raw restore failed")
    return time.monotonic() - started


def best_file_restore(
    admin: Any, key: str, endpoint: str, target_db: str, size: int
) -> float | None:
    """Parallel download to a file, zstd -d to a file, pg_restore -j 2; seconds (None: no
    room for the files, about 4x the compressed size)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    try:
        if shutil.disk_usage(folder).free < 4 * size + 2**30:
            return None
        client = s3_client(endpoint)
        started = time.monotonic()
        _create(admin, target_db)
        packed, dump = folder / "dump.zst", folder / "dump.pgc"
        client.download_file(BUCKET, key, str(packed), Config=_transfer())
        subprocess.run(["zstd", "-d", "-q", "-T0", str(packed), "-o", str(dump)], check=True)
        env = {**os.environ, **admin.libpq_env(), "PGDATABASE": target_db}
        subprocess.run(
            [pgbin("pg_restore"), "-j", "2", f"--dbname={target_db}", str(dump)],
            env=env,
            check=True,
        )
        return time.monotonic() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def child(database: str, admin: str, store: str) -> None:
    """Run the restore flow once in this process and print its timing."""
    from bench.common import emit as say
    from flows.restore import restore_database

    preload_like_serve()
    started = time.monotonic()
    out = restore_database(database=database, admin_database=admin, store=store, reason="bench")
    say(
        {
            "flow_s": time.monotonic() - started,
            "scratch": out["scratch_database"],
            "checks": out["verification"]["evaluated"],
            "phases": out["phases"],
        }
    )


def main() -> None:
    info = stack_info()
    admin = admin_target(info)
    results: dict[str, dict[str, float]] = {}
    phases: dict[str, dict[str, float]] = {}
    with private_moto(info) as endpoint:
        for label in ("1x", "2x"):
            database, db_mb = ensure_bench_db(admin, label)
            blocks = save_blocks(info, database, endpoint)
            log(f"{label}: making the backups to restore (untimed)")
            key = raw_backup_key(admin, database, endpoint)
            made, _ = run_child("bench.bench_backup", "--child", blocks.database, blocks.store)
            copy = f"{database}_rawrestore"
            drop_database(admin, copy)
            log(f"{label}: raw download -> pg_restore")
            raw_s = raw_restore(admin, key, endpoint, copy)
            drop_database(admin, copy)
            log(f"{label}: raw {raw_s:.1f} s; now the best pipelines")
            best_s = best_restore(admin, str(made["key"]), endpoint, copy)
            drop_database(admin, copy)
            file_s = best_file_restore(
                admin, str(made["key"]), endpoint, copy, int(made["size_bytes"])
            )
            drop_database(admin, copy)
            shown = "no room" if file_s is None else f"{file_s:.1f} s"
            log(f"{label}: best stream {best_s:.1f} s, best file (-j 2) {shown}; now the flow")
            flow, rss = run_child(
                "bench.bench_restore", "--child", blocks.database, blocks.admin, blocks.store
            )
            drop_database(admin, str(flow["scratch"]))
            log(f"{label}: flow {flow['flow_s']:.1f} s ({flow['checks']} checks), RSS {rss:.0f} MB")
            for name, seconds in flow["phases"].items():
                log(f"{label}:   {name}: {seconds:.2f} s")
            phases[label] = flow["phases"]
            results[label] = {
                "best_s": min(best_s, file_s or best_s),
                "best_stream_s": best_s,
                "best_file_s": file_s or 0.0,
                "raw_s": raw_s,
                "flow_s": float(flow["flow_s"]),
                "rss": rss,
                "db_mb": db_mb,
            }
    one, two = results["1x"], results["2x"]
    emit(
        {
            **size_summary("restore", one, two),
            **best_summary(one, two),
            "best_stream_s": round(one["best_stream_s"], 2),
            "best_file_s": round(one["best_file_s"], 2) or None,
            "best_stream_s_2x": round(two["best_stream_s"], 2),
            "best_file_s_2x": round(two["best_file_s"], 2) or None,
            "phases": phases["1x"],
            "phases_2x": phases["2x"],
        }
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
