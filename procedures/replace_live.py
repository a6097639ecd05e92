"""Replacing the live database with a verified restore: the approval and the kept name.

Shared by the restore runbook (a dump) and the restore-to-time runbook (a point in time):
two different DBAs approve (the ``replace-live-database`` gate of policy/roles.yaml); no
answer, a rejection or a refused gate drop the scratch database and leave live untouched.
"""

from datetime import UTC, datetime

from pydantic import Field

from blocks.postgres import PostgresTarget
from opsflows.errors import ApprovalTimedOut, ConfigurationError, GateRejected
from procedures import approval_gate
from procedures.approval_form import ApprovalForm
from procedures.approval_gate import GateAnswer
from procedures.operation import current_run
from tasks.restore import drop_scratch

_MAX_IDENT = 63


def keep_name(live: str) -> str:
    """The name the replaced live database is kept under."""
    stamp = datetime.now(UTC).strftime("_before_restore_%Y%m%d%H%M%S")
    return live[: _MAX_IDENT - len(stamp)] + stamp


class RestoreApproval(ApprovalForm):
    """Approve replacing the live database with the verified restore."""

    approve: bool = Field(
        default=False, description="On to replace the live database; leave off to reject."
    )
    reason: str = Field(default="", description="Why the live database is replaced.")


def await_replace_approval(
    admin: PostgresTarget,
    scratch: str,
    description: str,
    timeout_s: int,
    poll_s: int,
) -> GateAnswer:
    """Two different DBAs (the ``replace-live-database`` gate of policy/roles.yaml) approve.

    A live database is the production copy whatever its block is called, so the gate is
    judged for ``production``.
    """
    untouched = "the live database is untouched and the scratch database was dropped"
    try:
        approval = approval_gate.ask(
            RestoreApproval,
            description,
            gate="replace-live-database",
            environment="production",
            timeout_s=timeout_s,
            poll_s=poll_s,
            key="approve-replace-live",
        )
    except ConfigurationError:
        drop_scratch(admin, scratch)
        raise
    if approval is None:
        drop_scratch(admin, scratch)
        raise ApprovalTimedOut(
            f"the people the roles policy allows did not approve replacing the live database "
            f"within {timeout_s} s",
            hint=untouched,
        )
    current_run().record.details.update(
        approved_by=approval.approver, approved=approval.approve, approval_reason=approval.reason
    )
    if not approval.approve:
        drop_scratch(admin, scratch)
        raise GateRejected(
            f"replacing the live database was rejected by {approval.approver}: "
            f"{approval.reason or 'no reason'}",
            hint=untouched,
        )
    return approval
