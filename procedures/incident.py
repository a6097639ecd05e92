"""Responding to an incident: paging by plan, the forms people answer, the timeline artifact.

The incident flow (``flows/incident.py``) is a loop over the incident row: page whatever the
paging plan says is due, then pause for a person until the next page is due (the
acknowledge form while it escalates, the resolve form after), and look at the row again.
Alertmanager's resolution wakes a paused run through the same resume call the UI makes
(``deployments/alert_receiver.py``), so the loop also ends when the group resolves.
"""

# No `from __future__ import annotations`: served runs pickle flow functions by value, and
# this module's RunInput forms must keep real annotations (see procedures/bake_review.py).

import math
import time
from datetime import UTC, datetime
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.settings import get_current_settings
from pydantic import Field

from blocks.certificates import INVENTORY, CertificateInventory
from blocks.postgres import PostgresTarget
from decisions.approvals import APPROVER_PATTERN
from decisions.incident_triage import Triage, alert_endpoints, triage_for, triage_parameters
from decisions.incidents import (
    ACKNOWLEDGED,
    INCIDENTS_CHANNEL,
    MITIGATED,
    RESOLVED,
    Answer,
    Delays,
    Event,
    Incident,
    Page,
    announces,
    page_text,
    paging_plan,
    waits_for_acknowledgement,
)
from decisions.postmortem import form_description, timeline_markdown
from opsflows.errors import OpsError, scrub
from procedures.oncall import target_now
from procedures.operation import current_run, deliver, load_block, running_again
from tasks.flow_runs import start_deployment
from tasks.incident_announcements import claim_announcement, settle_announcement
from tasks.incidents import (
    add_event,
    add_runbook_run,
    move_incident,
    read_events,
    read_incident,
    record_page,
)

#: Timeline kinds: a page to ``level`` is recorded as ``paged <level>``.
PAGED = "paged "


class AcknowledgeForm(RunInput):
    """The on-call's answer to a page: acknowledge (escalation stops), who, a note."""

    acknowledge: bool = Field(
        default=False,
        description="Tick to acknowledge: you are on it and escalation stops. Leave unticked "
        "to add your note to the timeline only.",
    )
    who: str = Field(
        min_length=1, pattern=APPROVER_PATTERN, description="Your name (recorded on the incident)."
    )
    note: str = Field(default="", description="What you see or do (added to the timeline).")


class ResolveForm(RunInput):
    """After acknowledgement: mark the incident mitigated or resolved, or add a note."""

    mitigated: bool = Field(
        default=False, description="Tick when the impact has stopped (the cause may remain)."
    )
    resolve: bool = Field(
        default=False,
        description="Tick when the incident is over: it closes (P1/P2 get a post-mortem draft).",
    )
    who: str = Field(
        min_length=1, pattern=APPROVER_PATTERN, description="Your name (recorded on the incident)."
    )
    note: str = Field(default="", description="What happened (added to the timeline).")


def this_run() -> tuple[str, str]:
    """The flow run's id and its page in the Prefect UI ("" without a UI URL)."""
    run_id = str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    ui = get_current_settings().ui_url or ""
    return run_id, f"{ui}/runs/flow-run/{run_id}" if ui else ""


def sent_levels(events: list[Event]) -> set[str]:
    return {e.kind.removeprefix(PAGED) for e in events if e.kind.startswith(PAGED)}


def due_pages(incident: Incident, events: list[Event], delays: Delays) -> list[Page]:
    """The plan's pages not sent yet whose time has come (none once acknowledged)."""
    if incident.acknowledged or not incident.is_open:
        return []
    sent = sent_levels(events)
    elapsed = incident.elapsed_s(datetime.now(UTC))
    plan = paging_plan(incident.severity, delays)
    return [p for p in plan if p.level not in sent and p.after_s <= elapsed]


def next_page(incident: Incident, events: list[Event], delays: Delays) -> Page | None:
    sent = sent_levels(events)
    pending = [p for p in paging_plan(incident.severity, delays) if p.level not in sent]
    return pending[0] if pending else None


