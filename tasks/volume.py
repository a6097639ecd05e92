"""The app's volume, through the app's own API (never a path on this machine).

``GET /_sim/volume`` lists it (sizes per directory, the log files with their ages);
``POST /_sim/volume/logs/delete`` removes named files of its ``logs/`` and nothing else: the
app refuses any other name, so a runbook can never delete outside the volume's logs.
"""

from __future__ import annotations

from typing import Any

import httpx
from prefect import task

from opsflows import retry
from opsflows.errors import ConfigurationError, PermanentError, ServiceUnavailable
from tasks.http import http_errors


def _volume_url(service_url: str) -> str:
    return service_url.rstrip("/") + "/_sim/volume"


def _answer(response: httpx.Response, action: str) -> dict[str, Any]:
    if response.status_code >= 500 and response.status_code != 507:
        raise ServiceUnavailable(f"{action}: the app answered {response.status_code}")
    if response.status_code == 404:
        raise ConfigurationError(
            f"{action}: the app has no volume ({response.text[:200]})",
            hint="start the app with --volume (the devstack does)",
        )
    if response.status_code >= 400:
        raise PermanentError(
            f"{action}: the app refused ({response.status_code}): {response.text[:300]}"
        )
    body: dict[str, Any] = response.json()
    return body


@task(name="read the app volume", **retry.NETWORK)
def read_volume(service_url: str) -> dict[str, Any]:
    """The volume's listing: path, size, used bytes, per-directory sizes, log files."""
    url = _volume_url(service_url)
    with http_errors("read the app volume", url):
        response = httpx.get(url, timeout=10.0)
    return _answer(response, "read the app volume")


@task(name="clear log files of the app volume")
def delete_logs(service_url: str, names: list[str]) -> dict[str, Any]:
    """Remove these files of the volume's ``logs/`` (not retried: a second try would be
    refused for the files the first one removed)."""
    url = _volume_url(service_url) + "/logs/delete"
    with http_errors("clear old logs", url):
        response = httpx.post(url, json={"names": names}, timeout=30.0)
    return _answer(response, "clear old logs")
