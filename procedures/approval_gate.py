"""Pause a run until the people the roles policy allows have answered its approval form.

Every approval a runbook asks for goes through :func:`ask`: the form is shown (Prefect pause
with ``wait_for_input``), each answer is judged against ``policy/roles.yaml``
(:mod:`decisions.access`), and

* an approval by someone the gate's roles do not cover (or a second approval by the same
  person) is **refused**: logged, kept in the operation-log entry under
  ``approval_refusals``, and the form is shown again with the refusal said above it, for
  the time that is left;
* a rejection by anyone who names themselves stops the change (stopping is always safe);
* the gate opens when enough *different* allowed people approved (two for replacing a live
  database);
* nobody answering in time is a timeout (``None``), whatever was approved so far.

The policy file is read at each answer, so a reviewed change to it applies to runs already
waiting.
"""

# No `from __future__ import annotations`: served runs pickle flow functions by value.

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from pydantic import ValidationError

from decisions.access import RolesPolicy, judge, normal, parse_policy, still_needed, who_may
from decisions.approvals import approver_name, form_errors
from opsflows.errors import ConfigurationError, GateRejected
from opsflows.settings import get_settings
from procedures.approval_form import ApprovalForm
from procedures.operation import current_run, running_again

F = TypeVar("F", bound=ApprovalForm)

#: Below this many seconds left, the form is not shown again: the gate times out.
MIN_WAIT_S = 2


@dataclass(frozen=True)
class GateAnswer:
    """What the people answered: approved by ``approvers``, or rejected by ``approver``."""

    approve: bool
    approver: str
    reason: str
    approvers: tuple[str, ...] = ()


def load_policy(path: Path | None = None) -> RolesPolicy:
    """The roles policy from ``path`` (default: the ``roles_file`` setting)."""
    return parse_policy(read_policy_document(path))


def read_policy_document(
    path: Path | None = None,
    *,
    what: str = "the roles policy",
    restore: str = "restore policy/roles.yaml or point OPSFLOWS_ROLES_FILE at your policy",
) -> Any:
    """The policy file's parsed YAML (default: the ``roles_file`` setting), unvalidated.

    ``what`` names the file in errors and ``restore`` says what to do when it is missing
    (the on-call schedule, ``procedures/oncall.py``, is read the same way).
    """
    where = path or get_settings().roles_file
    try:
        raw: Any = yaml.safe_load(Path(where).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{what} {where} does not exist", hint=restore) from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(
            f"{what} {where} is not valid YAML ({type(exc).__name__})",
            hint="fix the file; `python -c 'import yaml,sys; yaml.safe_load(open(sys.argv[1]))' F`",
        ) from exc
    return raw


def _status(
    gate: str, allowed: tuple[str, ...], counted: list[str], refused: list[dict[str, str]]
) -> str:
    lines = [f"> **Approval gate `{gate}`**: answered by {', '.join(allowed) or 'nobody'}."]
    if counted:
        lines.append(f"> Approved so far by **{', '.join(counted)}**; a different person must")
        lines.append("> approve as well.")
    for refusal in refused[-3:]:
        lines.append(f"> Refused: {refusal['why']}.")
    return "\n".join(lines) + "\n\n"


def pause_for(form: Any, timeout_s: int, poll_s: int, key: str) -> Any:
    """Pause this run for one answer of ``form``: the answer, or None when the pause expired.

    A form that does not validate raises pydantic's ``ValidationError`` (the caller shows
    it again for the time that is left).
    """
    try:
        return pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=poll_s, key=key)
    except FlowPauseTimeout:
        running_again()  # the server may have failed the run as the pause expired
        return None


def ask(
    form: type[F],
    description: str,
    *,
    gate: str,
    environment: str,
    runbook: str | None = None,
    timeout_s: int,
    poll_s: int,
    key: str,
) -> GateAnswer | None:
    """Pause until allowed people approved, anyone rejected, or ``timeout_s`` ran out (None).

    ``runbook`` defaults to the running flow's name (what the policy's roles list).

    Raises:
        ConfigurationError: the roles policy is missing, malformed or lacks ``gate`` (before
            the first pause: nothing waits on a gate nobody could open).
    """
    logger = get_run_logger()
    runbook = runbook or str(flow_run.flow_name)
    details = current_run().record.details
    policy = load_policy()
    allowed = who_may(policy, gate, runbook, environment)
    counted: list[str] = []
    refused: list[dict[str, str]] = details.setdefault("approval_refusals", [])
    deadline = time.monotonic() + timeout_s
    asked = 0
    while True:
        left = int(deadline - time.monotonic())
        if left < MIN_WAIT_S:
            return None
        asked += 1
        shown = form.with_initial_data(
            description=_status(gate, allowed, counted, refused) + description
        )
        try:
            answer = pause_for(shown, left, poll_s, f"{key}-{asked}")
            if answer is None:
                return None
        except ValidationError as exc:
            why = f"the form was refused ({form_errors(exc)})"
            refused.append({"gate": gate, "approver": "", "why": why})
            logger.warning("%s: %s; still waiting", gate, why)
            continue
        who = approver_name(answer.approver) or ""
        if not answer.approve:
            if who:
                return GateAnswer(False, who, str(answer.reason), tuple(counted))
            refused.append({"gate": gate, "approver": "", "why": "a rejection names nobody"})
            continue
        policy = load_policy()
        verdict = judge(policy, gate, runbook, environment, who, counted)
        if not verdict.counts:
            refused.append({"gate": gate, "approver": who, "why": verdict.why})
            logger.warning("%s: approval refused: %s; still waiting", gate, verdict.why)
            continue
        who = normal(who)  # as the policy names them
        counted.append(who)
        details.setdefault("approvals", []).append(
            {"gate": gate, "approver": who, "role": verdict.role, "reason": str(answer.reason)}
        )
        logger.info("%s: %s", gate, verdict.why)
        if still_needed(policy, gate, counted) == 0:
            return GateAnswer(True, ", ".join(counted), str(answer.reason), tuple(counted))


def confirmed(gate: str, environment: str, person: str, runbook: str | None = None) -> str:
    """A destructive confirmation typed as a run parameter: ``person`` must be allowed by
    ``gate`` (checked before anything changes); their name as the policy has it.

    Raises:
        GateRejected: nobody named, or a person the gate's roles do not cover (the refusal is
            kept in the operation-log entry under ``approval_refusals``).
    """
    runbook = runbook or str(flow_run.flow_name)
    verdict = judge(load_policy(), gate, runbook, environment, person)
    if not verdict.counts:
        refusal = {"gate": gate, "approver": person.strip(), "why": verdict.why}
        current_run().record.details.setdefault("approval_refusals", []).append(refusal)
        raise GateRejected(
            f"confirmation refused: {verdict.why}",
            hint=f"the confirmation must name a person whom policy/roles.yaml allows for {gate}",
        )
    return normal(person)
