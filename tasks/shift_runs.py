"""What the Prefect server says about a shift's runs: those paused for a person, and those
scheduled before the next shift ends (the handoff note's inputs)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from decisions.handoff import PausedRun, Upcoming
from decisions.oplog_view import flow_run_url
from opsflows import retry


def _names(client: object, ids: set[UUID]) -> dict[UUID, str]:
    """``deployment id -> name`` for the runs' deployments."""
    if not ids:
        return {}
    found = client.read_deployments(  # type: ignore[attr-defined]
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(ids)))
    )
    return {d.id: d.name for d in found}


@task(name="read paused runs", **retry.NETWORK)
def paused_runs(ui_url: str | None) -> list[PausedRun]:
    """Every run paused now (waiting for an approval or a form), oldest first."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
            limit=200,
        )
        names = _names(client, {r.deployment_id for r in runs if r.deployment_id})
    return [
        PausedRun(
            name=r.name,
            deployment=names.get(r.deployment_id, "(no deployment)") if r.deployment_id else "-",
            since=(r.state.timestamp if r.state else r.created) or r.created,  # type: ignore[arg-type]
            url=flow_run_url(ui_url, str(r.id)),
        )
        for r in runs
    ]


@task(name="read scheduled runs", **retry.NETWORK)
def scheduled_runs(after: datetime, before: datetime) -> list[Upcoming]:
    """The scheduled runs expected to start between ``after`` and ``before``."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                expected_start_time=FlowRunFilterExpectedStartTime(after_=after, before_=before),
            ),
            limit=200,  # the server refuses more per request
        )
        names = _names(client, {r.deployment_id for r in runs if r.deployment_id})
    return [
        Upcoming(names.get(r.deployment_id, r.name), r.expected_start_time)
        for r in runs
        if r.deployment_id and r.expected_start_time
    ]
