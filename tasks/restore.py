"""Restore a backup object into a new scratch database, checking its SHA-256 on the way.

The object is streamed from S3 into ``pg_restore`` (through ``zstd -d`` when the dump was
zstd-compressed): no temporary file. The last chunk is held back until the whole stream's
size and SHA-256 match the manifest, so a corrupt or truncated object never completes a
restore; on any failure the scratch database is dropped, leaving nothing behind (a run killed
before it could drop it leaves one marked unverified, which the next restore of the same
database drops: see :mod:`tasks.scratch`). The live
database is never touched here: :func:`tasks.swap.swap_in` replaces it, which the flow calls
only after verification and approval.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import select
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from prefect import task
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.backups import Manifest
from decisions.phases import BUSY, CPU, WALL, Phase
from opsflows import retry
from opsflows.errors import (
    ConflictError,
    PermanentError,
    ServiceUnavailable,
    VerificationFailed,
    scrub,
)
from opsflows.settings import get_settings
from tasks.phase_clock import PhaseClock
from tasks.pipes import (
    POLL_S,
    StallWatch,
    StderrTails,
    cpu_ticks,
    pg_tool,
    program,
    reap,
    spawn,
    stop_all,
)
from tasks.postgres import connect
from tasks.scratch import (
    MAINTENANCE_DB,
    create_database,
    database_exists,
    database_owner,
    drop_database,
    mark,
)
from tasks.storage import aws_errors

_CHUNK = 1024 * 1024
_QUEUE_DEPTH = 16
_PIPE_SIZE = 1024 * 1024


@task(name="drop scratch database", **retry.NETWORK)
def drop_scratch(admin: PostgresTarget, name: str) -> None:
    """Drop a scratch database made by a restore."""
    drop_database(admin, name)
    get_run_logger().info("dropped scratch database %s", name)


@dataclass(frozen=True)
class RestoreResult:
    """A verified-checksum restore: where it went, what came through, how long it took.

    ``phases`` start at seconds after ``origin`` (``time.monotonic()`` when it began).
    """

    database: str
    bytes_read: int
    sha256: str
    seconds: float
    origin: float = 0.0
    phases: tuple[Phase, ...] = ()


class _Downloader(threading.Thread):
    """Reads the object body in chunks into a bounded queue; ``None`` ends it.

    ``got`` counts the bytes read (progress for the stall watch); :meth:`release` unblocks
    a read stuck on a stalled connection from another thread.
    """

    def __init__(self, body: Any, out: queue.Queue[Any]) -> None:
        super().__init__(name="restore-download", daemon=True)
        self.body, self.out = body, out
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.got = 0
        self.ended_at = 0.0  # time.monotonic() when the body was read to its end

    def run(self) -> None:
        try:
            for chunk in self.body.iter_chunks(_CHUNK):
                self.got += len(chunk)
                while not self.stop.is_set():
                    try:
                        self.out.put(chunk, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the restoring thread
            self.error = exc
        self.ended_at = time.monotonic()
        with contextlib.suppress(Exception):
            self.body.close()
        while not self.stop.is_set():
            try:
                self.out.put(None, timeout=0.2)
                break
            except queue.Full:
                continue

    def release(self) -> None:
        """Shut the download's socket (urllib3 ``HTTPResponse.shutdown``), ending a hung read."""
        self.stop.set()
        raw = getattr(self.body, "_raw_stream", None)
        with contextlib.suppress(Exception):
            raw.shutdown()  # type: ignore[union-attr]


