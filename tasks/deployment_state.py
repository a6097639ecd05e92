"""What the Prefect server says about the catalog's deployments: whether each is there and
ready to run (served, or its work pool has a live worker), and its last finished run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound

from decisions.preshift import LastRun, ServerDeployment
from opsflows import retry

_ENDED = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]


def _value(x: Any) -> str | None:
    return None if x is None else str(getattr(x, "value", x))


def _ended(run: FlowRun) -> datetime:
    """When the run ended; a run set Crashed or Failed before it started has no end time
    (and sorts first in PostgreSQL's DESC): its state's time stands in."""
    ended = run.end_time or (run.state.timestamp if run.state else None) or run.created
    assert ended is not None
    return ended


@task(name="read catalog deployments", **retry.NETWORK)
def server_deployments(
    names: Sequence[str],
) -> tuple[dict[str, ServerDeployment], dict[str, LastRun]]:
    """The deployments ``names`` ("flow/deployment") the server has, and each one's last
    finished run (newest end first)."""
    found: dict[str, ServerDeployment] = {}
    last: dict[str, LastRun] = {}
    pools: dict[str, bool] = {}
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                d = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            pool = d.work_pool_name
            if pool and pool not in pools:
                try:
                    pools[pool] = _value(client.read_work_pool(pool).status) == "READY"
                except ObjectNotFound:
                    pools[pool] = False
            found[name] = ServerDeployment(name, _value(d.status), pool, pools.get(pool or ""))
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_ENDED))
                ),
                sort=FlowRunSort.END_TIME_DESC,
                limit=10,
            )
            if runs:
                r = max(runs, key=_ended)
                last[name] = LastRun(
                    deployment=name,
                    run_id=str(r.id),
                    run_name=r.name,
                    state=_value(r.state_type) or "?",
                    ended_at=_ended(r),
                )
    return found, last
