"""What the incident tests and the incident benchmark read: rows, the sink, the receiver."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from blocks.postgres import PostgresTarget
from decisions.incidents import Event, Incident
from tests.alertmanager_support import post_args

T = TypeVar("T")

#: Incident paging delays shrunk for the served tier and the incident benchmark (the served
#: process and the worker inherit them): P2 pages after 4 s, the secondary after 4 s, the lead
#: after 60 s, and an incident run stops watching after 4 min (incidents nobody resolves end
#: by themselves). A P1 pages the on-call at once whatever these say. The delays count from
#: the incident's opening, not from its run's start: a worker that starts the run 20 s late
#: under load leaves a test that acknowledges after the secondary's page 40 s before the lead
#: is due (at 30 s a CI run once saw the lead paged before the acknowledgement landed).
INCIDENT_DELAYS = {
    "OPSFLOWS_INCIDENT_P2_PAGE_AFTER_S": "4",
    "OPSFLOWS_INCIDENT_SECONDARY_AFTER_S": "4",
    "OPSFLOWS_INCIDENT_LEAD_AFTER_S": "60",
    "OPSFLOWS_INCIDENT_WATCH_S": "240",
}


def group_key(alertname: str, environment: str) -> str:
    """Alertmanager's group key for the route's ``group_by: [alertname, environment]``."""
    return f'{{}}:{{alertname="{alertname}", environment="{environment}"}}'


def ops_target(stack: Any) -> PostgresTarget:
    """The operations database as the ``ops-db`` block points at it (not saved)."""
    from devstack import stack as devstack

    password = devstack.stack_secrets(Path(stack.state_dir))["opsflows"]
    return PostgresTarget(
        host=stack.host,
        port=stack.postgres_port,
        database="opsflows",
        user="opsflows",
        password=password,
    )


def alertmanager_token(stack: Any) -> str:
    from devstack import stack as devstack

    return devstack.stack_secrets(Path(stack.state_dir))["alertmanager_webhook"]


def post_alerts(stack: Any, payload: dict[str, Any] | bytes, token: str | None = None) -> Any:
    """POST a notification to the receiver as Alertmanager does; the response."""
    token = alertmanager_token(stack) if token is None else token
    return httpx.post(stack.webhook_url + "/alertmanager", **post_args(payload, token), timeout=60)


def incidents_of(stack: Any, group_key: str) -> list[Incident]:
    """Every incident (open or not) of an alert group, oldest first."""
    from tasks.incidents import list_incidents

    found = list_incidents(ops_target(stack), recent=1000, group_key=group_key)
    return sorted(found, key=lambda i: i.id)


def count_incidents(stack: Any) -> int:
    import psycopg

    from tasks.incident_schema import ensure_schema

    ensure_schema(ops_target(stack))
    with psycopg.connect(ops_target(stack).conninfo()) as conn:
        row = conn.execute("SELECT count(*) FROM incidents").fetchone()
    return int(row[0]) if row else 0


def incident(stack: Any, incident_id: int) -> Incident:
    from prefect.logging import disable_run_logger

    from tasks.incidents import read_incident

    with disable_run_logger():
        found: Incident = read_incident.fn(ops_target(stack), incident_id)
    return found


def timeline(stack: Any, incident_id: int) -> list[Event]:
    from tasks.incidents import read_events

    return read_events(ops_target(stack), incident_id)


def sink(stack: Any, channel: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.kube_url}/_sink/{channel}", timeout=10)
    response.raise_for_status()
    return list(response.json())


def sink_messages(stack: Any, channel: str, marker: str) -> list[dict[str, Any]]:
    """The notifications of ``channel`` that mention ``marker``."""
    return [m for m in sink(stack, channel) if marker in str(m.get("body"))]


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f} s: {what}")
        time.sleep(0.25)


def close_leftovers(stack: Any, group_key: str) -> int:
    """Close what earlier cases or sessions left of the group, so a case opens its own
    incident: open ones are resolved by "test setup", and so are those Alertmanager resolved
    (the group firing again soon after would reopen one as a flap, and page no one)."""
    import psycopg

    from tasks.incident_schema import ensure_schema

    ensure_schema(ops_target(stack))
    with psycopg.connect(ops_target(stack).conninfo()) as conn:
        done = conn.execute(
            "UPDATE incidents SET status = 'resolved', resolved_at = coalesce(resolved_at, now()),"
            " resolved_by = 'test setup' WHERE group_key = %s"
            " AND (resolved_at IS NULL OR resolved_by = 'alertmanager')",
            (group_key,),
        )
        return done.rowcount


def active_alerts(
    stack: Any, alertname: str | None, environment: str, runbook: str | None = None
) -> list[dict[str, Any]]:
    """Alertmanager's alerts of that name (any, when None), environment and ``runbook`` label
    (when given) that have not ended (silenced ones included)."""
    labels = {"alertname": alertname, "environment": environment, "runbook": runbook}
    params = {"filter": [f'{k}="{v}"' for k, v in labels.items() if v is not None]}
    resp = httpx.get(f"{stack.alertmanager_url}/api/v2/alerts", params=params, timeout=10)
    resp.raise_for_status()
    now = time.time()

    def ended(a: dict[str, Any]) -> bool:
        ends = a.get("endsAt")
        return bool(ends) and datetime.fromisoformat(ends.replace("Z", "+00:00")).timestamp() < now

    return [a for a in resp.json() if not ended(a)]


def start_quiet(stack: Any, alertname: str, environment: str, timeout: float = 120) -> None:
    """Wait until no ``alertname`` alert of ``environment`` is active, then close the group's
    leftovers: a case that injects that fault then opens a fresh incident. (An alert still
    firing from an earlier case, under a silence or ``keep_firing_for``, would carry on into
    the case's own fault without a new notification, so nothing new would open.)"""
    wait_for(
        lambda: not active_alerts(stack, alertname, environment),
        timeout,
        f"{alertname} in {environment} is still active from an earlier case",
    )
    close_leftovers(stack, group_key(alertname, environment))
