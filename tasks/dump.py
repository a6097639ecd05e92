"""Dump a database straight into an S3 multipart upload, fingerprinted in the same snapshot.

No temporary file: ``pg_dump -Fc`` writes into a pipe, a reader thread cuts the stream into
parts (SHA-256 computed on the way) and hands them through a bounded queue to the uploader,
so memory is a few parts whatever the database size. The snapshot is exported from a
REPEATABLE READ transaction that stays open for the whole dump: ``pg_dump --snapshot`` reads
exactly what the fingerprint queries count (:mod:`tasks.fingerprint`). Any failure aborts the
multipart upload, so no orphan parts and no object are left behind. No wait is unbounded: a
stream that stops moving is judged stalled (:mod:`tasks.pipes`), which kills the tools and
aborts the upload too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from prefect import task
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.backups import Fingerprint
from decisions.phases import BUSY, CPU, Phase
from opsflows import retry
from opsflows.errors import (
    ConfigurationError,
    OpsError,
    PermanentError,
    Stalled,
    Throttled,
    scrub,
)
from opsflows.settings import Settings, get_settings
from tasks.fingerprint import Snapshot, exported_snapshot, fingerprint_in
from tasks.multipart import MultipartUpload, UploadResult
from tasks.phase_clock import PhaseClock
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
from tasks.postgres import sever
from tasks.storage import aws_errors, cleanup_call
from tasks.upload_progress import UploadProgress

_PIPE_SIZE = 1024 * 1024


@dataclass(frozen=True)
class DumpResult:
    """What ``dump_to_s3`` produced, for the manifest, and where its time went.

    ``phases`` start at seconds after ``origin`` (``time.monotonic()`` when the task began).
    """

    upload: UploadResult
    snapshot: Snapshot
    started_at: datetime
    finished_at: datetime
    fingerprint: Fingerprint
    compression: str
    origin: float = 0.0
    phases: tuple[Phase, ...] = ()


_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") or 100)


def parse_compression(spec: str) -> tuple[str, int]:
    """``"zstd:1"`` / ``"gzip:6"`` / ``"none"`` → (method, level); bad specs are config errors."""
    method, _, level = spec.partition(":")
    method = method.strip().lower()
    if method == "none":
        return "none", 0
    try:
        value = int(level) if level else (1 if method in {"zstd", "gzip"} else -1)
    except ValueError:
        value = -1
    if method == "zstd" and 1 <= value <= 19:
        return method, value
    if method == "gzip" and 0 <= value <= 9:
        return method, value
    raise ConfigurationError(
        f"unknown compression {spec!r}",
        hint='use "zstd:1".."zstd:19", "gzip:0".."gzip:9" or "none"',
    )


def effective_compression(spec: str) -> tuple[str, int]:
    """The compression to use: zstd needs the ``zstd`` program, else gzip:1 via pg_dump."""
    method, level = parse_compression(spec)
    if method == "zstd" and shutil.which("zstd") is None:
        get_run_logger().warning("zstd not installed; falling back to pg_dump's gzip level 1")
        return "gzip", 1
    return method, level


def _start_dump(
    argv: list[str], method: str, level: int, env: dict[str, str]
) -> tuple[list[subprocess.Popen[bytes]], IO[bytes]]:
    """Start pg_dump (and ``zstd`` behind it); the processes and the stream to upload.

    zstd runs as its own process fed by pg_dump's pipe, so compression never holds the
    GIL of the flow process and uses the second core. Each runs in its own process group.
    """
    gzip_level = level if method == "gzip" else 0
    dump = spawn(
        [*argv, f"--compress={gzip_level}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert dump.stdout is not None
    if method != "zstd":
        return [dump], dump.stdout
    zstd = spawn(
        ["zstd", f"-{level}", "-T0", "-q", "-c"],
        stdin=dump.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    dump.stdout.close()  # zstd owns the read end now: pg_dump sees EPIPE if zstd dies
    assert zstd.stdout is not None
    return [dump, zstd], zstd.stdout


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


@task(name="dump database to S3", **retry.HEAVY)
def dump_to_s3(
    target: PostgresTarget,
    store: BackupStore,
    key: str,
    *,
    part_size: int,
    compression: str = "zstd:1",
    expected_bytes: int = 0,
    database_bytes: int = 0,
) -> DumpResult:
    """Stream ``pg_dump -Fc`` of ``target`` into ``key``; fingerprint in the same snapshot.

    Every wait is bounded (``Settings``): the stream by progress (``dump_stall_s`` without
    a byte), table locks by ``--lock-wait-timeout``, the tools' exit by ``process_exit_s``
    and the fingerprint by ``fingerprint_timeout_s``. A stall kills pg_dump and zstd (with
    their process groups), aborts the multipart upload, cuts the snapshot session and
    raises ``Stalled``.

    Args:
        target: database to dump (credentials reach pg_dump through its environment).
        store: backup bucket.
        key: object key of the dump.
        part_size: first part size in bytes (parts grow every 1,000 to stay under 10,000).
        compression: ``"zstd:N"`` (pg_dump -Z0 piped through zstd; fast and compact),
            ``"gzip:N"`` (pg_dump's own) or ``"none"``.
        expected_bytes: expected dump size, for the progress artifact only.
        database_bytes: the database's size: above ``fingerprint_beside_bytes`` the
            fingerprint runs beside the dump, else after the stream, while S3 assembles
            the upload (a fingerprint that fails then removes the assembled object).
    """
    logger = get_run_logger()
    settings = get_settings()
    clock = PhaseClock()
    method, level = effective_compression(compression)
    client = store.s3_client()
    started = datetime.now(UTC)
    progress = UploadProgress("backup-upload", expected_bytes)
    secret = target.password.get_secret_value()
    began = clock.since()
    with exported_snapshot(target) as (conn, snap):
        clock.span("snapshot export", began)
        argv = [
            pg_tool("pg_dump", snap.server_version_num),
            "--format=custom",
            f"--snapshot={snap.snapshot_id}",
            f"--lock-wait-timeout={_ms(settings.pg_lock_wait_timeout_s)}",
            "--no-password",
            f"--dbname={target.tool_dbname()}",
        ]
        env = {"PATH": "/usr/bin:/bin", **target.libpq_env()}
        logger.info("dumping %s (snapshot %s) to %s", target.describe(), snap.snapshot_id, key)
        dump_began = clock.since()
        procs, stream = _start_dump(argv, method, level, env)
        with contextlib.suppress(OSError):
            fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        stderr = StderrTails(procs)
        watch = StallWatch(
            f"the dump of {target.describe()}",
            settings.dump_stall_s,
            hint="pg_dump stopped receiving data (a hung server, network or proxy); it was "
            "killed and the upload aborted. Check the server and the network, then run again",
            counters=[lambda: written_bytes(procs[0]), lambda: cpu_ticks(procs[0])],
        )

        def stop() -> None:
            for p in procs:
                kill_group(p)

        def fingerprint_timed() -> Fingerprint:
            began = clock.since()
            try:
                return fingerprint_in(target, conn, settings.fingerprint_timeout_s)
            finally:
                clock.span("fingerprint", began, detail="row counts and schema hash")

        pool = ThreadPoolExecutor(1, thread_name_prefix="fingerprint")
        beside = database_bytes > settings.fingerprint_beside_bytes
        fingerprint = pool.submit(fingerprint_timed) if beside else None
        try:
            with MultipartUpload(client, store.bucket, key) as upload:
                size, digest = upload.feed(
                    stream,
                    part_size,
                    progress,
                    stop_source=stop,
                    watch=watch,
                    concurrency=settings.upload_concurrency,
                )
                _tool_phases(clock, procs, dump_began, upload.times.read_s, method, level)
                codes = reap(procs, settings.process_exit_s, "the end of the dump stream")
                if fingerprint is not None and any(codes) and _failed(fingerprint):
                    # A failed fingerprint query ends the exporting transaction, which
                    # makes pg_dump fail too: report the cause, not the consequence.
                    fingerprint.result()
                for i, (p, code) in enumerate(zip(procs, codes, strict=True)):
                    if code != 0:
                        text = scrub(stderr.text(i), secret)
                        raise _tool_failed(program(p), target, code, text, settings)
                if fingerprint is not None:
                    waited = clock.since()
                    prints = _await(fingerprint, target, settings.fingerprint_timeout_s)
                    clock.span("fingerprint wait", waited, detail="after the stream ended")
                else:  # the snapshot is still held: the counts see what pg_dump saw
                    fingerprint = pool.submit(fingerprint_timed)
                completing = clock.since()
                try:
                    _complete(upload, digest)
                    clock.span("complete and tag", completing)
                    if not beside:
                        waited = clock.since()
                        prints = _await(fingerprint, target, settings.fingerprint_timeout_s)
                        clock.span("fingerprint wait", waited, detail="after the upload completed")
                except BaseException:
                    if upload.completed:
                        _remove(client, store.bucket, key)  # assembled, but not a backup
                    raise
        except BaseException:
            sever(conn)  # a session stuck on a hung peer must not hold the cleanup either
            raise
        finally:
            stop_all(procs, settings.process_exit_s)
            pool.shutdown(wait=False, cancel_futures=True)
    parts = len(upload.parts)
    times = upload.times
    clock.add("checksum", times.checksum_s, dump_began, BUSY, detail="SHA-256 of every part")
    clock.add(
        "upload",
        times.upload_wall_s,
        max(0.0, times.first_part_at - clock.origin),
        "wall",
        detail=f"{parts} part{'s' if parts != 1 else ''}, up to {times.concurrency} at once, "
        f"{times.upload_busy_s:.2f} s of part uploads",
    )
    progress.finish(size, parts)
    logger.info("uploaded %.1f MiB in %d parts, sha256 %s", size / 2**20, parts, digest)
    return DumpResult(
        upload=UploadResult(key=key, size_bytes=size, sha256=digest, parts=parts),
        snapshot=snap,
        started_at=started,
        finished_at=datetime.now(UTC),
        fingerprint=prints,
        compression=f"{method}:{level}",
        origin=clock.origin,
        phases=tuple(clock.phases),
    )


def _tool_phases(
    clock: PhaseClock,
    procs: list[subprocess.Popen[bytes]],
    began: float,
    read_s: float,
    method: str,
    level: int,
) -> None:
    """The dump stream (pg_dump's start to the last byte read), and each tool's CPU time
    (read before it is reaped)."""
    tools = f"pg_dump -Fc -Z0 | zstd -{level} -T0" if method == "zstd" else f"pg_dump -Fc -Z{level}"
    clock.add("dump stream", read_s, began, "wall", detail=tools)
    for proc in procs:
        name = program(proc)
        clock.add(f"{name} cpu", cpu_ticks(proc) * _TICK_S, began, CPU)


def _tool_failed(
    name: str, target: PostgresTarget, code: int, text: str, settings: Settings
) -> OpsError:
    # pg_dump bounds its LOCK TABLE with statement_timeout (--lock-wait-timeout).
    if ("LOCK TABLE" in text and "timeout" in text) or "could not obtain lock" in text:
        return Throttled(
            f"{name} could not lock a table of {target.describe()} within "
            f"{settings.pg_lock_wait_timeout_s:g} s: {text}",
            hint="a long transaction or a migration holds a table lock; retried. If it "
            "lasts, find it in pg_locks or raise OPSFLOWS_PG_LOCK_WAIT_TIMEOUT_S",
        )
    return PermanentError(
        f"{name} for {target.describe()} exited with {code}: {text}",
        hint="read the message; is the role allowed to read every table?",
    )


def _complete(upload: MultipartUpload, digest: str) -> None:
    """Complete the upload and tag the object with its SHA-256."""
    upload.complete()
    with aws_errors(f"tag {upload.key}"):
        upload.client.put_object_tagging(
            Bucket=upload.bucket,
            Key=upload.key,
            Tagging={"TagSet": [{"Key": "sha256", "Value": digest}]},
        )


def _remove(client: Any, bucket: str, key: str) -> None:
    """Delete a completed dump that cannot become a backup (retried; never raises)."""
    if not cleanup_call(lambda: client.delete_object(Bucket=bucket, Key=key), f"remove {key}"):
        get_run_logger().error(
            "could not remove s3://%s/%s (no manifest); delete it by hand", bucket, key
        )


def _failed(fingerprint: Future[Fingerprint]) -> bool:
    """Whether the fingerprint failed (it had a moment to finish: it may be why pg_dump did)."""
    try:
        return fingerprint.exception(timeout=5) is not None
    except TimeoutError:
        return False


def _await(fingerprint: Future[Fingerprint], target: PostgresTarget, bound_s: float) -> Fingerprint:
    try:
        return fingerprint.result(timeout=bound_s)
    except TimeoutError as exc:
        raise Stalled(
            f"the fingerprint of {target.describe()} did not finish within {bound_s:g} s "
            "after the dump",
            hint="counting rows took too long (or the session hung); raise "
            "OPSFLOWS_FINGERPRINT_TIMEOUT_S for a database this large, then run again",
        ) from exc
