"""The Alertmanager receiver: ``POST /alertmanager`` opens, updates and resolves incidents.

Served by ``opsflows webhook serve`` beside the CI webhook. Alertmanager's
``webhook_configs`` post each notification of an alert group with a bearer token (its
``http_config.authorization``); the token is the Prefect ``Secret`` block
``alertmanager-webhook-token``. The rules (token, size, format) are pure code in
``decisions.alertmanager``; this module adds the I/O::

    401  bad or missing token           413  body over 1 MiB        400  not a version-4 body
    408  the body did not arrive within the receiver's body timeout
    202  a firing group opened an incident and started its ``incident/incident`` run
    202  "reopened": the group flapped (Alertmanager resolved it within the reopen window):
         its incident is open again, and a new run carries on where the last one stopped
         (no second page), unless that run is still alive
    200  "updated" / "unchanged": the group's open incident took the notification in
    200  "resolved": the group's incident is closed (its paused run is woken to close it)
    200  "ignored": a resolved group with no open incident (nothing to close; Alertmanager
         must not retry it, so no 4xx)
    503  the operations database or the Prefect API cannot be reached (Alertmanager retries)

One incident per open group (a unique index), one flow run per incident (the idempotency
key ``incident-<id>``, ``incident-<id>-reopened-<n>`` after its n-th reopening): a redelivered
notification changes nothing and starts nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from blocks.postgres import PostgresTarget
from decisions.alertmanager import MAX_BODY_BYTES, bearer_valid, parse_notification
from decisions.incidents import Incident, Opening, alert_opening, may_resume, pause_expired
from decisions.webhook import Rejected
from deployments.webhook import Unavailable, read_body
from opsflows.errors import OpsError, scrub
from tasks.incidents import Recorded, read_incident, record_opening, set_flow_run

log = logging.getLogger("opsflows.alertmanager")

#: Saved by `opsflows bootstrap` (devstack/bootstrap.py: ALERTMANAGER_TOKEN_BLOCK).
TOKEN_BLOCK = "alertmanager-webhook-token"
OPS_DB_BLOCK = "ops-db"
INCIDENT_DEPLOYMENT = "incident/incident"
#: The "who" of the resume call that wakes a paused incident run (the forms accept it).
WAKER = "alertmanager"
#: How long a wake keeps trying while the run is between two pauses.
WAKE_SECONDS = 30.0


class IncidentDesk(Protocol):
    """Where notifications go: the incidents table and the incident runs (a test seam)."""

    def record(self, opening: Opening) -> Recorded: ...

    def start(self, incident: Incident, key: str) -> str: ...

    def keep(self, incident: Incident, flow_run_id: str) -> bool: ...

    def wake(self, incident: Incident) -> str: ...


class PrefectDesk:
    """The incidents table (the ``ops-db`` block) and incident runs through the Prefect API."""

    def __init__(
        self,
        ops_db_block: str = OPS_DB_BLOCK,
        deployment: str = INCIDENT_DEPLOYMENT,
        block_ttl: float = 60.0,
    ) -> None:
        self.ops_db_block = ops_db_block
        self.deployment = deployment
        self.block_ttl = block_ttl
        self._target: PostgresTarget | None = None
        self._read_at = 0.0

    def target(self) -> PostgresTarget:
        if self._target is None or time.monotonic() - self._read_at > self.block_ttl:
            try:
                loaded: Any = PostgresTarget.load(self.ops_db_block)
            except ValueError as exc:
                raise Unavailable(
                    f"block opsflows-postgres-target/{self.ops_db_block} is missing; "
                    "run `opsflows bootstrap`"
                ) from exc
            except Exception as exc:  # the Prefect API is down or refused us
                raise Unavailable(f"cannot read block {self.ops_db_block!r}") from exc
            self._target, self._read_at = loaded, time.monotonic()
        return self._target

    def record(self, opening: Opening) -> Recorded:
        target = self.target()
        try:
            recorded: Recorded = record_opening.fn(target, opening)
        except OpsError as exc:
            raise Unavailable(f"the incidents table cannot be written: {exc.message}") from exc
        return recorded

    def start(self, incident: Incident, key: str) -> str:
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name(self.deployment)
                run = client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters={"incident_id": incident.id},
                    idempotency_key=key,
                    tags=["incident", f"incident:{incident.id}", f"severity:{incident.severity}"],
                )
        except Exception as exc:  # no deployment yet, API down: the redelivery starts it
            log.warning("starting the run of incident %s failed: %s", incident.id, exc)
            raise Unavailable(f"cannot start {self.deployment} ({type(exc).__name__})") from exc
        set_flow_run(self.target(), incident.id, str(run.id))
        return str(run.id)

    def keep(self, incident: Incident, flow_run_id: str) -> bool:
        """Keep ``flow_run_id`` as the reopened incident's run when it is still alive (it
        had not closed the incident yet, so it carries on responding); False when it ended."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(UUID(flow_run_id)).state
        except ObjectNotFound:
            return False
        except Exception as exc:  # the API is down: Alertmanager retries the notification
            raise Unavailable(f"cannot read flow run {flow_run_id} ({type(exc).__name__})") from exc
        if state is None or state.is_final():
            return False
        set_flow_run(self.target(), incident.id, flow_run_id)
        return True

    def wake(self, incident: Incident) -> str:
        """Make the incident's run look at the row again: resume it where it waits for a
        person, or start a run when none is alive (it ended watching). What was done.

        A run that was still alive and ends while this waits read the row on its way out
        (a resolution it closed, say): a second run is started only when the incident is
        open and still has that run as its own (it ended closing what has since reopened).
        """
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + WAKE_SECONDS
        alive = False
        while True:
            with get_client(sync_client=True) as client:
                run_id = UUID(incident.flow_run_id) if incident.flow_run_id else None
                state = client.read_flow_run(run_id).state if run_id else None
                # A run the server failed as its pause expired is alive for a moment more:
                # it sets itself Running again (decisions.incidents.pause_expired).
                waking = state is not None and pause_expired(state.type.value, state.message)
                if waking and time.monotonic() < deadline:
                    alive = True
                    time.sleep(1.0)
                    continue
                if run_id is None or state is None or state.is_final():
                    if alive and not self._still_its_run(incident):
                        return "ended (it read the row)"
                    key = f"{incident.run_key}-{incident.status}-{incident.severity}"
                    return "started " + self.start(incident, key)
                alive = True
                expires = state.state_details.pause_timeout if state.is_paused() else None
                if state.is_paused() and may_resume(expires, datetime.now(UTC)):
                    # The forms' booleans default to "no": this only makes the run look again.
                    answer = {"who": WAKER, "note": ""}
                    result = client.resume_flow_run(run_id, run_input=answer)
                    if result.status.value == "ACCEPT":
                        return "resumed"
                # A pause about to time out is left alone: the server fails a run resumed
                # after its pause expired, and the run wakes itself then and reads the row.
            if time.monotonic() > deadline:
                # Running between two pauses: it reads the row before its next pause.
                return "running"
            time.sleep(1.0)

    def _still_its_run(self, incident: Incident) -> bool:
        now = read_incident.fn(self.target(), incident.id)
        return now.is_open and now.flow_run_id == incident.flow_run_id


