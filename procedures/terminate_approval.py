"""The database-slow runbook's approval to terminate backends outside its auto-kill policy
(the roles policy's ``terminate-backend`` gate): the form, the pause, and what a refusal
leaves recorded (nothing terminated, the restart recommendation, the follow-up)."""

# No `from __future__ import annotations`: served runs pickle flow functions by value.

from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from decisions.triage import Check
from decisions.triage_database import Target
from decisions.triage_database_checks import approval_markdown, restart_recommendation
from opsflows.errors import ApprovalTimedOut, ConfigurationError, GateRejected
from procedures import approval_gate
from procedures.approval_form import ApprovalForm
from procedures.operation import current_run
from procedures.triage import TriageRun


class TerminateApproval(ApprovalForm):
    """Approve terminating the listed backends of the database."""

    approve: bool = Field(
        default=False, description="On to terminate the listed backends; leave off to reject."
    )
    reason: str = Field(default="", description="Why they are (or are not) terminated.")


def await_approval(
    triage: TriageRun,
    environment: str,
    database: str,
    targets: tuple[Target, ...],
    timeout_s: int,
    poll_s: int,
) -> str:
    """Pause for a person's approval to terminate ``targets``; the approver's name.

    Raises:
        GateRejected: rejected, the form named nobody, or (ApprovalTimedOut) no answer in
            time: none of them is terminated.
    """
    rec = current_run().record
    description = approval_markdown(database, targets, timeout_s)
    create_markdown_artifact(
        markdown=description, key="database-slow-approval", description="What terminating does"
    )
    pids = ", ".join(str(t.session.pid) for t in targets)
    triage.note(f"asked a person to approve terminating pid {pids} (timeout {timeout_s} s)")
    rec.details["asked"] = [t.session.pid for t in targets]
    untouched = f"pid {pids} not terminated"
    try:
        approval = approval_gate.ask(
            TerminateApproval,
            description,
            gate="terminate-backend",
            environment=environment,
            timeout_s=timeout_s,
            poll_s=poll_s,
            key="approve-terminate",
        )
    except ConfigurationError as exc:
        _not_approved(triage, database, targets, exc.message, untouched)
        raise
    if approval is None:
        why = f"nobody approved terminating pid {pids} within {timeout_s} s"
        _not_approved(triage, database, targets, why, untouched)
        raise ApprovalTimedOut(why, hint=f"{untouched}; end them by hand if still needed")
    who = approval.approver
    rec.details.update(approver=who, approved=approval.approve, approval_reason=approval.reason)
    if not approval.approve:
        why = f"terminating pid {pids} was rejected by {who}: {approval.reason or 'no reason'}"
        _not_approved(triage, database, targets, why, untouched)
        raise GateRejected(why, hint=f"{untouched}; the database may still be slow")
    triage.note(f"{who} approved terminating pid {pids}: {approval.reason or 'no reason'}")
    return who


def _not_approved(
    triage: TriageRun, database: str, targets: tuple[Target, ...], why: str, untouched: str
) -> None:
    rec = current_run().record
    for t in targets:
        triage.record(Check(f"end pid {t.session.pid}", False, f"not approved: {why}"))
    triage.record(restart_recommendation(database))
    triage.note(f"{why}: {untouched}")
    ended = len(rec.details.get("terminated") or [])
    rec.impact = (
        f"{database}: terminated {ended} backend(s) by the auto-kill policy; {untouched}"
        if ended
        else f"no change: {untouched}"
    )
    rec.follow_up.append(f"{untouched}: the database may still be slow")
