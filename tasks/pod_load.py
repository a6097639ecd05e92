"""The web app's load per pod, from Prometheus: CPU share, request queue, request rates.

The sample app (like any app exporting these series) reports each Ready pod's CPU share of its
limit (``sampleapp_cpu_utilization_ratio{pod}``), the environment's request backlog
(``sampleapp_request_queue``) and the ``/`` requests each pod served
(``sampleapp_pod_requests_total{pod}``); the alert rules PodCpuHigh, RequestQueueHigh and
OnePodDown read the same series. Missing data is not zero: an empty answer is "no data".
"""

from __future__ import annotations

from prefect import task

from opsflows import retry
from tasks.metrics import query, query_vector

JOB = "web-app"


def _sel(environment: str, job: str = JOB) -> str:
    return f'job="{job}", env="{environment}"'


@task(name="read pod CPU", **retry.NETWORK)
def pod_cpu(prometheus_url: str, environment: str) -> dict[str, float]:
    """Each Ready pod's CPU share as last scraped."""
    promql = f"sampleapp_cpu_utilization_ratio{{{_sel(environment)}}}"
    return query_vector(prometheus_url, promql, "pod")


@task(name="read request queue", **retry.NETWORK)
def request_queue(prometheus_url: str, environment: str) -> float | None:
    """Requests waiting in the environment as last scraped."""
    return query(prometheus_url, f"max(sampleapp_request_queue{{{_sel(environment)}}})")


@task(name="read pod request rates", **retry.NETWORK)
def pod_request_rates(prometheus_url: str, environment: str, window_s: int) -> dict[str, float]:
    """``/`` requests per second each pod served over the last ``window_s`` seconds."""
    promql = (
        f"sum by (pod) (rate(sampleapp_pod_requests_total{{{_sel(environment)}}}[{window_s}s]))"
    )
    return query_vector(prometheus_url, promql, "pod")


@task(name="read load over the calm window", **retry.NETWORK)
def load_peak(
    prometheus_url: str, environment: str, window_s: int
) -> tuple[float | None, float | None]:
    """The highest pod CPU share and the highest queue over the last ``window_s`` seconds."""
    sel = _sel(environment)
    cpu = query(
        prometheus_url, f"max(max_over_time(sampleapp_cpu_utilization_ratio{{{sel}}}[{window_s}s]))"
    )
    queue = query(
        prometheus_url, f"max(max_over_time(sampleapp_request_queue{{{sel}}}[{window_s}s]))"
    )
    return cpu, queue
