"""Reading a flow run's facts from the real Prefect server (the crashed-run recorder and the
incident watchdog read them), including a run whose deployment was deleted since it ran."""

from __future__ import annotations

import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.logging import disable_run_logger
from prefect.states import Crashed

from opsflows.errors import NotFoundError
from tasks.flow_runs import read_run_facts


@flow(name="flow-runs-probe")
def probe() -> None:
    """Never run: only its deployment and a scheduled run of it are created."""


def test_a_run_whose_deployment_was_deleted_still_reads(prefect_api: str) -> None:
    """Test teardowns and people delete deployments; the watchdog triggers that fire for
    their crashed runs afterwards must still read the run (they failed with ObjectNotFound)."""
    name = f"gone-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("flow-runs-probe")
        deployment_id = client.create_deployment(flow_id=flow_id, name=name)
        run = client.create_flow_run_from_deployment(deployment_id, parameters={})
        # A crashed run (deleting a deployment deletes only its runs still scheduled).
        client.set_flow_run_state(run.id, Crashed(message="killed"), force=True)
        with disable_run_logger():
            before = read_run_facts.fn(str(run.id))
        client.delete_deployment(deployment_id)
        with disable_run_logger():
            after = read_run_facts.fn(str(run.id))
        client.delete_flow_run(run.id)
    assert before.deployment_name == name
    assert (after.flow_run_id, after.flow_name) == (str(run.id), "flow-runs-probe")
    assert (after.deployment_name, after.state_type) == (None, "CRASHED")


def test_an_unknown_run_is_not_found(prefect_api: str) -> None:
    missing = str(uuid.uuid4())
    with disable_run_logger(), pytest.raises(NotFoundError, match=missing):
        read_run_facts.fn(missing)
