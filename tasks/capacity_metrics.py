"""The capacity report's readings: Prometheus range queries per resource and the backup
store's S3 listing (its growth from the objects' sizes and LastModified times)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from prefect import task

from blocks.storage import BackupStore
from opsflows import retry
from tasks.prom_series import prom_get
from tasks.storage import aws_errors

DAY_S = 86400.0


@dataclass(frozen=True)
class Queries:
    """PromQL of one resource: the series, and instant readings beside it."""

    series: str
    capacity: str = ""  # a query giving the capacity (else the flow's parameter, or 1.0)
    extra: tuple[tuple[str, str], ...] = ()  # (name, query) read for the advice


def queries(env: str) -> dict[str, Queries]:
    """Every Prometheus-backed resource of the report. The sample app's series carry
    ``job="web-app", env=<env>``; PostgreSQL's (postgres_exporter) ``job="postgres"`` with the
    infrastructure's env."""
    app = f'job="web-app", env="{env}"'
    pg = 'job="postgres"'
    return {
        "cpu": Queries(
            f"avg(sampleapp_cpu_utilization_ratio{{{app}}})",
            extra=(("replicas", f"sum(sampleapp_ready_pods{{{app}}})"),),
        ),
        "memory": Queries(
            f"max(sampleapp_memory_bytes{{{app}}} / sampleapp_memory_limit_bytes{{{app}}})",
            extra=(("memory_limit_bytes", f"max(sampleapp_memory_limit_bytes{{{app}}})"),),
        ),
        "disk": Queries(
            f"max(sampleapp_volume_used_bytes{{{app}}} / sampleapp_volume_size_bytes{{{app}}})",
            extra=(("volume_bytes", f"max(sampleapp_volume_size_bytes{{{app}}})"),),
        ),
        "connections": Queries(
            f"sum(pg_stat_database_numbackends{{{pg}}})",
            capacity=f"max(pg_settings_max_connections{{{pg}}})",
        ),
        "request_rate": Queries(
            f"sum(rate(http_requests_total{{{app}}}[15m]))",
            extra=(("replicas", f"sum(sampleapp_ready_pods{{{app}}})"),),
        ),
        "db_size": Queries(f"sum(pg_database_size_bytes{{{pg}}})"),
    }


def graph_url(prometheus_url: str, promql: str, days: int = 30) -> str:
    """The Prometheus UI's graph of ``promql`` over the last ``days`` days."""
    base = prometheus_url.rstrip("/")
    return f"{base}/graph?g0.expr={quote(promql, safe='')}&g0.tab=0&g0.range_input={days}d"


def _get(prometheus_url: str, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return prom_get(prometheus_url, path, params, timeout_s=30.0)  # range queries of 30 days


@task(name="read a resource's history", **retry.NETWORK)
def read_history(
    prometheus_url: str, q: Queries, days: float, step_s: float, now: float | None = None
) -> dict[str, Any]:
    """The series over the last ``days`` (one series: the queries aggregate), its latest
    instant value, the capacity and the extra readings; None where a query gave nothing."""
    end = time.time() if now is None else now
    params = {"query": q.series, "start": end - days * DAY_S, "end": end, "step": step_s}
    result = _get(prometheus_url, "/api/v1/query_range", params)
    samples = [
        (float(t), float(v))
        for series in result[:1]
        for t, v in series.get("values", [])
        if v not in ("NaN", "+Inf", "-Inf")
    ]

    def instant(promql: str) -> float | None:
        rows = _get(prometheus_url, "/api/v1/query", {"query": promql, "time": end})
        if not rows:
            return None
        value = float(rows[0]["value"][1])
        return None if value != value else value  # NaN: no data

    return {
        "samples": samples,
        "current": instant(q.series),
        "capacity": instant(q.capacity) if q.capacity else None,
        "extra": {name: v for name, query in q.extra if (v := instant(query)) is not None},
    }


@task(name="read the backup store's growth", **retry.NETWORK)
def read_store_growth(store: BackupStore, days: float, now: float | None = None) -> dict[str, Any]:
    """The bytes under the store's prefix now and, per hour over the last ``days``, the bytes
    of the objects that existed then (by LastModified; deleted objects are not seen)."""
    end = time.time() if now is None else now
    client = store.s3_client()
    objects: list[tuple[float, int]] = []
    with aws_errors(f"list bucket {store.bucket}"):
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=store.prefix
        ):
            for obj in page.get("Contents", []):
                objects.append((obj["LastModified"].timestamp(), int(obj["Size"])))
    objects.sort()
    samples: list[tuple[float, float]] = []
    total, i = 0.0, 0
    start = end - days * DAY_S
    for hour in range(int(days * 24) + 1):
        t = start + hour * 3600.0
        while i < len(objects) and objects[i][0] <= t:
            total += objects[i][1]
            i += 1
        samples.append((t, total))
    current = float(sum(size for _, size in objects))
    return {"samples": samples, "current": current, "objects": len(objects)}