class _PipeWriter:
    """Writes into a tool's stdin, never blocked for more than ``POLL_S`` at a time.

    The pipe is non-blocking; while it is full the writer polls, and each empty poll asks
    the stall watch whether pg_restore stopped reading. ``written`` counts what it took.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.fd = stream.fileno()
        os.set_blocking(self.fd, False)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLOUT)
        self.written = 0

    def write(self, data: bytes, watch: StallWatch) -> None:
        """All of ``data``; ``BrokenPipeError`` when the tool exited, ``Stalled`` when hung."""
        view = memoryview(data)
        while view:
            if not self.poller.poll(POLL_S * 1000):
                watch.check()
                continue
            try:
                sent = os.write(self.fd, view)
            except BlockingIOError:
                continue
            view = view[sent:]
            self.written += sent

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.close()


def _start_restore(
    admin: PostgresTarget, database: str, compression: str, version_num: int
) -> tuple[list[subprocess.Popen[bytes]], IO[bytes]]:
    env = {"PATH": "/usr/bin:/bin", **admin.libpq_env(), "PGDATABASE": database}
    argv = [
        pg_tool("pg_restore", version_num),
        f"--dbname={admin.tool_dbname(database)}",
        "--exit-on-error",
        "--no-password",
    ]
    if not compression.startswith("zstd"):
        proc = spawn(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdin is not None
        return [proc], proc.stdin
    unzstd = spawn(
        ["zstd", "-d", "-q", "-c"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert unzstd.stdin is not None and unzstd.stdout is not None
    proc = spawn(argv, stdin=unzstd.stdout, stderr=subprocess.PIPE, env=env)
    unzstd.stdout.close()
    return [unzstd, proc], unzstd.stdin


def _server_version_num(admin: PostgresTarget) -> int:
    quick = get_settings().pg_statement_timeout_s
    with connect(admin, database=MAINTENANCE_DB, statement_timeout_s=quick) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    return int(row[0])


def stream_restore(
    store: BackupStore, manifest: Manifest, admin: PostgresTarget, database: str
) -> RestoreResult:
    """Stream the dump into ``pg_restore`` on ``database``; checksum checked before the end.

    Every wait is bounded: the download and pg_restore's intake by progress
    (``restore_stall_s`` without a byte moving raises ``Stalled``), pg_restore's last
    phase (indexes, constraints) by ``restore_finish_s``. On any failure the tools are
    killed with their process groups and the download's connection is shut.
    """
    settings = get_settings()
    started = time.monotonic()
    client = store.s3_client()
    where = f"s3://{store.bucket}/{manifest.dump_key}"
    with aws_errors(f"download {where}"):
        body = client.get_object(Bucket=store.bucket, Key=manifest.dump_key)["Body"]
    procs, sink = _start_restore(admin, database, manifest.compression, _server_version_num(admin))
    stderr = StderrTails(procs)
    chunks: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_DEPTH)
    downloader = _Downloader(body, chunks)
    writer = _PipeWriter(sink)
    hint = (
        "{} stopped moving (a hung connection or server); the tools were killed and the "
        "scratch database is dropped. Check S3 and PostgreSQL, then run again"
    )
    counters = (lambda: downloader.got, lambda: writer.written)
    download_watch = StallWatch(
        f"the download of {where}", settings.restore_stall_s, hint.format("S3"), counters
    )
    intake_watch = StallWatch(
        f"pg_restore into {database}", settings.restore_stall_s, hint.format("pg_restore"), counters
    )
    downloader.start()
    digest = hashlib.sha256()
    hashing_s = 0.0
    size = 0
    held: bytes | None = None
    sink_open = True
    done = False
    try:
        while True:
            try:
                chunk = chunks.get(timeout=POLL_S)
            except queue.Empty:
                download_watch.check()
                continue
            if chunk is None:
                break
            hashing = time.monotonic()
            digest.update(chunk)
            hashing_s += time.monotonic() - hashing
            size += len(chunk)
            if size > manifest.size_bytes:
                raise VerificationFailed(
                    f"backup {manifest.backup_id} is larger than its manifest says "
                    f"({manifest.size_bytes} bytes): the object was changed",
                    hint="do not trust this object; restore another backup",
                )
            if held is not None and sink_open:
                try:
                    writer.write(held, intake_watch)
                except BrokenPipeError:
                    sink_open = False  # pg_restore gave up; keep hashing for a clear error
            held = chunk
        if downloader.error is not None:
            raise ServiceUnavailable(
                f"download of {manifest.dump_key} failed: {scrub(str(downloader.error))}"
            )
        actual = digest.hexdigest()
        if size != manifest.size_bytes or actual != manifest.sha256:
            raise VerificationFailed(
                f"checksum mismatch for backup {manifest.backup_id}: read {size} bytes with "
                f"SHA-256 {actual}, the manifest says {manifest.size_bytes} bytes with "
                f"{manifest.sha256}; the object is corrupt or truncated",
                hint="nothing was restored; pick an earlier backup (restore with an earlier `at`)",
            )
        if held is not None and sink_open:
            with contextlib.suppress(BrokenPipeError):
                writer.write(held, intake_watch)
        writer.close()
        fed = time.monotonic()
        cpu = [(program(p), cpu_ticks(p)) for p in procs]
        codes = reap(procs, settings.restore_finish_s, "the end of their input")
        for i, (p, code) in enumerate(zip(procs, codes, strict=True)):
            if code != 0:
                text = scrub(stderr.text(i)[-600:], admin.password.get_secret_value())
                raise PermanentError(
                    f"{program(p)} into {database} exited with {code}: {text}",
                    hint="the checksum matched, so the archive is intact: read the message",
                )
        done = True
    finally:
        if not done:
            downloader.release()
        downloader.stop.set()
        stop_all(procs, settings.process_exit_s)
        writer.close()
        downloader.join(timeout=settings.process_exit_s)
    ended = time.monotonic()
    tick_s = 1.0 / (os.sysconf("SC_CLK_TCK") or 100)
    clock = PhaseClock(started)
    clock.add("download", downloader.ended_at - started, 0.0, WALL, "one GET, streamed")
    clock.add("checksum", hashing_s, 0.0, BUSY, "SHA-256 of the object")
    clock.add("restore data", fed - started, 0.0, WALL, "pg_restore reading the stream (COPY)")
    clock.add(
        "index build",
        ended - fed,
        fed - started,
        WALL,
        "indexes and constraints, after the input ended",
    )
    for name, ticks in cpu:
        clock.add(f"{name} cpu", ticks * tick_s, 0.0, CPU)
    return RestoreResult(
        database,
        size,
        digest.hexdigest(),
        round(ended - started, 3),
        origin=started,
        phases=tuple(clock.phases),
    )


@task(name="restore into scratch database", **retry.HEAVY)
def restore_into_scratch(
    store: BackupStore, manifest: Manifest, admin: PostgresTarget, scratch: str, live: str
) -> RestoreResult:
    """Create ``scratch`` and restore the backup into it; on any failure drop it again.

    Args:
        store: backup bucket holding the dump.
        manifest: the backup's manifest (key, size, SHA-256, compression).
        admin: superuser target on the server (creates the database, runs pg_restore).
        scratch: name of the new database (must not exist).
        live: the live database: its owner will own the scratch database too.
    """
    logger = get_run_logger()
    owner = database_owner(admin, live)
    if database_exists(admin, scratch):
        raise ConflictError(f"scratch database {scratch} already exists", hint="drop it or retry")
    create_database(admin, scratch, owner, mark(live, manifest.backup_id, verified=False))
    try:
        result = stream_restore(store, manifest, admin, scratch)
    except BaseException:
        try:
            drop_database(admin, scratch)
        except Exception as exc:  # noqa: BLE001 - the restore's own error is the one to raise
            logger.warning(
                "restore failed and scratch database %s could not be dropped (%s); the next "
                "restore of %s drops it",
                scratch,
                exc,
                live,
            )
        else:
            logger.warning("restore failed; scratch database %s dropped", scratch)
        raise
    logger.info(
        "restored %s (%.1f MiB, sha256 ok) into %s in %.1f s",
        manifest.backup_id,
        result.bytes_read / 2**20,
        scratch,
        result.seconds,
    )
    return result