def send_page(target: PostgresTarget, incident: Incident, page: Page, run_url: str) -> int:
    """Page one level (never raising: a broken channel must not stop the escalation)."""
    routing = current_run().routing
    subject, body = page_text(incident, page.level, run_url)
    refs: list[str] = []
    if routing is not None:
        refs = routing.channel(page.channel) if page.channel else []
        # An escalation level without a channel of its own pages the severity's route again.
        refs = refs or routing.targets(incident.severity)
    # The person the on-call schedule has in that role now, at their channel (else `refs`).
    to = target_now(page.level, refs)
    person, delivered = to.person, 0
    if person:
        body += f"\nPaged: {person} ({to.why})"
    if not to.refs:
        get_run_logger().warning(
            "no channel to page %s through; the page is only logged", page.level
        )
    else:
        try:
            delivered = deliver(list(to.refs), incident.severity, subject, body)
        except Exception as exc:  # noqa: BLE001 - recorded on the timeline below
            get_run_logger().warning("page to %s failed: %s", page.level, scrub(str(exc)))
    record_page(target, incident.id, page.level, delivered, person)
    return delivered


def announce(target: PostgresTarget, incident: Incident, text: str) -> None:
    """Post to the incident channel (#incidents) for P1/P2; record it on the timeline."""
    routing = current_run().routing
    if not announces(incident.severity) or routing is None:
        return
    line = claim_announcement(target, incident.id, text)
    if line is None:  # another run of this opening told the channel already
        return
    subject = f"incident {incident.id}: {text}"
    body = f"{incident.title}\nEnvironment: {incident.environment or '-'}; status {text}"
    try:
        delivered = deliver(routing.channel(INCIDENTS_CHANNEL), incident.severity, subject, body)
    except Exception as exc:  # noqa: BLE001 - recorded, never fatal
        get_run_logger().warning("posting to #%s failed: %s", INCIDENTS_CHANNEL, scrub(str(exc)))
        delivered = 0
    settle_announcement(target, line, text, delivered)


def start_triage(target: PostgresTarget, incident: Incident) -> str:
    """Start the triage runbook the alert's ``runbook`` label names, or say there is none.

    Once per opening: a reopened incident (the fault came back after Alertmanager resolved
    it) gets a run of its own, which looks again and decides again (nothing, if the service
    is fine by then); a redelivery or a second incident run of the same opening does not."""
    runbook = incident.runbook
    triage = triage_for(runbook)
    if triage is None:
        text = f"no automated triage for {runbook or 'an alert without a runbook label'}"
    elif (refused := triage.refusal(incident)) is not None:
        text = refused
    elif triage.per_endpoint:
        text = _start_per_endpoint(target, incident, triage)
    else:
        text = _start_one(target, incident, triage)
    add_event(target, incident.id, "triage", text)
    return text


def _start_one(
    target: PostgresTarget, incident: Incident, triage: Triage, endpoint: str | None = None
) -> str:
    """Start ``triage`` once (for ``endpoint``, one of several runs, when given)."""
    runbook = incident.runbook
    key = f"{incident.run_key}-triage-{runbook}" + (f"-{endpoint}" if endpoint else "")
    started = start_deployment(
        triage.deployment,
        triage_parameters(triage, incident, endpoint),
        key,
        ["incident", f"incident:{incident.id}"],
    )
    if started is None:
        return f"no automated triage for {runbook} (no deployment {triage.deployment} yet)"
    add_runbook_run(target, incident.id, {"runbook": runbook, **started})
    what = f"{triage.deployment} for {endpoint}" if endpoint else triage.deployment
    return f"started {what}: flow run {started['name']}"


