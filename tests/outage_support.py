"""What the served triage cases need to judge a real outage: service-down runs and their
op-log rows, a quiet environment before a fault, and the story of a failed case."""

from __future__ import annotations

from typing import Any

import httpx

from blocks.kube import KubeEnvironment
from tests.incident_support import active_alerts, ops_target, start_quiet, wait_for
from tests.served_support import RunPath, load_block


def service_down_rows(stack: Any, environment: str, since: str) -> list[dict[str, Any]]:
    """The service-down op-log rows of ``environment`` that ended since ``since`` (ISO)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(ops_target(stack).conninfo(), row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT flow_run_id, status, details FROM ops_log WHERE operation = 'service-down'"
            " AND details->>'environment' = %s AND finished_at >= %s ORDER BY started_at",
            (environment, since),
        ).fetchall()


def service_down_running(runpath: RunPath) -> list[str]:
    """The service-down flow runs not yet ended (scheduled, pending, running or paused)."""
    body = {
        "flows": {"name": {"any_": ["service-down"]}},
        "flow_runs": {
            "state": {"type": {"not_any_": ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]}}
        },
    }
    resp = runpath.api.http.post("/flow_runs/filter", json=body)
    resp.raise_for_status()
    return [r["id"] for r in resp.json()]


def quiet_for_service_down(runpath: RunPath, environment: str, timeout: float = 180) -> None:
    """Wait until no alert that starts service-down is active in ``environment`` and no
    service-down run is still going, then close the ServiceDown group's leftovers. An earlier
    case's incident (HighErrorRate, reopened when its silence ended) may otherwise start a
    run that looks at staging while this case's release breaks it."""
    stack = runpath.stack

    def alerts() -> list[dict[str, Any]]:
        return active_alerts(stack, None, environment, runbook="service-down")

    wait_for(lambda: not alerts(), timeout, f"alerts of {environment} still active: {alerts()}")
    wait_for(lambda: not service_down_running(runpath), timeout, "service-down runs still going")
    start_quiet(stack, "ServiceDown", environment)


def settled_service_down_rows(
    runpath: RunPath, environment: str, since: str, timeout: float = 240
) -> list[dict[str, Any]]:
    """The service-down op-log rows of ``environment`` that ended since ``since``, once
    every service-down run has ended (a run writes its row when it ends)."""
    wait_for(lambda: not service_down_running(runpath), timeout, "service-down runs still going")
    return service_down_rows(runpath.stack, environment, since)


def outage_story(stack: Any, environment: str, since: str, deploy: dict[str, Any]) -> str:
    """What happened since ``since``, for a failure message: the deploy's end, every op-log
    entry (any operation) and the Deployment's revisions."""
    import psycopg

    with psycopg.connect(ops_target(stack).conninfo()) as conn:
        rows = conn.execute(
            "SELECT started_at, finished_at, operation, status, impact, flow_run_id,"
            " details->'decision'->>'action' FROM ops_log WHERE finished_at >= %s"
            " ORDER BY started_at",
            (since,),
        ).fetchall()
    block = load_block(KubeEnvironment, environment)
    url = f"{stack.kube_url}/apis/apps/v1/namespaces/{block.namespace}/replicasets"
    sets = httpx.get(url, timeout=10).json().get("items", [])
    revisions = sorted(
        (
            int(rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", 0)),
            rs["spec"]["template"]["spec"]["containers"][0]["image"],
            rs["metadata"].get("creationTimestamp"),
        )
        for rs in sets
    )
    return "\n".join(
        [
            f"deploy {deploy['id']} {deploy['state']['type']}: {deploy['state'].get('message')}",
            *(" | ".join(str(c) for c in row) for row in rows),
            *(f"revision {r}: {image} (created {when})" for r, image, when in revisions),
        ]
    )
