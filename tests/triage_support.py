"""Helpers the served triage cases share: an Alertmanager silence, incidents, checklists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prefect.logging import disable_run_logger

from decisions.incidents import Incident, Opening
from devstack.stack import StackInfo
from tests.alertmanager_support import alert
from tests.incident_support import ops_target
from tests.served_support import RunPath


@contextmanager
def silenced(stack: StackInfo, environment: str) -> Iterator[None]:
    """An Alertmanager silence of every alert of ``environment`` for the body, so the real
    alert chain (which starts the same runbook through the incident flow) does not race the
    case under test."""
    now = datetime.now(UTC)
    body = {
        "matchers": [
            {"name": "environment", "value": environment, "isRegex": False, "isEqual": True}
        ],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=15)).isoformat(),
        "createdBy": "opsflows served triage tests",
        "comment": "the case under test runs the triage runbook itself",
    }
    resp = httpx.post(f"{stack.alertmanager_url}/api/v2/silences", json=body, timeout=10)
    resp.raise_for_status()
    silence = resp.json()["silenceID"]
    try:
        yield
    finally:
        httpx.delete(f"{stack.alertmanager_url}/api/v2/silence/{silence}", timeout=10)


def open_incident(
    stack: StackInfo,
    environment: str,
    marker: str,
    alertname: str = "ServiceDown",
    severity: str = "P1",
    runbook: str = "service-down",
) -> Incident:
    """An incident for ``environment`` as the receiver records one for ``alertname``."""
    from tasks.incidents import record_opening

    fired = alert(alertname, severity, environment=environment, summary=marker)
    opening = Opening(
        group_key=f"test-triage:{marker}",
        source="alertmanager",
        title=f"{alertname} in {environment} ({marker})",
        severity=severity,
        alerts=(fired,),
        runbook=runbook,
        environment=environment,
    )
    with disable_run_logger():
        recorded = record_opening.fn(ops_target(stack), opening)
    assert recorded.opened and recorded.incident is not None
    return recorded.incident


def resolve(stack: StackInfo, incident_id: int) -> None:
    from tasks.incidents import move_incident

    with disable_run_logger():
        move_incident.fn(ops_target(stack), incident_id, "resolved", "test teardown")


def artifacts_of(runpath: RunPath, run_id: str, key: str) -> list[dict[str, Any]]:
    body = {"artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [run_id]}}}
    resp = runpath.api.http.post("/artifacts/filter", json=body)
    resp.raise_for_status()
    return list(resp.json())


def checklist_of(runpath: RunPath, run_id: str, key: str) -> dict[str, dict[str, str]]:
    """The run's one checklist table artifact ``key``, by item."""
    found = artifacts_of(runpath, run_id, key)
    assert len(found) == 1, f"{len(found)} {key} artifacts for run {run_id}"
    rows = found[0]["data"]
    rows = json.loads(rows) if isinstance(rows, str) else rows
    return {row["item"]: row for row in rows}


def app_faults(stack: StackInfo, env: str) -> dict[str, str]:
    """The app's injected faults by pod (``GET /_sim/faults``)."""
    return dict(httpx.get(stack.app_url(env) + "/_sim/faults", timeout=10).json()["faults"])


@contextmanager
def app_fault(stack: StackInfo, env: str, kind: str, **extra: Any) -> Iterator[None]:
    """The app's fault ``kind`` in every serving pod of ``env`` for the body."""
    app = stack.app_url(env)
    body = {"fault": kind, **extra}
    httpx.post(app + "/_sim/faults", json=body, timeout=10).raise_for_status()
    try:
        yield
    finally:
        httpx.delete(app + "/_sim/faults", timeout=10).raise_for_status()


def prometheus_value(stack: StackInfo, promql: str) -> float | None:
    """The first value of an instant query (None: no series)."""
    resp = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
    resp.raise_for_status()
    result = resp.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None
