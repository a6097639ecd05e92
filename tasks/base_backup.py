"""A physical base backup of the whole cluster, streamed into S3: ``pg_basebackup -Ft -D -``.

No temporary file: pg_basebackup writes the tar of the data directory into a pipe, ``zstd``
compresses it in its own process, and the multipart upload takes it from there (SHA-256 on
the way, memory a few parts). ``-X none``: the WAL the backup needs is the archive's, and the
server waits until the backup's last segment is archived before pg_basebackup ends, so when
this returns the WAL range it names is in the store (the caller checks that it is).
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from opsflows import retry
from opsflows.errors import PermanentError, scrub
from opsflows.settings import get_settings
from tasks.multipart import MultipartUpload, UploadResult
from tasks.pipes import (
    StallWatch,
    StderrTails,
    cpu_ticks,
    kill_group,
    pg_tool,
    program,
    reap,
    spawn,
    stop_all,
    written_bytes,
)
from tasks.postgres import connect
from tasks.storage import aws_errors

_PIPE_SIZE = 1024 * 1024


@dataclass(frozen=True)
class BaseBackupResult:
    upload: UploadResult
    label: str
    started_at: datetime
    finished_at: datetime
    server_version: str


@task(name="archiving status", **retry.NETWORK)
def archiving_status(admin: PostgresTarget) -> dict[str, Any]:
    """``archive_mode``, ``archive_command`` set or not, ``pg_stat_archiver`` and the size of
    every database of the cluster."""
    with connect(admin) as conn:
        row = conn.execute(
            "SELECT current_setting('archive_mode'), current_setting('archive_command') <> '',"
            " current_setting('server_version'), current_setting('server_version_num')::int,"
            " a.archived_count, a.last_archived_wal, a.last_archived_time, a.failed_count,"
            " a.last_failed_wal, a.last_failed_time,"
            " (SELECT sum(pg_database_size(oid))::bigint FROM pg_database)"
            " FROM pg_stat_archiver a"
        ).fetchone()
    assert row is not None
    names = (
        "archive_mode",
        "has_command",
        "server_version",
        "server_version_num",
        "archived_count",
        "last_archived_wal",
        "last_archived_time",
        "failed_count",
        "last_failed_wal",
        "last_failed_time",
        "cluster_bytes",
    )
    return dict(zip(names, row, strict=True))


@task(name="base backup to S3", **retry.HEAVY)
def base_backup_to_s3(
    admin: PostgresTarget,
    store: BackupStore,
    key: str,
    label: str,
    *,
    part_size: int,
    level: int = 3,
) -> BaseBackupResult:
    """Stream ``pg_basebackup`` of ``admin``'s cluster, zstd-compressed, into ``key``.

    ``label`` is written into the backup history file the server archives, which names the
    backup's WAL range (:func:`tasks.pitr_store.find_backup_history`). A stream that stops
    moving for ``OPSFLOWS_DUMP_STALL_S`` (the server waiting for a WAL
    archive that fails, a hung network) kills the tools and aborts the upload.
    """
    logger = get_run_logger()
    settings = get_settings()
    status = archiving_status.fn(admin)
    version_num = int(status["server_version_num"])
    secret = admin.password.get_secret_value()
    argv = [
        pg_tool("pg_basebackup", version_num),
        "--pgdata=-",
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
        f"--label={label}",
        "--no-password",
        f"--dbname={admin.tool_dbname()}",
    ]
    env = {"PATH": "/usr/bin:/bin", **admin.libpq_env()}
    started = datetime.now(UTC)
    logger.info("base backup of %s to %s", admin.describe(), key)
    basebackup = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert basebackup.stdout is not None
    zstd = spawn(
        ["zstd", f"-{level}", "-T0", "-q", "-c"],
        stdin=basebackup.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    basebackup.stdout.close()
    assert zstd.stdout is not None
    procs = [basebackup, zstd]
    with contextlib.suppress(OSError):
        fcntl.fcntl(zstd.stdout.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    stderr = StderrTails(procs)
    watch = StallWatch(
        f"the base backup of {admin.describe()}",
        settings.dump_stall_s,
        hint="pg_basebackup stopped sending data (the server waits for a WAL archive that "
        "fails, or the network hung); it was killed and the upload aborted. Check "
        "pg_stat_archiver and the server, then run again",
        counters=[lambda: written_bytes(basebackup), lambda: cpu_ticks(basebackup)],
    )

    def stop() -> None:
        for p in procs:
            kill_group(p)

    client = store.s3_client()
    try:
        with MultipartUpload(client, store.bucket, key) as upload:
            size, digest = upload.feed(
                zstd.stdout,
                part_size,
                stop_source=stop,
                watch=watch,
                concurrency=settings.upload_concurrency,
            )
            codes = reap(procs, settings.process_exit_s, "the end of the base backup stream")
            for i, (p, code) in enumerate(zip(procs, codes, strict=True)):
                if code != 0:
                    raise PermanentError(
                        f"{program(p)} failed (exit {code}): {scrub(stderr.text(i), secret)}",
                        hint="see the message; the upload was aborted",
                    )
            upload.complete()
    finally:
        stop_all(procs, settings.process_exit_s)
    with aws_errors(f"tag {key}"):
        client.put_object_tagging(
            Bucket=store.bucket, Key=key, Tagging={"TagSet": [{"Key": "sha256", "Value": digest}]}
        )
    logger.info("base backup uploaded: %.1f MiB in %d parts", size / 2**20, len(upload.parts))
    return BaseBackupResult(
        upload=UploadResult(key=key, size_bytes=size, sha256=digest, parts=len(upload.parts)),
        label=label,
        started_at=started,
        finished_at=datetime.now(UTC),
        server_version=str(status["server_version"]),
    )