def _start_per_endpoint(target: PostgresTarget, incident: Incident, triage: Triage) -> str:
    """One run per certificate-inventory endpoint the firing alerts' ``instance`` names;
    an instance that names none is refused on the timeline (the pages stand)."""
    try:
        watched = load_block(CertificateInventory, INVENTORY)
    except OpsError as exc:
        return f"no automated triage for {incident.runbook}: {scrub(str(exc))}"
    known = [(e.name, e.url) for e in watched.endpoints]
    matched, unmatched = alert_endpoints(incident, known)
    lines = [_start_one(target, incident, triage, name) for name in matched]
    if unmatched:
        names = ", ".join(f"{n} {u}" for n, u in known) or "none"
        lines.append(
            f"no automated triage for {incident.runbook} of {', '.join(unmatched)}: no endpoint "
            f"of the certificate inventory {INVENTORY} has that URL (known: {names}); add it "
            "to the inventory block, or start renew-certificate by hand with its endpoint"
        )
    return "; ".join(lines)


def publish_timeline(target: PostgresTarget, incident: Incident) -> None:
    """Rewrite the incident's timeline artifact (a new version per step; never fatal)."""
    try:
        events = read_events(target, incident.id)
        create_markdown_artifact(
            key=f"incident-{incident.id}-timeline",
            markdown=timeline_markdown(incident, events),
            description=f"Incident {incident.id} ({incident.severity}): {incident.status}",
        )
    except Exception as exc:  # noqa: BLE001 - the table keeps the timeline regardless
        get_run_logger().warning("could not publish the timeline: %s", scrub(str(exc)))


def wait_for_answer(form: type[RunInput], description: str, timeout_s: float) -> Answer | None:
    """Pause the run for a person up to ``timeout_s``; their answer, or None for no answer.

    A pause that times out leaves the run Paused on the server, where it could neither run
    tasks nor pause again: it is set Running again, so the next level can be paged.
    """
    timeout = max(1, math.ceil(timeout_s))
    poll = 1 if timeout <= 300 else 5
    try:
        answer: Any = pause_flow_run(
            wait_for_input=form.with_initial_data(description=description),
            timeout=timeout,
            poll_interval=poll,
        )
    except FlowPauseTimeout:
        running_again()
        return None
    return Answer(
        who=str(answer.who).strip(),
        note=str(answer.note or "").strip(),
        acknowledge=bool(getattr(answer, "acknowledge", False)),
        mitigated=bool(getattr(answer, "mitigated", False)),
        resolve=bool(getattr(answer, "resolve", False)),
    )


def apply_answer(target: PostgresTarget, incident: Incident, answer: Answer) -> None:
    """Record what the person said: acknowledged, mitigated, resolved, or a note."""
    moves = [(answer.acknowledge, ACKNOWLEDGED), (answer.mitigated, MITIGATED)]
    moves.append((answer.resolve, RESOLVED))
    moved = False
    for wanted, status in moves:
        if wanted:
            moved = move_incident(target, incident.id, status, answer.who, answer.note) or moved
    if not moved and answer.note:
        add_event(target, incident.id, "note", f"{answer.who}: {answer.note}")


def respond(
    target: PostgresTarget, incident_id: int, delays: Delays, deadline: float, run_url: str
) -> Incident:
    """Page, escalate and wait for people until the incident resolves or ``deadline``
    (``time.monotonic()``) passes; the incident as it is then."""
    incident = read_incident(target, incident_id)
    while incident.is_open:
        events = read_events(target, incident.id)
        for page in due_pages(incident, events, delays):
            send_page(target, incident, page, run_url)
        incident = read_incident(target, incident_id)
        events = read_events(target, incident.id)
        publish_timeline(target, incident)
        left = deadline - time.monotonic()
        if left <= 0 or not incident.is_open:
            break
        escalating = waits_for_acknowledgement(incident.severity) and not incident.acknowledged
        upcoming = next_page(incident, events, delays) if escalating else None
        if upcoming is not None:
            left = min(left, upcoming.after_s - incident.elapsed_s(datetime.now(UTC)))
        form = AcknowledgeForm if escalating else ResolveForm
        asking = "acknowledge" if escalating else "resolve"
        description = form_description(incident, events, asking, upcoming)
        answer = wait_for_answer(form, description, left)
        if answer is not None:
            apply_answer(target, incident, answer)
        incident = read_incident(target, incident_id)
    return incident
