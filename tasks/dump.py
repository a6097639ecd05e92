"""Dump a database straight into an S3 multipart upload, fingerprinted in the same snapshot.

No temporary file: ``pg_dump -Fc`` writes into a pipe, a reader thread cuts the stream into
parts (SHA-256 computed on the way) and hands them through a bounded queue to the uploader,
so memory is a few parts whatever the database size. The snapshot is exported from a
REPEATABLE READ transaction (``pg_export_snapshot()``) that stays open for the whole dump:
``pg_dump --snapshot`` reads exactly what the fingerprint queries count. Any failure aborts
the multipart upload, so no orphan parts and no object are left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger
from psycopg import sql

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.backups import Fingerprint, TableFingerprint
from opsflows import retry
from opsflows.errors import (
    ConfigurationError,
    PermanentError,
    scrub,
)
from tasks.multipart import MultipartUpload, UploadResult
from tasks.postgres import connect, pg_errors
from tasks.storage import aws_errors

# No "%" anywhere in these queries: GX runs them through SQLAlchemy with "%" escaped for
# the driver and never unescaped, which would change what they compute.

#: Tables whose data pg_dump writes: ordinary and partitioned tables outside the system
#: schemas that do not belong to an extension.
TABLES_SQL = """
SELECT n.nspname, c.relname,
       (SELECT a.attname FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1
           AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)) AS pk
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND NOT starts_with(n.nspname, 'pg_toast') AND NOT starts_with(n.nspname, 'pg_temp')
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND d.deptype = 'e')
 ORDER BY 1, 2
"""

_USER_SCHEMA = (
    "{n}.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND NOT starts_with({n}.nspname, 'pg_toast') AND NOT starts_with({n}.nspname, 'pg_temp')"
)

#: One hex SHA-256 over a sorted description of columns, constraints and indexes. Run it
#: with ``search_path = pg_catalog`` so every name it prints is schema-qualified the same
#: way in the dumped and the restored database (no OIDs, no owners).
SCHEMA_HASH_SQL = f"""
SELECT encode(sha256(convert_to(coalesce(string_agg(line, E'\\n' ORDER BY line), ''),
                                'UTF8')), 'hex') AS schema_hash
  FROM (
    SELECT concat_ws(' ', 'column', quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                     row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                     quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
                     'notnull=' || a.attnotnull,
                     'default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')) AS line
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
       AND {_USER_SCHEMA.format(n="n")}
    UNION ALL
    SELECT concat_ws(' ', 'constraint', quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                     quote_ident(k.conname), pg_get_constraintdef(k.oid))
      FROM pg_constraint k
      JOIN pg_class c ON c.oid = k.conrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE {_USER_SCHEMA.format(n="n")}
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE {_USER_SCHEMA.format(n="n")}
  ) AS schema_lines
"""

_READ_CHUNK = 1024 * 1024
_PIPE_SIZE = 1024 * 1024


def pg_tool(name: str, server_version_num: int) -> str:
    """The client tool matching the server's major version (Debian layout), else PATH's."""
    candidate = Path(f"/usr/lib/postgresql/{server_version_num // 10000}/bin") / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise PermanentError(f"{name} not found", hint="install the postgresql-client package")
    return found


def table_rows_query(tables: list[tuple[str, str, str | None]]) -> sql.Composed:
    """``SELECT name, count(*), max(pk)`` for every table, as one UNION ALL query."""
    selects = [
        sql.SQL(
            "SELECT {label} AS table_name, count(*)::bigint AS row_count, {mx} AS max_pk"
            " FROM {schema}.{table}"
        ).format(
            label=sql.Literal(f"{schema}.{table}"),
            mx=sql.SQL("max({})::bigint").format(sql.Identifier(pk))
            if pk
            else sql.SQL("NULL::bigint"),
            schema=sql.Identifier(schema),
            table=sql.Identifier(table),
        )
        for schema, table, pk in tables
    ]
    return sql.SQL(" UNION ALL ").join(selects)


def take_fingerprint(conn: psycopg.Connection[Any]) -> Fingerprint:
    """Row counts, max primary keys and the schema hash, in the connection's snapshot."""
    tables = [(str(s), str(t), pk) for s, t, pk in conn.execute(TABLES_SQL).fetchall()]
    counted: list[TableFingerprint] = []
    if tables:
        for name, rows, max_pk in conn.execute(table_rows_query(tables)).fetchall():
            counted.append(TableFingerprint(name=str(name), rows=int(rows), max_pk=max_pk))
    conn.execute("SET LOCAL search_path TO pg_catalog")
    row = conn.execute(SCHEMA_HASH_SQL).fetchone()
    assert row is not None
    return Fingerprint(tables=tuple(sorted(counted, key=lambda t: t.name)), schema_hash=str(row[0]))


@dataclass(frozen=True)
class Snapshot:
    """An exported snapshot and what the server said when it was taken."""

    snapshot_id: str
    taken_at: datetime
    server_version: str
    server_version_num: int


