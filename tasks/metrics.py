"""Prometheus steps: instant PromQL queries over the HTTP API."""

from __future__ import annotations

import math
from typing import Any

import httpx
from prefect import task

from opsflows import retry
from opsflows.errors import ConfigurationError, ServiceUnavailable
from tasks.http import http_errors


def error_rate_query(env: str, window: str = "1m", job: str = "web-app") -> str:
    """PromQL: share of ``/`` requests answered 5xx in ``env`` over ``window``.

    NaN (no traffic in the window) and an empty result (never scraped) both mean "no data".
    """
    sel = f'job="{job}", env="{env}", path="/"'
    return (
        f'(sum(rate(http_requests_total{{{sel}, status=~"5.."}}[{window}])) or vector(0))'
        f" / sum(rate(http_requests_total{{{sel}}}[{window}]))"
    )


def p95_latency_query(env: str, window: str = "1m", job: str = "web-app") -> str:
    """PromQL: p95 latency of ``/`` in seconds in ``env`` over ``window``."""
    sel = f'job="{job}", env="{env}", path="/"'
    return (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(http_request_duration_seconds_bucket{{{sel}}}[{window}])))"
    )


def query(prometheus_url: str, promql: str, timeout: float = 5.0) -> float | None:
    """The scalar value of an instant query; None when the query returns no data.

    Missing data is not zero: callers judge ``None`` as inconclusive.
    """
    url = prometheus_url.rstrip("/") + "/api/v1/query"
    with http_errors("query Prometheus", url):
        response = httpx.get(url, params={"query": promql}, timeout=timeout)
    if response.status_code == 400:
        raise ConfigurationError(f"Prometheus rejected the query {promql!r}: {response.text[:200]}")
    if response.status_code >= 500:
        raise ServiceUnavailable(f"Prometheus answered {response.status_code} for {promql!r}")
    payload: dict[str, Any] = response.json()
    result = payload.get("data", {}).get("result", [])
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def query_vector(
    prometheus_url: str, promql: str, label: str, timeout: float = 5.0
) -> dict[str, float]:
    """An instant query's series by the value of ``label`` (NaN values left out; no series:
    an empty dict, which callers judge as no data)."""
    url = prometheus_url.rstrip("/") + "/api/v1/query"
    with http_errors("query Prometheus", url):
        response = httpx.get(url, params={"query": promql}, timeout=timeout)
    if response.status_code == 400:
        raise ConfigurationError(f"Prometheus rejected the query {promql!r}: {response.text[:200]}")
    if response.status_code >= 500:
        raise ServiceUnavailable(f"Prometheus answered {response.status_code} for {promql!r}")
    out: dict[str, float] = {}
    for series in response.json().get("data", {}).get("result", []):
        value = float(series["value"][1])
        if not math.isnan(value):
            out[str(series.get("metric", {}).get(label, ""))] = value
    return out


def rule_names(prometheus_url: str) -> list[str]:
    """Every alerting and recording rule Prometheus has loaded, as ``<group>/<rule>``.

    The group is named after the application its rules watch (``web-app/ServiceDown``), so
    :func:`decisions.deploy.rules_for_app` finds an app's rules by either name.
    """
    url = prometheus_url.rstrip("/") + "/api/v1/rules"
    with http_errors("list Prometheus rules", url):
        response = httpx.get(url, timeout=5.0)
    response.raise_for_status()
    groups = response.json().get("data", {}).get("groups", [])
    return [
        f"{group.get('name', '')}/{rule['name']}"
        for group in groups
        for rule in group.get("rules", [])
    ]


@task(name="check Prometheus", **retry.NETWORK)
def check_prometheus(prometheus_url: str, job: str = "web-app") -> dict[str, Any]:
    """Confirm Prometheus answers and how many targets of ``job`` are up."""
    up = query(prometheus_url, f'sum(up{{job="{job}"}})')
    total = query(prometheus_url, f'count(up{{job="{job}"}})')
    return {"targets_up": up, "targets": total, "rules": len(rule_names(prometheus_url))}


@task(name="read firing alerts", **retry.NETWORK)
def firing_alerts(prometheus_url: str) -> list[dict[str, Any]]:
    """Prometheus' active alerts (``/api/v1/alerts``: labels, state, activeAt, value)."""
    url = prometheus_url.rstrip("/") + "/api/v1/alerts"
    with http_errors("list Prometheus alerts", url):
        response = httpx.get(url, timeout=5.0)
    if response.status_code >= 500:
        raise ServiceUnavailable(f"Prometheus answered {response.status_code} for its alerts")
    response.raise_for_status()
    alerts: list[dict[str, Any]] = response.json().get("data", {}).get("alerts", [])
    return alerts
