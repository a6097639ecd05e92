"""Telling #incidents once: an announcement is claimed under the incident's row lock.

Two incident runs of one opening can reach the same line (the run Alertmanager's
resolution woke and one a redelivery started, each seeing the incident closed); the claim
makes the second one see the first one's timeline line and stay quiet.
"""

from __future__ import annotations

from prefect import task

from blocks.postgres import PostgresTarget
from decisions.incidents import ANNOUNCED, INCIDENTS_CHANNEL, Event, told_since_opening
from opsflows import retry
from tasks.postgres import connect

SENDING = "sending"


@task(name="claim announcement", **retry.ONCE)
def claim_announcement(target: PostgresTarget, incident_id: int, text: str) -> int | None:
    """The timeline line (its id) this run may post, or None when the channel heard it."""
    with connect(target) as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT id FROM incidents WHERE id = %s FOR UPDATE", (incident_id,))
        rows = cur.execute(
            "SELECT at, kind, text FROM incident_events WHERE incident_id = %s ORDER BY id",
            (incident_id,),
        ).fetchall()
        if told_since_opening([Event(at, kind, said) for at, kind, said in rows], text):
            return None
        row = cur.execute(
            "INSERT INTO incident_events (incident_id, kind, text) VALUES (%s, %s, %s)"
            " RETURNING id",
            (incident_id, ANNOUNCED, f"#{INCIDENTS_CHANNEL}: {text} ({SENDING})"),
        ).fetchone()
    assert row is not None
    return int(row[0])


@task(name="record announcement", **retry.ONCE)
def settle_announcement(target: PostgresTarget, event_id: int, text: str, delivered: int) -> None:
    """Put how many channels got the announcement on its claimed timeline line."""
    with connect(target) as conn:
        conn.execute(
            "UPDATE incident_events SET text = %s WHERE id = %s",
            (f"#{INCIDENTS_CHANNEL}: {text} ({delivered})", event_id),
        )
