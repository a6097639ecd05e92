"""Steady HTTP load on a loopback URL, for the demo, the tests and the benchmarks.

``python -m devstack.loadgen --url http://127.0.0.1:18081/ --rps 20 --duration 60`` sends
``rps`` GET requests per second (open loop: a slow answer does not slow the schedule) and
prints a JSON summary: counts by status, error rate and latency percentiles.
``--duration 0`` runs until SIGINT/SIGTERM.

From Python, ``run_load(url, rps, duration, stop_event)`` returns a :class:`LoadStats`; it
blocks, so run it in a thread next to the code under test. Load is bounded: at most
``MAX_RPS`` requests per second, at most ``max_in_flight`` at once (the rest are counted as
``dropped``), and only to loopback addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import httpx

MAX_RPS = 1000.0
ERROR = "error"
"""Status key of requests that got no HTTP answer (refused, reset, timed out)."""


@dataclass(frozen=True)
class LoadStats:
    """What a load run sent and what came back.

    Attributes:
        sent: Requests sent (answered or not).
        by_status: Answers by HTTP status code (``"200"``), plus ``"error"`` for none.
        latencies_s: Latency of every answered request, sorted.
        duration_s: Wall time of the run.
        dropped: Scheduled requests skipped because ``max_in_flight`` were outstanding.
    """

    sent: int
    by_status: dict[str, int] = field(default_factory=dict)
    latencies_s: tuple[float, ...] = ()
    duration_s: float = 0.0
    dropped: int = 0

    @property
    def failed(self) -> int:
        """Requests answered 5xx or not answered at all."""
        return sum(n for status, n in self.by_status.items() if status == ERROR or status[0] == "5")

    @property
    def error_rate(self) -> float:
        return self.failed / self.sent if self.sent else 0.0

    @property
    def achieved_rps(self) -> float:
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (``q`` in 0..100) of answered latencies; NaN if none."""
        if not self.latencies_s:
            return math.nan
        rank = max(1, math.ceil(q / 100 * len(self.latencies_s)))
        return self.latencies_s[min(rank, len(self.latencies_s)) - 1]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "sent": self.sent,
            "by_status": dict(sorted(self.by_status.items())),
            "dropped": self.dropped,
            "error_rate": round(self.error_rate, 4),
            "duration_s": round(self.duration_s, 3),
            "achieved_rps": round(self.achieved_rps, 2),
            "latency_s": {
                f"p{q}": round(self.percentile(q), 4) if self.latencies_s else None
                for q in (50, 95, 99, 100)
            },
        }


def check_loopback(url: str) -> None:
    """Raise ValueError unless ``url`` is http(s) to localhost or a loopback address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.hostname == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"load is only sent to loopback addresses, not {parts.hostname!r}")


def run_load(
    url: str,
    rps: float,
    duration: float,
    stop_event: threading.Event | None = None,
    *,
    timeout: float = 10.0,
    max_in_flight: int = 256,
) -> LoadStats:
    """Send ``rps`` GETs per second to ``url`` for ``duration`` seconds and report.

    Args:
        url: Loopback URL to load.
        rps: Requests per second (0 < rps <= ``MAX_RPS``).
        duration: Seconds to run; 0 means until ``stop_event`` is set (then it is required).
        stop_event: Set it to stop early; outstanding requests are still awaited.
        timeout: Per-request timeout in seconds; also bounds the final wait.
        max_in_flight: Outstanding requests allowed; beyond it requests are dropped.

    Raises:
        ValueError: A non-loopback URL or out-of-range numbers.
    """
    check_loopback(url)
    if not 0 < rps <= MAX_RPS:
        raise ValueError(f"rps must be in (0, {MAX_RPS:g}], got {rps}")
    if duration < 0 or (duration == 0 and stop_event is None):
        raise ValueError("duration must be > 0, or 0 with a stop_event")
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be >= 1")
    return asyncio.run(_load(url, rps, duration, stop_event, timeout, max_in_flight))


async def _load(
    url: str,
    rps: float,
    duration: float,
    stop_event: threading.Event | None,
    timeout: float,
    max_in_flight: int,
) -> LoadStats:
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    in_flight: set[asyncio.Task[None]] = set()
    sent = dropped = 0

    def stopped() -> bool:
        return stop_event is not None and stop_event.is_set()

    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def one() -> None:
            started = time.perf_counter()
            try:
                response = await client.get(url)
            except httpx.HTTPError:
                statuses[ERROR] += 1
                return
            latencies.append(time.perf_counter() - started)
            statuses[str(response.status_code)] += 1

        start = time.monotonic()
        end = start + duration if duration > 0 else math.inf
        while not stopped():
            due = start + (sent + dropped) / rps
            if due >= end:
                break
            while (now := time.monotonic()) < due and not stopped():
                await asyncio.sleep(min(due - now, 0.1))
            if stopped():
                break
            if len(in_flight) >= max_in_flight:
                dropped += 1
                continue
            task = asyncio.create_task(one())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += 1
        if in_flight:
            _, pending = await asyncio.wait(set(in_flight), timeout=timeout + 1)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                statuses[ERROR] += len(pending)
        elapsed = time.monotonic() - start
    return LoadStats(
        sent=sent,
        by_status=dict(statuses),
        latencies_s=tuple(sorted(latencies)),
        duration_s=elapsed,
        dropped=dropped,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.loadgen",
        description="Steady GET load on a loopback URL.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:18081/", help="loopback URL to load")
    parser.add_argument("--rps", type=float, default=20.0, help="requests per second (20)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds; 0 = until killed")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout (10 s)")
    parser.add_argument("--max-in-flight", type=int, default=256, help="outstanding cap (256)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        stats = run_load(
            args.url,
            args.rps,
            args.duration,
            stop,
            timeout=args.timeout,
            max_in_flight=args.max_in_flight,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(stats.summary()))


if __name__ == "__main__":
    main()
