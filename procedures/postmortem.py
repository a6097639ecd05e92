"""Closing an incident: the resolution notice and, for P1/P2, the post-mortem draft."""

from datetime import UTC, datetime

from prefect.artifacts import create_markdown_artifact

from blocks.postgres import PostgresTarget
from decisions.incidents import Incident, needs_postmortem
from decisions.postmortem import postmortem_markdown
from tasks.incidents import read_events, set_postmortem
from tasks.oplog import oplog_during


def write_postmortem(target: PostgresTarget, incident: Incident, own_run: str | None) -> str:
    """Publish the post-mortem draft artifact of a resolved incident; its key.

    The operation-log entries are those of every run that overlapped the incident (the
    incident's own run excluded: its entry is written after this).
    """
    key = f"incident-{incident.id}-postmortem"
    end = incident.resolved_at or datetime.now(UTC)
    entries = oplog_during(target, incident.triggered_at, end, own_run)
    create_markdown_artifact(
        key=key,
        markdown=postmortem_markdown(incident, read_events(target, incident.id), entries),
        description=f"Post-mortem draft of incident {incident.id} ({incident.severity})",
    )
    set_postmortem(target, incident.id, key)
    return key


def close(target: PostgresTarget, incident: Incident, own_run: str | None) -> str | None:
    """The post-mortem draft of a resolved P1/P2 (once); its artifact key, or None."""
    if incident.is_open or not needs_postmortem(incident.severity):
        return None
    return incident.postmortem or write_postmortem(target, incident, own_run)
