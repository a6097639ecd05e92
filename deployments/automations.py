"""The Prefect automations that page when a production change or a credential rotation fails.

Both are created (or updated in place, by name) by ``opsflows bootstrap``:

- the failure automation reacts to the server's own flow-run state events, so it pages for
  runs started from the UI, a schedule or the CI webhook alike, and for Crashed runs as well
  as Failed ones;
- the "crash unresponsive runs" automation marks a deployment run Crashed when it stops
  sending heartbeats (its process was killed, ran out of memory or lost its machine: nothing
  is left to report a state, and the run would show Running forever). That Crashed state is
  what the failure automation pages on. Heartbeats come from the flow engine in the run's own
  process, every ``Settings.run_heartbeat_s`` (``deployments/serve.py`` sets it); a process
  that runs deployments any other way (a worker) needs ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
  at most half of ``Settings.unresponsive_after_s``, or its live runs get crashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from opsflows.errors import ConfigurationError

AUTOMATION_NAME = "opsflows: page when a production change or rotation fails"
#: Flows whose deployment runs page someone when they fail or crash (runs of the flow
#: function outside a deployment, e.g. in tests, do not). staged-deploy always ends in
#: production; hotfix and rollback default to it; a rotation that stops half-way must be
#: looked at even though it leaves a working credential.
WATCHED_FLOWS = ("staged-deploy", "hotfix", "rollback", "rotate-credentials")
PAGE_BLOCK = "custom-webhook/page"
FAILURE_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed")

UNRESPONSIVE_NAME = "opsflows: crash unresponsive runs"
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
#: Any of these after a heartbeat means the run is alive or no longer needs watching (a
#: suspended run has no process on purpose; it sends heartbeats again once resumed).
ALIVE_OR_DONE_EVENTS = (
    HEARTBEAT_EVENT,
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.Suspended",
)
#: Prefect's minimum heartbeat is 30 s: a shorter silence would crash live runs.
MIN_SILENCE_S = 45
UNRESPONSIVE_MESSAGE = (
    "No heartbeat for {seconds} s: the process running this flow run is gone (killed, out of "
    "memory or machine lost). Marked Crashed by the automation '{name}'; the change may have "
    "stopped half-way: check the operation log and the environment, then follow the runbook."
)

SUBJECT = "[P1] {{ deployment.name }} run {{ flow_run.name }} {{ flow_run.state.name }}"
BODY = (
    "Flow run {{ flow_run.name }} ({{ flow_run.id }}) of deployment {{ deployment.name }}"
    " ended {{ flow_run.state.name }}: {{ flow_run.state.message }}\n"
    "Parameters: {{ flow_run.parameters }}\n"
    "Look at its operation-log artifact and logs in the Prefect UI, then follow the runbook."
)


def failure_automation(
    block_document_id: UUID,
    flows: Sequence[str] = WATCHED_FLOWS,
    name: str = AUTOMATION_NAME,
) -> Any:
    """The automation object (not saved): failed/crashed deployment runs of ``flows`` notify."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification

    if not flows:
        raise ConfigurationError("the failure automation needs at least one flow name")
    return Automation(
        name=name,
        description="Pages when a deployment run of " + ", ".join(flows) + " fails or crashes.",
        trigger=EventTrigger(
            expect=set(FAILURE_EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            # Both must hold: the run is of a watched flow, and it came from a deployment.
            match_related=[
                {"prefect.resource.role": "flow", "prefect.resource.name": list(flows)},
                {"prefect.resource.role": "deployment"},
            ],
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=SUBJECT, body=BODY)],
    )


def create_failure_automation(
    flows: Sequence[str] = WATCHED_FLOWS,
    block: str = PAGE_BLOCK,
    name: str = AUTOMATION_NAME,
) -> UUID:
    """Create the failure automation, or update the one with the same name; its id.

    Args:
        flows: Flow names whose failed or crashed deployment runs page.
        block: Notification block ("type-slug/name") that receives the page.
        name: Automation name (the idempotency key: one automation per name).
    """
    from prefect.blocks.core import Block

    try:
        notification: Block = Block.load(block)  # type: ignore[assignment]
    except ValueError as exc:
        raise ConfigurationError(
            f"notification block {block} is missing", hint="run `opsflows bootstrap` first"
        ) from exc
    block_id = notification._block_document_id
    if block_id is None:
        raise ConfigurationError(f"notification block {block} has no saved document")
    return _save_by_name(failure_automation(block_id, flows, name), name)


def unresponsive_automation(silence_s: int, name: str = UNRESPONSIVE_NAME) -> Any:
    """The automation object (not saved): a deployment run silent for ``silence_s`` crashes.

    A proactive trigger per flow run: after a heartbeat, another heartbeat or a final state
    must follow within ``silence_s``, else the run is set Crashed with a message naming the
    cause. Only deployment runs are watched: a flow function called directly (tests, scripts)
    keeps Prefect's default heartbeat interval, which is longer than the silence allowed here.
    """
    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState

    if silence_s < MIN_SILENCE_S:
        raise ConfigurationError(
            f"an unresponsive-run window of {silence_s} s is too short",
            hint=f"use at least {MIN_SILENCE_S} s; runs send a heartbeat every 30 s at best",
        )
    return Automation(
        name=name,
        description=f"Marks a deployment run Crashed after {silence_s} s without a heartbeat.",
        trigger=EventTrigger(
            after={HEARTBEAT_EVENT},
            expect=set(ALIVE_OR_DONE_EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "deployment"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=silence_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=UNRESPONSIVE_MESSAGE.format(seconds=silence_s, name=name),
            )
        ],
    )


def create_unresponsive_automation(silence_s: int, name: str = UNRESPONSIVE_NAME) -> UUID:
    """Create the "crash unresponsive runs" automation, or update the one with that name.

    Args:
        silence_s: Seconds without a heartbeat after which a run is marked Crashed
            (``Settings.unresponsive_after_s``).
        name: Automation name (the idempotency key: one automation per name).
    """
    return _save_by_name(unresponsive_automation(silence_s, name), name)


def _save_by_name(automation: Any, name: str) -> UUID:
    """Save ``automation`` over the one named ``name`` (deleting duplicates), or create it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(name)
        for extra in existing[1:]:  # a name is meant to be unique; heal duplicates
            client.delete_automation(extra.id)
    if existing:
        automation.id = existing[0].id
        automation.update()
    else:
        automation.create()
    return UUID(str(automation.id))
