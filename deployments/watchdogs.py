"""The deployments events start: the crash recorder and the incident response, each with the
triggers that watch the runbooks' runs (``deployments.catalog`` lists them with the rest)."""

from __future__ import annotations

from typing import Any

from prefect.events import DeploymentEventTrigger

from flows.incident import incident
from flows.record_crash import record_crashed_run


def crash_recorder(runbook_flows: list[str]) -> Any:
    """The ``record-crashed-run`` deployment, started by a trigger whenever a deployment run
    of one of ``runbook_flows`` crashes: it writes the entry the dead run could not."""
    trigger = DeploymentEventTrigger(
        name="record crashed runbook runs",
        expect={"prefect.flow-run.Crashed"},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related=[
            {"prefect.resource.role": "flow", "prefect.resource.name": sorted(runbook_flows)},
            {"prefect.resource.role": "deployment"},
        ],
        parameters={"flow_run_id": "{{ event.resource.id }}"},
    )
    return record_crashed_run.to_deployment(
        name="record-crashed-run",
        description="Writes the operation-log entry of a runbook run that crashed (its process "
        "was killed or lost); started by its trigger, or by hand with the run's id.",
        tags=["oplog", "watchdog"],
        triggers=[trigger],
    )


def incident_response(watched: list[str]) -> Any:
    """The ``incident`` deployment: started by the Alertmanager receiver with an
    ``incident_id``, and by its watchdog trigger whenever a deployment run of one of
    ``watched`` (the scheduled runbooks and every change) fails or crashes."""
    trigger = DeploymentEventTrigger(
        name="open an incident for a failed or crashed runbook run",
        expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related=[
            {"prefect.resource.role": "flow", "prefect.resource.name": sorted(watched)},
            {"prefect.resource.role": "deployment"},
        ],
        parameters={"failed_run": "{{ event.resource.id }}"},
    )
    # A crashed incident run (its process died) leaves its incident to a new run.
    orphans = DeploymentEventTrigger(
        name="pick up the incident of a crashed incident run",
        expect={"prefect.flow-run.Crashed"},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related=[
            {"prefect.resource.role": "flow", "prefect.resource.name": [incident.name]},
            {"prefect.resource.role": "deployment"},
        ],
        parameters={"failed_run": "{{ event.resource.id }}"},
    )
    return incident.to_deployment(
        name="incident",
        description="Respond to an incident: page by severity (P1 at once, P2 after 15 min "
        "unless acknowledged, P3 email, P4 recorded), escalate to the secondary and the lead "
        "until someone acknowledges in the UI, start the alert's triage runbook, close on "
        "resolution with a post-mortem draft for P1/P2. Started by Alertmanager (through "
        "the receiver), by a failed or crashed runbook run, or by hand with incident_id.",
        tags=["incident", "watchdog"],
        triggers=[trigger, orphans],
    )
