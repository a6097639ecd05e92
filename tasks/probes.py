"""HTTP probes against the service (health checks and smoke tests)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from prefect import task

from opsflows import retry
from tasks.http import http_errors


def probe(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET ``url``: status code, latency in seconds and the first bytes of the body."""
    started = time.perf_counter()
    with http_errors("probe", url):
        response = httpx.get(url, timeout=timeout)
    return {
        "url": url,
        "status": response.status_code,
        "latency_s": round(time.perf_counter() - started, 4),
        "body": response.text[:500],
    }


@task(name="check health endpoint", **retry.NETWORK)
def check_health(service_url: str, path: str = "/health") -> dict[str, Any]:
    """Probe the service's health endpoint once."""
    return probe(service_url.rstrip("/") + path)
