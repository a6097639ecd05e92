"""The DBA approval a production migration pauses for (the ``change-schema`` gate).

``policy/roles.yaml`` says which environments the gate holds in (production) and who may
answer it (a DBA). The run pauses after the lint gate and the lock plan, before the
pre-migration backup and before anything changes: a rejection or a timeout leaves the
database exactly as it was. CI-started migrations wait for the DBA like any other.
"""

# No `from __future__ import annotations`: served runs pickle flow functions by value.

from pydantic import Field

from opsflows.errors import ApprovalTimedOut, GateRejected
from procedures import approval_gate
from procedures.approval_form import ApprovalForm
from procedures.operation import current_run

GATE = "change-schema"
UNTOUCHED = "nothing was backed up or changed: the database is as it was"


class SchemaChangeApproval(ApprovalForm):
    """Approve applying the pending migrations shown above."""

    approve: bool = Field(
        default=False, description="On to apply the migrations; leave off to reject."
    )
    reason: str = Field(default="", description="Why (recorded in the operation log).")


def needs_approval(environment: str) -> bool:
    """Whether a migration in ``environment`` waits for the ``change-schema`` gate.

    Raises:
        ConfigurationError: the roles policy is missing, malformed or lacks the gate.
    """
    return approval_gate.load_policy().gate(GATE).applies(environment)


def approve_schema_change(
    database: str, environment: str, plan_text: str, timeout_s: int, poll_s: int
) -> str:
    """Pause until a DBA approves the plan; the approver's name.

    Raises:
        GateRejected: someone rejected it (with their reason).
        ApprovalTimedOut: no allowed person approved within ``timeout_s``.
    """
    description = (
        f"Apply the migrations below to **{database}** in **{environment}**. Approving takes "
        "the pre-migration backup, then applies them under the change limits; rejecting "
        f"stops here ({UNTOUCHED}).\n\n{plan_text}"
    )
    answer = approval_gate.ask(
        SchemaChangeApproval,
        description,
        gate=GATE,
        environment=environment,
        timeout_s=timeout_s,
        poll_s=poll_s,
        key="approve-schema-change",
    )
    if answer is None:
        raise ApprovalTimedOut(
            f"no DBA the roles policy allows approved the migration of {database} in "
            f"{environment} within {timeout_s} s",
            hint=f"{UNTOUCHED}; run it again and ask a DBA to approve",
        )
    current_run().record.details.update(approved_by=answer.approver, approved=answer.approve)
    if not answer.approve:
        raise GateRejected(
            f"the migration of {database} was rejected by {answer.approver}: "
            f"{answer.reason or 'no reason'}",
            hint=UNTOUCHED,
        )
    return answer.approver
