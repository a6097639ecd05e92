"""Incident response runbook: page by severity, escalate until acknowledged, triage, close.

The runbook's "When a P1 alert fires": the on-call is paged, the incident is posted in
#incidents, the runbook the alert names starts (or the timeline says there is no automated
triage for it yet), people acknowledge and resolve it in the Prefect UI, Alertmanager's
resolution closes it, and a P1/P2 gets a post-mortem draft.

Started by the Alertmanager receiver (``incident_id``: the incident it opened), by the
watchdog trigger when a scheduled or changing runbook run fails or crashes (``failed_run``),
or by hand with ``incident_id`` to pick an open incident up again. The incident lives in the
``incidents`` table; this run only acts on it, so a second run of the same incident carries
on where the first stopped: levels already paged are not paged again (and none once it was
acknowledged). That is how a reopened incident (its alert group flapped) is answered: the
receiver starts a second run, which tells #incidents it is back, starts the alert's runbook
again (it decides afresh) and pages no one twice.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

import time
from typing import Any

from prefect import flow

from blocks.postgres import PostgresTarget
from decisions.crashed_runs import run_id_from
from decisions.incidents import Delays, paging_plan, unannounced_reopening
from decisions.watchdogs import watchdog_opening
from opsflows.errors import ConfigurationError
from opsflows.settings import get_settings
from procedures.incident import (
    announce,
    due_pages,
    publish_timeline,
    respond,
    send_page,
    start_triage,
    this_run,
)
from procedures.operation import OPS_DB, ROUTING, load_block, operation_log, try_load_routing
from procedures.postmortem import close
from tasks.flow_runs import read_run_facts, run_state
from tasks.incidents import (
    add_event,
    open_incident_of_run,
    read_events,
    read_incident,
    record_opening,
    set_flow_run,
)
from tasks.oplog import oplog_status


@flow(name="incident")
def incident(
    incident_id: int | None = None,
    failed_run: str | None = None,
    ops_db: str = OPS_DB,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Respond to an incident: page by severity, escalate until acknowledged, triage, close.

    Args:
        incident_id: The incident to respond to (the receiver opened it); give this or
            ``failed_run``.
        failed_run: A failed or crashed runbook run (its id, or ``prefect.flow-run.<id>``):
            opens its incident, or adds the run to the one already open for its deployment;
            a crashed incident run: takes its open incident over.
        ops_db: PostgresTarget block of the operations database (the incidents table).
        routing: NotificationRouting block: severity routes, the ``incidents`` channel and
            the escalation levels ``secondary`` and ``lead``.
    """
    settings = get_settings()
    delays = Delays(
        p2_page_after_s=settings.incident_p2_page_after_s,
        secondary_after_s=settings.incident_secondary_after_s,
        lead_after_s=settings.incident_lead_after_s,
    )
    deadline = time.monotonic() + settings.incident_watch_s
    target = load_block(PostgresTarget, ops_db)
    routes = try_load_routing(routing)
    what = f"incident {incident_id}" if incident_id is not None else f"failed run {failed_run}"
    with operation_log("incident", f"respond to {what}", target, routes) as rec:
        if failed_run is not None:
            opened = open_for_failed_run(target, run_id_from(failed_run))
            if isinstance(opened, str):
                rec.impact = f"no change: {opened}"
                return {"incident_id": None, "why": opened}
            incident_id = opened
        if incident_id is None:
            raise ConfigurationError("give incident_id or failed_run")
        run_id, run_url = this_run()
        record = read_incident(target, incident_id)
        rec.reason = f"incident {record.id} ({record.severity}): {record.title}"
        set_flow_run(target, record.id, run_id)
        first = not any(e.kind == "triage" for e in read_events(target, record.id))
        if first and record.is_open:
            for page in due_pages(record, read_events(target, record.id), delays):
                send_page(target, record, page, run_url)  # P1: the on-call first, at once
            announce(target, record, "triggered")
            if not paging_plan(record.severity, delays):
                add_event(target, record.id, "recorded", f"{record.severity}: nobody is notified")
            start_triage(target, record)
        else:
            add_event(target, record.id, "picked up", f"flow run {run_id} responds")
            back = unannounced_reopening(read_events(target, record.id))
            if back is not None and record.is_open:
                announce(target, record, f"reopened: {back.text}")  # #incidents heard 'resolved'
                start_triage(target, record)  # the fault is back: its runbook looks again
        record = respond(target, record.id, delays, deadline, run_url)
        postmortem = close(target, record, run_id)
        if not record.is_open:
            announce(target, record, f"resolved by {record.resolved_by}")
        publish_timeline(target, read_incident(target, record.id))
        rec.details.update(
            incident_id=record.id,
            severity=record.severity,
            status=record.status,
            group_key=record.group_key,
            postmortem=postmortem,
            **record.measurements(),
        )
        if postmortem:
            rec.follow_up.append(
                f"post-mortem of incident {record.id} ({record.severity}): complete the draft "
                f"(artifact {postmortem}) and hold the review"
            )
        if record.is_open:
            rec.follow_up.append(
                f"incident {record.id} is still {record.status}: resolve it (Alertmanager, or "
                f"run incident/incident with incident_id={record.id} and tick resolve)"
            )
        rec.impact = f"no change (incident {record.id} {record.status}; runbooks log their own)"
        return {"incident_id": record.id, "status": record.status, "postmortem": postmortem}


def open_for_failed_run(target: PostgresTarget, run_id: str) -> int | str:
    """Open the incident of a failed or crashed runbook run; its id, or why there is none.

    A deployment that already has an open incident gets this run added to it, and its own
    run goes on responding (the reason returned says so); when that run is gone, this one
    takes over. A crashed incident run's incident is taken over the same way.
    """
    facts = read_run_facts(run_id)
    if facts.flow_name == "incident":
        orphan = open_incident_of_run(target, run_id) if facts.state_type == "CRASHED" else None
        return orphan if orphan is not None else f"incident run {facts.name} left nothing open"
    opening = watchdog_opening(facts, oplog_status(target, run_id))
    if isinstance(opening, str):
        return opening
    recorded = record_opening(target, opening)
    assert recorded.incident is not None
    existing = recorded.incident
    if recorded.opened or not _alive(existing.flow_run_id):
        return existing.id
    return f"run {facts.name} added to open incident {existing.id} (its run responds)"


def _alive(flow_run_id: str | None) -> bool:
    state = run_state(flow_run_id) if flow_run_id else None
    return state is not None and state not in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
