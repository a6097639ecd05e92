"""The pre-shift check's test page: sent to the incoming engineer, then the run pauses until
they confirm in a form (Prefect ``RunInput``) that it reached their phone."""

# No `from __future__ import annotations`: served runs pickle flow functions by value.

import time

from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import Field, ValidationError

from decisions.approvals import APPROVER_PATTERN, form_errors
from decisions.preshift import Ack, PageRoute, ack_description
from procedures.approval_gate import MIN_WAIT_S, pause_for


class PageAckForm(RunInput):
    """Did the test page arrive on your phone?"""

    received: bool = Field(default=False, description="On when the test page arrived.")
    engineer: str = Field(
        min_length=1,
        pattern=APPROVER_PATTERN,
        description="Your name (required; the paged engineer must confirm).",
    )


def await_ack(route: PageRoute, timeout_s: int, poll_s: int) -> Ack | None:
    """Pause until someone answers the form; None when nobody did within ``timeout_s``. A
    form that does not validate is shown again for the time that is left."""
    deadline = time.monotonic() + timeout_s
    asked = 0
    while True:
        left = int(deadline - time.monotonic())
        if left < MIN_WAIT_S:
            return None
        asked += 1
        form = PageAckForm.with_initial_data(description=ack_description(route, timeout_s))
        try:
            answer = pause_for(form, left, poll_s, f"test-page-{asked}")
            if answer is None:
                return None
        except ValidationError as exc:
            get_run_logger().warning("test page form refused (%s); still waiting", form_errors(exc))
            continue
        return Ack(bool(answer.received), str(answer.engineer))
