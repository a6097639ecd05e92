"""Shift handoff note runbook (RUNBOOK.md "After Your On-Call Shift": "write a quick handoff
note for next person"; "participate in post-mortems for any P1 incidents").

At each shift change (the schedule of ``policy/oncall.yaml``), or when the outgoing engineer
starts it from the UI: what happened during the shift, read from the operation log, the
incidents table, the runs paused for a person, Prometheus' firing alerts and the runs
scheduled before the next shift ends (:mod:`decisions.handoff`). The note is the
``handoff-note`` Markdown artifact, is sent to the incoming engineer's channel (the
schedule's ``channels``; else the routing's P3 route), and is kept in the operation log
(``details.note``). Changes nothing.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.settings import get_current_settings

from blocks.kube import KubeEnvironment
from decisions.handoff import HandoffFacts, build_handoff, shift_to_hand_over
from decisions.oncall import utc
from decisions.oplog_view import entry_view
from opsflows.errors import ConfigurationError, OpsError, scrub
from procedures.oncall import load_schedule, schedule_file
from procedures.operation import (
    ROUTING,
    deliver,
    load_block,
    operation_log,
    try_load_ops_db,
    try_load_routing,
)
from tasks.incidents import list_incidents
from tasks.metrics import firing_alerts
from tasks.oplog import list_entries
from tasks.shift_runs import paused_runs, scheduled_runs


@flow(name="handoff-note")
def handoff_note(
    at: datetime | None = None,
    environment: str = "production",
    routing: str = ROUTING,
    send: bool = True,
) -> dict[str, Any]:
    """Write the shift's handoff note for the next on-call engineer. Changes nothing.

    Args:
        at: write it as of this instant (default now). Within an hour after a shift change
            the note covers the shift that just ended, later the shift under way.
        environment: KubeEnvironment block whose Prometheus gives the firing alerts.
        routing: NotificationRouting block (the P3 route, when the incoming engineer has no
            channel in the schedule).
        send: send the note to the incoming engineer (off: the artifact and the log only).
    """
    ops_db, routes = try_load_ops_db(), try_load_routing(routing)
    with operation_log("handoff note", "shift handoff", ops_db, routes) as rec:
        schedule = load_schedule()
        if schedule is None:
            raise ConfigurationError(
                f"no on-call schedule at {schedule_file()}",
                hint="restore policy/oncall.yaml or point OPSFLOWS_ONCALL_FILE at yours",
            )
        if ops_db is None:
            raise ConfigurationError(
                "the note is built from the operation log, and the ops-db block is missing",
                hint="run `opsflows bootstrap` (or save the ops-db PostgresTarget block)",
            )
        now = utc(at) if at is not None else datetime.now(UTC)
        shift, following, outgoing, incoming = shift_to_hand_over(schedule, now)
        ui = get_current_settings().ui_url
        rows = list_entries(ops_db, since=shift.start, limit=1000)
        facts = HandoffFacts(
            shift=shift,
            outgoing=outgoing,
            incoming=incoming,
            now=now,
            entries=[entry_view(r, ui) for r in rows],
            incidents=list_incidents(ops_db, recent=200),
            paused=paused_runs(ui),
            firing=_firing(environment, rec.issues),
            upcoming=scheduled_runs(now, following.end),
            next_end=following.end,
        )
        note = build_handoff(facts)
        create_markdown_artifact(
            key="handoff-note",
            markdown=note.markdown,
            description=f"Handoff {outgoing} → {incoming}, shift {shift.index}",
        )
        rec.impact = "no change (a note for the next on-call)"
        rec.details.update(
            shift=shift.index,
            shift_start=shift.start.isoformat(),
            shift_end=shift.end.isoformat(),
            outgoing=outgoing,
            incoming=incoming,
            counts=note.summary(),
            note=note.markdown,
        )
        if send:
            channels = list(schedule.channels.get(incoming, ()))
            targets = channels or (routes.targets("P3") if routes else [])
            subject = f"handoff note: {outgoing} → {incoming} (shift {shift.index})"
            rec.details["sent_to"] = targets
            rec.details["delivered"] = deliver(targets, "P3", subject, note.markdown)
        return {"outgoing": outgoing, "incoming": incoming, **note.summary()}


def _firing(environment: str, issues: list[str]) -> list[dict[str, Any]] | None:
    """Prometheus' firing alerts; an unreachable Prometheus is said in the note's issues."""
    try:
        env = load_block(KubeEnvironment, environment)
        return [a for a in firing_alerts(env.prometheus_url) if a.get("state") == "firing"]
    except OpsError as exc:
        issues.append(f"firing alerts unknown: {scrub(str(exc))}")
        return None
