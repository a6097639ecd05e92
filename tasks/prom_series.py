"""Prometheus queries that return series, not one number: an instant vector by a label, and
a range query over the last minutes (trends)."""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
from prefect import task

from opsflows import retry
from opsflows.errors import ConfigurationError, ServiceUnavailable
from tasks.http import http_errors


def prom_get(
    prometheus_url: str, path: str, params: dict[str, Any], timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """The ``data.result`` of a Prometheus API query; errors translated (400: the query)."""
    url = prometheus_url.rstrip("/") + path
    with http_errors("query Prometheus", url):
        response = httpx.get(url, params=params, timeout=timeout_s)
    if response.status_code == 400:
        raise ConfigurationError(
            f"Prometheus rejected the query {params.get('query')!r}: {response.text[:200]}"
        )
    if response.status_code >= 500:
        raise ServiceUnavailable(f"Prometheus answered {response.status_code}")
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json().get("data", {}).get("result", [])
    return result


@task(name="query Prometheus by label", **retry.NETWORK)
def vector_by(prometheus_url: str, promql: str, label: str) -> dict[str, float]:
    """An instant query's values by ``label`` (series without it, or NaN, are left out)."""
    out: dict[str, float] = {}
    for series in prom_get(prometheus_url, "/api/v1/query", {"query": promql}):
        key = series.get("metric", {}).get(label)
        value = float(series["value"][1])
        if key is not None and not math.isnan(value):
            out[str(key)] = value
    return out


@task(name="query a trend from Prometheus", **retry.NETWORK)
def range_by(
    prometheus_url: str, promql: str, label: str, seconds: float, step_s: float = 5.0
) -> dict[str, list[tuple[float, float]]]:
    """The samples of ``promql`` over the last ``seconds`` by ``label``, in time order."""
    end = time.time()
    params = {"query": promql, "start": end - seconds, "end": end, "step": step_s}
    out: dict[str, list[tuple[float, float]]] = {}
    for series in prom_get(prometheus_url, "/api/v1/query_range", params):
        key = series.get("metric", {}).get(label)
        if key is None:
            continue
        samples = [(float(t), float(v)) for t, v in series.get("values", [])]
        out[str(key)] = [(t, v) for t, v in samples if not math.isnan(v)]
    return out
