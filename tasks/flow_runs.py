"""Flow runs through the Prefect API: read one (the crashed-run recorder's facts), start one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import task
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from decisions.crashed_runs import RunFacts
from opsflows import retry
from opsflows.errors import ConfigurationError, NotFoundError


@task(name="read flow run", **retry.NETWORK)
def read_run_facts(flow_run_id: str) -> RunFacts:
    """The run's name, flow, deployment, state and times.

    Raises:
        ConfigurationError: ``flow_run_id`` is not a UUID.
        NotFoundError: no such flow run.
    """
    try:
        run_uuid = UUID(flow_run_id)
    except ValueError as exc:
        raise ConfigurationError(
            f"{flow_run_id!r} is not a flow run id",
            hint="pass the UUID shown on the run's page in the Prefect UI",
        ) from exc
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_uuid)
        except ObjectNotFound as exc:
            raise NotFoundError(f"flow run {flow_run_id} does not exist") from exc
        flow = client.read_flow(run.flow_id)
        deployment = None
        if run.deployment_id:
            try:
                deployment = client.read_deployment(run.deployment_id)
            except ObjectNotFound:
                deployment = None  # deleted since the run started: the run still counts
    state = run.state
    return RunFacts(
        flow_run_id=str(run.id),
        name=run.name,
        flow_name=flow.name,
        deployment_name=deployment.name if deployment else None,
        state_type=state.type.value if state else "UNKNOWN",
        state_message=(state.message or "") if state else "",
        started_at=run.start_time,
        ended_at=run.end_time,
        created_at=run.created or run.expected_start_time or datetime.now(UTC),
        parameters=dict(run.parameters),
    )


@task(name="start deployment run", **retry.NETWORK)
def start_deployment(
    name: str, parameters: dict[str, Any], idempotency_key: str, tags: list[str]
) -> dict[str, str] | None:
    """Start a run of deployment ``name`` ("flow/deployment") without waiting for it.

    The idempotency key makes a retried or repeated start return the same run. None when the
    deployment does not exist (yet).
    """
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, idempotency_key=idempotency_key, tags=tags
        )
    return {"flow_run_id": str(run.id), "name": run.name, "deployment": name}


@task(name="read flow run state", **retry.NETWORK)
def run_state(flow_run_id: str) -> str | None:
    """The run's state type (``RUNNING``, ``PAUSED``, ``CRASHED``...); None when it is gone."""
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(flow_run_id))
        except (ObjectNotFound, ValueError):
            return None
    return run.state.type.value if run.state else None
