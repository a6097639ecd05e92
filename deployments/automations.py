"""The Prefect automation that pages when a production change or a credential rotation fails.

Created (or updated in place, by name) by ``opsflows bootstrap``. It reacts to the server's
own flow-run state events, so it pages for runs started from the UI, a schedule or the CI
webhook alike, and for runs that crashed (process killed, machine lost) as well as failed.
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
    from prefect.client.orchestration import get_client

    try:
        notification: Block = Block.load(block)  # type: ignore[assignment]
    except ValueError as exc:
        raise ConfigurationError(
            f"notification block {block} is missing", hint="run `opsflows bootstrap` first"
        ) from exc
    block_id = notification._block_document_id
    if block_id is None:
        raise ConfigurationError(f"notification block {block} has no saved document")
    automation = failure_automation(block_id, flows, name)
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
