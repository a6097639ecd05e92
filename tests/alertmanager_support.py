"""Alertmanager webhook notifications (format version 4) as Alertmanager sends them.

Shared by the unit tests of the rules and the receiver, the served incident cases and the
incident benchmark: the body Alertmanager's ``webhook_configs`` POST, and the headers its
``http_config.authorization`` adds.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def alert(
    name: str = "ServiceDown",
    severity: str = "P1",
    status: str = "firing",
    fingerprint: str | None = None,
    runbook: str = "service-down",
    environment: str = "production",
    summary: str = "the service answers no requests",
    **labels: str,
) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "status": status,
        "labels": {
            "alertname": name,
            "severity": severity,
            "runbook": runbook,
            "environment": environment,
            **labels,
        },
        "annotations": {"summary": summary},
        "startsAt": now,
        "endsAt": now if status == "resolved" else GO_ZERO_TIME,
        "generatorURL": "http://prometheus.local/graph?g0.expr=up",
        "fingerprint": fingerprint or uuid.uuid4().hex[:16],
    }


def notification(
    alerts: list[dict[str, Any]], group_key: str | None = None, status: str | None = None
) -> dict[str, Any]:
    """A version-4 notification of one group (status: resolved only when every alert is)."""
    name = alerts[0]["labels"]["alertname"]
    key = group_key or f'{{}}:{{alertname="{name}", test="{uuid.uuid4()}"}}'
    firing = any(a["status"] == "firing" for a in alerts)
    common = {
        k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)
    }
    return {
        "version": "4",
        "groupKey": key,
        "truncatedAlerts": 0,
        "status": status or ("firing" if firing else "resolved"),
        "receiver": "opsflows",
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "alerts": alerts,
    }


def resolved(payload: dict[str, Any]) -> dict[str, Any]:
    """The same group, every alert resolved."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    alerts = [{**a, "status": "resolved", "endsAt": now} for a in payload["alerts"]]
    return {**payload, "status": "resolved", "alerts": alerts}


def post_args(payload: dict[str, Any] | bytes, token: str) -> dict[str, Any]:
    """``httpx.post``/TestClient keyword arguments: the body and Alertmanager's headers."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Alertmanager/0.27.0",
        "Authorization": f"Bearer {token}",
    }
    return {"content": body, "headers": headers}
