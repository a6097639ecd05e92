"""Steady writes and the RPO the WAL archive achieves under them (the first part of
``bench.bench_pitr``).

A writer thread commits one small row every ``interval_s`` into a table of its own and keeps,
per row, the server's ``clock_timestamp()`` at its insert (a moment before its commit: an
earlier time can only make the RPO larger) and ``pg_current_wal_lsn()`` read after the commit
(at or past the end of the commit record). A row is recoverable once the WAL segment holding
the byte before that LSN is in S3. Every ``sample_s`` the archive is listed and the RPO at
that moment is the age of the newest recoverable row: what would be lost if the server died
then. The archive is listed (not ``pg_stat_archiver`` read) because a restore sees only S3.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from decisions.wal import SEGMENT_BYTES, is_segment, parse_lsn, segment_number
from devstack.wal_switch import switch_wal_and_wait

TABLE = "bench_pitr_ticks"


@dataclass(frozen=True)
class Tick:
    """One committed row: when, and the WAL position after its commit."""

    at: datetime
    lsn: int


def recoverable_age(ticks: Sequence[Tick], newest_segment: int, now: datetime) -> float | None:
    """Seconds since the newest row whose WAL is all archived (segments up to
    ``newest_segment``); None when no row is recoverable yet."""
    for tick in reversed(ticks):
        if (tick.lsn - 1) // SEGMENT_BYTES <= newest_segment:
            return (now - tick.at).total_seconds()
    return None


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class SteadyWriter(threading.Thread):
    """Commits a row every ``interval_s`` until stopped; ``ticks`` grows as it goes."""

    def __init__(self, conninfo: str, interval_s: float) -> None:
        super().__init__(name="pitr-writer", daemon=True)
        self.conninfo, self.interval_s = conninfo, interval_s
        self.ticks: list[Tick] = []
        self.error: BaseException | None = None
        self._done = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                while not self._done.is_set():
                    self.ticks.append(write_tick(conn))
                    self._done.wait(self.interval_s)
        except BaseException as exc:  # reported by the sampler, which fails the bench
            self.error = exc

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=30)


def write_tick(conn: psycopg.Connection[Any]) -> Tick:
    row: Any = conn.execute(f"INSERT INTO {TABLE} DEFAULT VALUES RETURNING at").fetchone()
    lsn: Any = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return Tick(row[0], parse_lsn(str(lsn[0])))


def create_ticks(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY,"
            " at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )


def switch_and_wait(admin_conninfo: str, timeout_s: float = 120) -> str:
    """Close the current WAL segment and wait until the archiver has it; its name."""
    try:
        return switch_wal_and_wait(admin_conninfo, timeout_s)
    except TimeoutError as exc:
        raise SystemExit(str(exc)) from exc


def server_facts(admin_conninfo: str) -> tuple[int, int]:
    """The live server's timeline and its archive_timeout in seconds."""
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        row: Any = conn.execute(
            "SELECT (SELECT timeline_id FROM pg_control_checkpoint()),"
            " (SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout')"
        ).fetchone()
    return int(row[0]), int(row[1])


class ArchiveWatch:
    """The segments of one timeline in the S3 archive after a known one, listed as they come."""

    def __init__(self, client: Any, bucket: str, prefix: str, after: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.newest = after
        self.sizes: dict[str, int] = {}  # segment name -> compressed bytes in S3

    def poll(self) -> int:
        """List what was archived after the newest segment seen; its segment number."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=self.prefix + self.newest[:8],
            StartAfter=f"{self.prefix}{self.newest}.zst",
        )
        for page in pages:
            for obj in page.get("Contents", []):
                name = str(obj["Key"])[len(self.prefix) :].removesuffix(".zst")
                if is_segment(name) and name > self.newest:
                    self.sizes[name] = int(obj.get("Size", 0))
        if self.sizes:
            self.newest = max(self.newest, max(self.sizes))
        return segment_number(self.newest)


@dataclass(frozen=True)
class RpoResult:
    samples: tuple[float, ...]
    archive_timeout_s: int
    window_s: float
    rows: int
    segments: int
    compressed_bytes: int

    def per_hour(self, value: float) -> float:
        return value * 3600 / self.window_s

    def summary(self) -> dict[str, Any]:
        return {
            "rpo_s_max": round(max(self.samples), 2),
            "rpo_s_p95": round(percentile(self.samples, 0.95), 2),
            "rpo_s_p50": round(percentile(self.samples, 0.50), 2),
            "rpo_samples": len(self.samples),
            "archive_timeout_s": self.archive_timeout_s,
            "window_s": round(self.window_s, 1),
            "rows_written": self.rows,
            "wal_segments": self.segments,
            "wal_bytes_per_hour": round(self.per_hour(self.compressed_bytes)),
            "wal_raw_bytes_per_hour": round(self.per_hour(self.segments * SEGMENT_BYTES)),
        }


def measure_rpo(
    admin_conninfo: str,
    conninfo: str,
    watch_for: Any,
    window_s: float,
    sample_s: float = 1.0,
    interval_s: float = 0.2,
) -> RpoResult:
    """Steady writes for ``window_s``, the RPO sampled every ``sample_s``.

    ``watch_for(after)`` makes the :class:`ArchiveWatch` of the live timeline starting after
    segment ``after``. A first row is written and archived before the window opens, so every
    sample has a recoverable row; the segments archived during the window are the WAL volume.
    """
    create_ticks(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ticks = [write_tick(conn)]
    _, timeout_s = server_facts(admin_conninfo)
    watch: ArchiveWatch = watch_for(switch_and_wait(admin_conninfo))
    if recoverable_age(ticks, watch.poll(), datetime.now(UTC)) is None:
        raise SystemExit("the first row's WAL segment is not in the S3 archive")
    writer = SteadyWriter(conninfo, interval_s)
    started = time.monotonic()
    writer.start()
    samples: list[float] = []
    try:
        while (elapsed := time.monotonic() - started) < window_s:
            time.sleep(sample_s - elapsed % sample_s)
            if writer.error is not None:
                raise SystemExit(f"the steady writer failed: {writer.error}")
            newest = watch.poll()
            age = recoverable_age([*ticks, *writer.ticks], newest, datetime.now(UTC))
            assert age is not None  # the first row is archived
            samples.append(age)
    finally:
        writer.finish()
    window = time.monotonic() - started
    watch.poll()
    return RpoResult(
        samples=tuple(samples),
        archive_timeout_s=timeout_s,
        window_s=window,
        rows=len(ticks) + len(writer.ticks),
        segments=len(watch.sizes),
        compressed_bytes=sum(watch.sizes.values()),
    )