@contextlib.contextmanager
def exported_snapshot(
    target: PostgresTarget,
) -> Iterator[tuple[psycopg.Connection[Any], Snapshot]]:
    """A REPEATABLE READ, READ ONLY transaction that exports its snapshot; held open."""
    with connect(target, autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(
            "SELECT pg_export_snapshot(), now(), current_setting('server_version'),"
            " current_setting('server_version_num')::int"
        ).fetchone()
        assert row is not None
        snap = Snapshot(str(row[0]), row[1].astimezone(UTC), str(row[2]), int(row[3]))
        try:
            yield conn, snap
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()


# --- the task ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DumpResult:
    """What ``dump_to_s3`` produced, for the manifest."""

    upload: UploadResult
    snapshot: Snapshot
    started_at: datetime
    finished_at: datetime
    fingerprint: Fingerprint
    compression: str


class _Progress:
    """A Prefect progress artifact, updated at most every ``every_s`` seconds."""

    def __init__(self, key: str, expected: int, every_s: float = 2.0) -> None:
        self.expected, self.every_s = max(expected, 1), every_s
        self.artifact: Any = create_progress_artifact(0.0, key=key, description="backup upload")
        self.last = 0.0

    def __call__(self, part: int, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        share = min(99.0, 100.0 * done / self.expected)
        with contextlib.suppress(Exception):  # progress is best effort, never fatal
            update_progress_artifact(
                self.artifact, share, description=f"{done / 2**20:.0f} MiB in {part} parts"
            )

    def finish(self, done: int, parts: int) -> None:
        with contextlib.suppress(Exception):
            update_progress_artifact(
                self.artifact, 100.0, description=f"{done / 2**20:.0f} MiB in {parts} parts"
            )


def _program(proc: subprocess.Popen[bytes]) -> str:
    """The program name of ``proc`` (for messages)."""
    args = proc.args
    first = args[0] if isinstance(args, list | tuple) else args
    return Path(str(first)).name


def _drain(stream: IO[bytes], into: list[bytes]) -> None:
    for line in stream:
        into.append(line)
        del into[:-40]


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
    GIL of the flow process and uses the second core.
    """
    gzip_level = level if method == "gzip" else 0
    dump = subprocess.Popen(
        [*argv, f"--compress={gzip_level}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert dump.stdout is not None
    if method != "zstd":
        return [dump], dump.stdout
    zstd = subprocess.Popen(
        ["zstd", f"-{level}", "-T0", "-q", "-c"],
        stdin=dump.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    dump.stdout.close()  # zstd owns the read end now: pg_dump sees EPIPE if zstd dies
    assert zstd.stdout is not None
    return [dump, zstd], zstd.stdout


@task(name="dump database to S3", **retry.HEAVY)
def dump_to_s3(
    target: PostgresTarget,
    store: BackupStore,
    key: str,
    *,
    part_size: int,
    compression: str = "zstd:1",
    expected_bytes: int = 0,
) -> DumpResult:
    """Stream ``pg_dump -Fc`` of ``target`` into ``key``; fingerprint in the same snapshot.

    Args:
        target: database to dump (credentials reach pg_dump through its environment).
        store: backup bucket.
        key: object key of the dump.
        part_size: first part size in bytes (parts grow every 1,000 to stay under 10,000).
        compression: ``"zstd:N"`` (pg_dump -Z0 piped through zstd; fast and compact),
            ``"gzip:N"`` (pg_dump's own) or ``"none"``.
        expected_bytes: expected dump size, for the progress artifact only.
    """
    logger = get_run_logger()
    method, level = effective_compression(compression)
    client = store.s3_client()
    started = datetime.now(UTC)
    progress = _Progress("backup-upload", expected_bytes)
    secret = target.password.get_secret_value()
    with exported_snapshot(target) as (conn, snap), ThreadPoolExecutor(1) as pool:
        argv = [
            pg_tool("pg_dump", snap.server_version_num),
            "--format=custom",
            f"--snapshot={snap.snapshot_id}",
            "--no-password",
        ]
        env = {"PATH": "/usr/bin:/bin", **target.libpq_env()}
        logger.info("dumping %s (snapshot %s) to %s", target.describe(), snap.snapshot_id, key)
        procs, stream = _start_dump(argv, method, level, env)
        with contextlib.suppress(OSError):
            fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        errors: list[list[bytes]] = [[] for _ in procs]
        drainers = [
            threading.Thread(target=_drain, args=(p.stderr, errs), daemon=True)
            for p, errs in zip(procs, errors, strict=True)
        ]
        for thread in drainers:
            thread.start()

        def stop() -> None:
            for p in procs:
                with contextlib.suppress(OSError):
                    p.kill()

        fingerprint = pool.submit(_fingerprint, target, conn)
        try:
            with MultipartUpload(client, store.bucket, key) as upload:
                size, digest = upload.feed(stream, part_size, progress, stop_source=stop)
                codes = [p.wait() for p in procs]
                for thread in drainers:
                    thread.join(timeout=5)
                if any(codes) and fingerprint.exception() is not None:
                    # A failed fingerprint query ends the exporting transaction, which
                    # makes pg_dump fail too: report the cause, not the consequence.
                    fingerprint.result()
                for p, code, errs in zip(procs, codes, errors, strict=True):
                    if code != 0:
                        text = scrub(b"".join(errs).decode(errors="replace").strip(), secret)
                        raise PermanentError(
                            f"{_program(p)} for {target.describe()} exited with {code}: {text}",
                            hint="read the message; is the role allowed to read every table?",
                        )
                prints = fingerprint.result()
                upload.complete()
        finally:
            stop()
            for p in procs:
                p.wait()
    parts = len(upload.parts)
    with aws_errors(f"tag {key}"):
        client.put_object_tagging(
            Bucket=store.bucket,
            Key=key,
            Tagging={"TagSet": [{"Key": "sha256", "Value": digest}]},
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
    )


def _fingerprint(target: PostgresTarget, conn: psycopg.Connection[Any]) -> Fingerprint:
    with pg_errors(target, f"fingerprint {target.describe()}"):
        return take_fingerprint(conn)
