"""Synthetic probe traffic during the bake (what Flagger's load tester does for a canary).

Without traffic the bake has nothing to judge: Prometheus holds no samples for the new
release and every check is inconclusive. :class:`TrafficProbe` sends a paced stream of GET
requests to the environment's own service URL (``<service_url>/``, the path the bake's
PromQL judges) from a background thread, so the requests go through the real service and are
scraped into the same error-rate and p95 series; it also keeps its own client-side figures.

It is bounded: at most ``MAX_PROBE_RPS`` requests per second, at most ``max_duration_s``
seconds and ``ceil(rps * max_duration_s)`` requests, at most ``max_in_flight`` outstanding
(the rest are counted as dropped), each with a timeout; it only ever calls the environment's
URL and stops by itself when its time is up.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import httpx

from decisions.bake_review import MAX_PROBE_RPS, ProbeSummary, summarize_probe
from opsflows.errors import ConfigurationError, scrub

DEFAULT_MAX_IN_FLIGHT = 8


class TrafficProbe:
    """Paced GETs to one service URL in a background thread; client-side figures on stop.

    Use it as a context manager (``with TrafficProbe(url, 5, 120) as probe: ...``) or call
    :meth:`start` and :meth:`stop`. :meth:`snapshot` reads the figures so far.
    """

    def __init__(
        self,
        service_url: str,
        rps: float,
        max_duration_s: float,
        *,
        timeout_s: float = 10.0,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if not service_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"probe needs an http(s) service URL, got {service_url!r}")
        if not 0 < rps <= MAX_PROBE_RPS:
            raise ConfigurationError(f"probe rate must be in (0, {MAX_PROBE_RPS:g}], got {rps}")
        if max_duration_s <= 0 or timeout_s <= 0 or max_in_flight < 1:
            raise ConfigurationError("probe duration, timeout and max_in_flight must be > 0")
        self.url = service_url.rstrip("/") + "/"
        self.rps = rps
        self.max_duration_s = max_duration_s
        self.max_requests = math.ceil(rps * max_duration_s)
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._statuses: list[int | None] = []
        self._latencies: list[float] = []
        self._last_error = ""
        self._dropped = 0
        self._in_flight = 0
        self._started: float | None = None
        self._ended: float | None = None
        self._thread = threading.Thread(target=self._run, name="bake-probe", daemon=True)

    def start(self) -> TrafficProbe:
        """Start sending in the background; returns self."""
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> ProbeSummary:
        """Stop sending, wait for outstanding requests (bounded by their timeout), report."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout_s + 5)
        return self.snapshot()

    def __enter__(self) -> TrafficProbe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def snapshot(self) -> ProbeSummary:
        """The figures so far (requests answered or failed so far; in-flight not counted)."""
        with self._lock:
            statuses = list(self._statuses)
            latencies = list(self._latencies)
            dropped, last_error = self._dropped, self._last_error
        started = self._started if self._started is not None else time.monotonic()
        ended = self._ended if self._ended is not None else time.monotonic()
        return summarize_probe(
            statuses, latencies, max(0.0, ended - started), self.rps, dropped, last_error
        )

    def _one(self, client: httpx.Client) -> None:
        started = time.perf_counter()
        status: int | None = None
        latency: float | None = None
        error = ""
        try:
            response = client.get(self.url)
            status, latency = response.status_code, time.perf_counter() - started
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__} {scrub(str(exc))}"[:200]
        with self._lock:
            self._in_flight -= 1
            self._statuses.append(status)
            if latency is not None:
                self._latencies.append(latency)
            if error:
                self._last_error = error

    def _run(self) -> None:
        start = self._started if self._started is not None else time.monotonic()
        end = start + self.max_duration_s
        scheduled = 0
        limits = httpx.Limits(
            max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight
        )
        with (
            httpx.Client(timeout=self.timeout_s, limits=limits) as client,
            ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="bake-probe") as pool,
        ):
            while scheduled < self.max_requests:
                due = start + scheduled / self.rps
                if due >= end or self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                scheduled += 1
                with self._lock:
                    if self._in_flight >= self.max_in_flight:
                        self._dropped += 1
                        continue
                    self._in_flight += 1
                pool.submit(self._one, client)
        self._ended = time.monotonic()
