"""The operation-log entry of a run that crashed: written for it, since it could not.

A killed process (``kill -9``, out of memory, a lost machine) writes nothing; the
"record crashed runs" trigger starts :mod:`flows.record_crash`, which reads the run from the
Prefect API and writes this entry unless the run left its own.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opsflows.oplog import CRASHED, OpLogEntry

RUN_RESOURCE_PREFIX = "prefect.flow-run."


@dataclass(frozen=True)
class RunFacts:
    """What the Prefect API knows of a flow run."""

    flow_run_id: str
    name: str
    flow_name: str
    deployment_name: str | None
    state_type: str
    state_message: str
    started_at: datetime | None
    ended_at: datetime | None
    created_at: datetime
    parameters: Mapping[str, Any] = field(default_factory=dict)


def run_id_from(value: str) -> str:
    """A flow run id given bare or as the event resource id ``prefect.flow-run.<id>``."""
    return value.strip().removeprefix(RUN_RESOURCE_PREFIX)


def crash_entry(facts: RunFacts, now: datetime) -> OpLogEntry:
    """The entry of a crashed run: status crashed, impact unknown, what to check next."""
    where = f"deployment {facts.deployment_name}" if facts.deployment_name else "no deployment"
    started = facts.started_at or facts.created_at
    return OpLogEntry(
        operation=facts.flow_name,
        reason=f"run {facts.name} of {where}",
        started_at=started,
        finished_at=facts.ended_at or now,
        status=CRASHED,
        impact=(
            "unknown: the run's process died before it could record what it changed; check "
            "the environment it was changing"
        ),
        issues=(facts.state_message or "crashed without a message",),
        follow_up=(
            f"check what {facts.flow_name} run {facts.name} left half-done (its logs and "
            "artifacts in the Prefect UI), then rerun it or follow the runbook",
        ),
        flow_run_id=facts.flow_run_id,
        details={
            "deployment": facts.deployment_name,
            "parameters": dict(facts.parameters),
            "written_by": "record-crashed-run",
        },
    )
