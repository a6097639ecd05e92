"""The form a person fills in when a run pauses for a decision (Prefect ``RunInput``).

Every pause asks the same three things: the decision, who decides (required, never blank:
the operation log names them) and why. Each pause subclasses it to say what ``approve`` means.
"""

from prefect.input import RunInput
from pydantic import Field

from decisions.approvals import APPROVER_PATTERN


class ApprovalForm(RunInput):
    """Approve or reject, with the approver's name and the reason."""

    approve: bool = Field(default=False, description="On to approve; leave off to reject.")
    approver: str = Field(
        min_length=1,
        pattern=APPROVER_PATTERN,
        description="Your name (required; recorded in the operation log).",
    )
    reason: str = Field(default="", description="Why (recorded in the operation log).")