class AlertReceiver:
    """The ``/alertmanager`` endpoint: token, size, format, then the desk."""

    def __init__(
        self,
        token: Any,
        desk: IncidentDesk,
        max_body_bytes: int = MAX_BODY_BYTES,
        body_timeout_s: float | None = None,
    ) -> None:
        self.token = token
        self.desk = desk
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def receive(self, request: Request) -> JSONResponse:
        try:
            if not bearer_valid(await self.token(), request.headers.get("authorization")):
                raise Rejected(401, "missing or invalid bearer token")
            body = await read_body(request, self.max_body_bytes, timeout=self.body_timeout_s)
            opening = alert_opening(parse_notification(body))
            recorded = await run_in_threadpool(self.desk.record, opening)
            incident = recorded.incident
            if incident is None:
                return _answer(200, {"status": "ignored", "reason": "no open incident"}, opening)
            payload: dict[str, Any] = {"incident_id": incident.id, "severity": incident.severity}
            previous = recorded.previous_run_id
            if recorded.reopened and previous:
                kept = await run_in_threadpool(self.desk.keep, incident, previous)
                if kept:  # its run had not closed it yet: it reads the row again
                    incident = replace(incident, flow_run_id=previous)
                    answer = {"status": "reopened", **payload, "flow_run_id": previous}
                    return _answer(202, answer, opening, background=self._waking(incident))
            if incident.is_open and (recorded.opened or not incident.flow_run_id):
                # Opened, reopened, or a retry of either whose start failed: the run of this
                # opening (a second run of a reopened incident carries on, it pages no one twice).
                run_id = await run_in_threadpool(self.desk.start, incident, incident.run_key)
                status = "reopened" if incident.reopenings else "opened"
                return _answer(202, {"status": status, **payload, "flow_run_id": run_id}, opening)
        except Rejected as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return _answer(exc.status, {"error": exc.reason}, None, headers)
        except Unavailable as exc:
            return _answer(503, {"error": scrub(str(exc))}, None)
        payload["flow_run_id"] = incident.flow_run_id
        raised = any(c.startswith("severity raised") for c in recorded.changes)
        wake = self._waking(incident) if recorded.resolved or raised else None
        status = "resolved" if recorded.resolved else "updated" if recorded.changes else "unchanged"
        return _answer(200, {"status": status, **payload}, opening, background=wake)

    def _waking(self, incident: Incident) -> BackgroundTask:
        return BackgroundTask(self._wake, incident)

    def _wake(self, incident: Incident) -> None:
        try:
            done = self.desk.wake(incident)
        except Exception as exc:  # noqa: BLE001 - the run reads the row at its next step anyway
            log.warning("could not wake the run of incident %s: %s", incident.id, scrub(str(exc)))
            return
        log.info("incident %s (%s): run %s", incident.id, incident.status, done)


def _answer(
    status: int,
    payload: dict[str, Any],
    opening: Opening | None,
    headers: dict[str, str] | None = None,
    background: BackgroundTask | None = None,
) -> JSONResponse:
    level = logging.INFO if status < 500 else logging.WARNING
    group = f" ({opening.severity} {opening.title[:80]})" if opening else ""
    log.log(level, "alertmanager -> %s %s%s", status, payload, group)
    return JSONResponse(payload, status_code=status, headers=headers, background=background)
