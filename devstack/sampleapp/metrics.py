"""The app's Prometheus metrics, on a registry of its own (several apps can share a process).

Series (the contract the deploy gates and the alert rules rely on)::

    http_requests_total{path, status}           counter; path is "/", "/health", "/metrics"
                                                or "other"; status the HTTP code ("200")
    http_request_duration_seconds{path}         histogram, buckets up to 10 s around the 2 s gate
    sampleapp_pod_requests_total{pod}           counter; ``/`` requests served by each pod
    sampleapp_info{image, env}                  1 for every image served by a Ready pod
    sampleapp_ready_pods{image}                 Ready pods per image
    sampleapp_unready_pods                      listed pods not Ready (crashing, starting)
    sampleapp_request_queue                     requests in flight plus the backlog of busy pods
    sampleapp_cpu_utilization_ratio{pod}        share of the pod's CPU limit (one core) in use
    sampleapp_db_pool_size{pod}                 connections in the pod's DB pool
    sampleapp_db_pool_in_use{pod}               of which taken
    sampleapp_memory_bytes{pod}                 memory the pod uses (grows under a ``leak`` fault)
    sampleapp_memory_limit_bytes{pod}           the pod's memory limit
    sampleapp_volume_size_bytes                 the app volume's quota (when it has a volume)
    sampleapp_volume_used_bytes                 bytes of files in it

The gauges after ``sampleapp_ready_pods`` are set at scrape time (:meth:`AppMetrics.set_runtime`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from devstack.sampleapp.pods import Pod


@dataclass(frozen=True, slots=True)
class PodLoad:
    """What one pod uses right now."""

    cpu: float
    pool_size: int
    pool_in_use: int
    memory_bytes: int = 0
    memory_limit_bytes: int = 0


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 5, 10)
KNOWN_PATHS = frozenset({"/", "/health", "/metrics"})
OTHER_PATH = "other"


class AppMetrics:
    """Counters, histogram and gauges of one sample-app instance."""

    def __init__(self, env: str, registry: CollectorRegistry | None = None) -> None:
        self.env = env
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests served, by path and status code.",
            ["path", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to serve an HTTP request, by path.",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.pod_requests = Counter(
            "sampleapp_pod_requests",
            "Requests to / served by each pod (how evenly the Service spreads them).",
            ["pod"],
            registry=self.registry,
        )
        self._served_by: set[str] = set()
        self.info = Gauge(
            "sampleapp_info",
            "1 for each image currently served by a Ready pod.",
            ["image", "env"],
            registry=self.registry,
        )
        self.ready_pods = Gauge(
            "sampleapp_ready_pods",
            "Ready pods serving traffic, by image.",
            ["image"],
            registry=self.registry,
        )
        self.unready_pods = Gauge(
            "sampleapp_unready_pods",
            "Pods of the Deployment that are not Ready (crash looping, starting).",
            registry=self.registry,
        )
        self.request_queue = Gauge(
            "sampleapp_request_queue",
            "Requests waiting or in flight in this environment.",
            registry=self.registry,
        )
        self.cpu = Gauge(
            "sampleapp_cpu_utilization_ratio",
            "Share of the pod's CPU limit in use.",
            ["pod"],
            registry=self.registry,
        )
        self.pool_size = Gauge(
            "sampleapp_db_pool_size",
            "Connections in the pod's database pool.",
            ["pod"],
            registry=self.registry,
        )
        self.pool_in_use = Gauge(
            "sampleapp_db_pool_in_use",
            "Connections of the pod's database pool in use.",
            ["pod"],
            registry=self.registry,
        )
        self.memory = Gauge(
            "sampleapp_memory_bytes",
            "Memory the pod uses.",
            ["pod"],
            registry=self.registry,
        )
        self.memory_limit = Gauge(
            "sampleapp_memory_limit_bytes",
            "The pod's memory limit.",
            ["pod"],
            registry=self.registry,
        )
        self.volume_size = Gauge(
            "sampleapp_volume_size_bytes", "Quota of the app's volume.", registry=self.registry
        )
        self.volume_used = Gauge(
            "sampleapp_volume_used_bytes",
            "Bytes of files in the app's volume.",
            registry=self.registry,
        )
        self._images: set[str] = set()
        # Series that exist from the start make rate() see the first errors of a release.
        for status in ("200", "500", "503"):
            self.requests.labels(path="/", status=status)
        self.duration.labels(path="/")

    @staticmethod
    def path_label(path: str) -> str:
        """The ``path`` label of a request path (bounded cardinality)."""
        return path if path in KNOWN_PATHS else OTHER_PATH

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Record one served request."""
        label = self.path_label(path)
        self.requests.labels(path=label, status=str(status)).inc()
        self.duration.labels(path=label).observe(seconds)

    def served(self, pod: str) -> None:
        """Count one ``/`` request served by ``pod``."""
        self.pod_requests.labels(pod=pod).inc()
        self._served_by.add(pod)

    def set_pods(self, pods: Iterable[Pod]) -> None:
        """Publish which images the Ready pods run (and forget the counts of pods gone)."""
        pods = tuple(pods)
        for gone in self._served_by - {pod.name for pod in pods}:
            self.pod_requests.remove(gone)
        self._served_by &= {pod.name for pod in pods}
        counts: dict[str, int] = {}
        for pod in pods:
            counts[pod.image] = counts.get(pod.image, 0) + 1
        for gone in self._images - counts.keys():
            self.info.remove(gone, self.env)
            self.ready_pods.remove(gone)
        for image, count in counts.items():
            self.info.labels(image=image, env=self.env).set(1)
            self.ready_pods.labels(image=image).set(count)
        self._images = set(counts)

    def set_runtime(
        self,
        *,
        queue: int,
        pods: Mapping[str, PodLoad],
        unready: int,
        volume: tuple[int, int] | None,
    ) -> None:
        """Publish the state measured at scrape time (``volume``: size and used bytes)."""
        self.request_queue.set(queue)
        self.unready_pods.set(unready)
        for gauge in (self.cpu, self.pool_size, self.pool_in_use, self.memory, self.memory_limit):
            gauge.clear()  # pods that are gone leave no series behind
        for pod, load in pods.items():
            self.cpu.labels(pod=pod).set(load.cpu)
            self.pool_size.labels(pod=pod).set(load.pool_size)
            self.pool_in_use.labels(pod=pod).set(load.pool_in_use)
            if load.memory_limit_bytes:
                self.memory.labels(pod=pod).set(load.memory_bytes)
                self.memory_limit.labels(pod=pod).set(load.memory_limit_bytes)
        if volume is not None:
            self.volume_size.set(volume[0])
            self.volume_used.set(volume[1])

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
