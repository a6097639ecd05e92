"""The CI webhook receiver: a signed CI event starts the runbook deployment it maps to.

Prefect's incoming webhooks are a Prefect Cloud feature; this small ASGI service is the
self-hosted equivalent (``opsflows webhook serve``)::

    POST /webhook       a CI event (GitHub-style or the generic opsflows form, see
                        ``decisions/webhook.py``) -> 202 {"flow_run_id", "ui_url", ...}
    POST /alertmanager  an Alertmanager notification: opens, updates or resolves an incident
                        (``deployments/alert_receiver.py``)
    GET  /healthz       200 when the service is up

The rules (signature, freshness, routing, what CI may choose) are pure code in
``decisions.webhook``; this module adds the I/O around them: the body read with a size cap
(413) and a deadline (408), the HMAC secret from a Prefect ``Secret`` block (re-read every
minute, so rotating it needs no restart), a replay store of delivery ids and of digests of
the signed bytes in a small sqlite file (a restart keeps them), and the Prefect client that
starts the run with the delivery id as idempotency key. Nothing is started unless every check
passed; the secret, the signature and the body never reach a log line or a response. The HTTP
server's own limits (connections, header timeout) are ``deployments/webhook_server.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from decisions.webhook import (
    Rejected,
    RouteTable,
    RunRequest,
    check_content_type,
    decide,
    load_table,
)
from opsflows.errors import ConfigurationError, ServiceUnavailable, scrub

if TYPE_CHECKING:
    from deployments.alert_receiver import AlertReceiver

log = logging.getLogger("opsflows.webhook")

ROUTES_FILE = Path(__file__).resolve().parent / "webhook_routes.yaml"
SECRET_BLOCK = "webhook-secret"
SECRET_TTL_SECONDS = 60.0


@dataclass(frozen=True)
class StartedRun:
    """The flow run a delivery started."""

    flow_run_id: str
    ui_url: str


class Unavailable(ServiceUnavailable):
    """The receiver cannot act right now (Prefect down, secret block missing): answer 503."""


def load_routes(path: Path = ROUTES_FILE) -> RouteTable:
    """Read and validate the routing table; ``ConfigurationError`` says what and where."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read webhook routes {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"webhook routes {path} must be a mapping with a 'routes' list")
    try:
        return load_table(data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


class ReplayStore:
    """Replay keys (delivery ids, signed-bytes digests) seen within the replay TTL, in sqlite
    so a restart keeps them."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS deliveries ("
            " key TEXT PRIMARY KEY, expires_at REAL NOT NULL, flow_run_id TEXT)"
        )

    def claim(self, key: str, now: float, ttl: float) -> bool:
        """Record ``key`` as seen; False when it was already seen and has not expired."""
        return self.claim_all((key,), now, ttl) is None

    def claim_all(self, keys: tuple[str, ...], now: float, ttl: float) -> str | None:
        """Record every key as seen, or none of them: the first already seen, else None."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM deliveries WHERE expires_at < ?", (now,))
                for key in keys:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO deliveries (key, expires_at) VALUES (?, ?)",
                        (key, now + ttl),
                    )
                    if cur.rowcount != 1:
                        self._db.execute("ROLLBACK")
                        return key
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return None

    def record(self, keys: str | tuple[str, ...], flow_run_id: str) -> None:
        """Remember which run the delivery started (answered back on a replay)."""
        with self._lock:
            self._db.executemany(
                "UPDATE deliveries SET flow_run_id = ? WHERE key = ?",
                [(flow_run_id, key) for key in _keys(keys)],
            )

    def release(self, keys: str | tuple[str, ...]) -> None:
        """Forget a claim whose run could not be started, so a redelivery may try again."""
        with self._lock:
            self._db.executemany(
                "DELETE FROM deliveries WHERE key = ?", [(key,) for key in _keys(keys)]
            )

    def flow_run_of(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT flow_run_id FROM deliveries WHERE key = ?", (key,)
            ).fetchone()
        return str(row[0]) if row and row[0] else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _keys(keys: str | tuple[str, ...]) -> tuple[str, ...]:
    return (keys,) if isinstance(keys, str) else keys


class BlockSecret:
    """The HMAC secret from a Prefect ``Secret`` block, cached for ``ttl`` seconds."""

    def __init__(self, block_name: str = SECRET_BLOCK, ttl: float = SECRET_TTL_SECONDS) -> None:
        self.block_name = block_name
        self.ttl = ttl
        self._value: bytes | None = None
        self._read_at = 0.0

    async def __call__(self) -> bytes:
        if self._value is not None and time.monotonic() - self._read_at < self.ttl:
            return self._value
        from prefect.blocks.system import Secret

        try:
            block: Secret[Any] = await Secret.aload(self.block_name)
        except ValueError as exc:
            raise Unavailable(
                f"secret block {self.block_name!r} is missing; run `opsflows bootstrap`"
            ) from exc
        except Exception as exc:  # the Prefect API is down or refused us
            raise Unavailable(f"cannot read secret block {self.block_name!r}") from exc
        value = block.get()
        if not isinstance(value, str) or not value:
            raise Unavailable(f"secret block {self.block_name!r} must hold a non-empty string")
        self._value, self._read_at = value.encode(), time.monotonic()
        return self._value


Starter = Callable[[RunRequest], Awaitable[StartedRun]]


async def start_with_prefect(request: RunRequest) -> StartedRun:
    """Create the flow run from the deployment, with the delivery id as idempotency key."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.settings import get_current_settings

    try:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(request.deployment)
            run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters=dict(request.parameters),
                idempotency_key=request.idempotency_key,
                tags=["webhook", f"webhook:{request.route}"],
            )
    except ObjectNotFound as exc:
        raise Rejected(404, f"deployment {request.deployment!r} does not exist") from exc
    except PrefectHTTPStatusError as exc:
        status = exc.response.status_code
        if status in (400, 409, 422):
            detail = scrub(exc.response.text)
            raise Rejected(400, f"Prefect refused the parameters: {detail}") from exc
        raise Unavailable(f"Prefect answered {status}") from exc
    except Exception as exc:  # connection refused, timeouts: the caller may redeliver
        log.warning("starting %s failed", request.deployment, exc_info=True)
        raise Unavailable(f"cannot reach the Prefect API ({type(exc).__name__})") from exc
    ui = get_current_settings().ui_url or ""
    return StartedRun(str(run.id), f"{ui}/runs/flow-run/{run.id}" if ui else "")


async def read_body(
    request: Request, limit: int, status: int = 413, timeout: float | None = None
) -> bytes:
    """The raw body, refusing (``status``) to buffer more than ``limit`` bytes, and (408) a
    body that has not fully arrived ``timeout`` seconds after its headers."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Rejected(status, f"payload larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejected(status, f"payload larger than {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError as exc:
        raise Rejected(
            408, f"the body did not arrive within {timeout:g} s of the headers; send it at once"
        ) from exc
    return b"".join(chunks)


def create_app(
    table: RouteTable,
    store: ReplayStore,
    secret: Callable[[], Awaitable[bytes]],
    starter: Starter = start_with_prefect,
    clock: Callable[[], float] = time.time,
    alerts: AlertReceiver | None = None,
    body_timeout_s: float | None = None,
) -> Starlette:
    """The ASGI app; ``secret``, ``starter`` and ``clock`` are seams, real by default.

    ``alerts`` adds the Alertmanager endpoint (``POST /alertmanager``); ``body_timeout_s``
    answers 408 to a request whose body has not arrived that long after its headers.
    """

    async def receive(request: Request) -> JSONResponse:
        delivery = request.headers.get("x-github-delivery") or request.headers.get(
            "x-opsflows-delivery", "?"
        )
        try:
            check_content_type(request.headers)  # before reading a body it would refuse
            body = await read_body(request, table.max_body_bytes, timeout=body_timeout_s)
            run = decide(table, await secret(), request.headers, body, clock())
            if run is None:
                return _answer(200, {"status": "pong"}, delivery)
            keys = run.replay_keys
            seen = store.claim_all(keys, clock(), table.replay_ttl_seconds)
            if seen is not None:
                error = (
                    "delivery already received"
                    if seen == run.idempotency_key
                    else "this signed request was already received under another delivery id"
                )
                return _answer(
                    409, {"error": error, "flow_run_id": store.flow_run_of(seen)}, delivery
                )
            try:
                started = await starter(run)
            except BaseException:
                store.release(keys)
                raise
            store.record(keys, started.flow_run_id)
        except Rejected as exc:
            return _answer(exc.status, {"error": exc.reason}, delivery)
        except Unavailable as exc:
            return _answer(503, {"error": str(exc)}, delivery)
        payload: dict[str, Any] = {
            "flow_run_id": started.flow_run_id,
            "ui_url": started.ui_url,
            "deployment": run.deployment,
            "route": run.route,
        }
        return _answer(202, payload, delivery)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {"ok": True, "routes": len(table.routes), "alertmanager": alerts is not None}
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    routes = [
        Route("/webhook", receive, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
    ]
    if alerts is not None:
        routes.append(Route("/alertmanager", alerts.receive, methods=["POST"]))
    return Starlette(routes=routes, lifespan=lifespan)


#: Answers given before the body was read to its end: the connection cannot be reused.
CLOSE_AFTER = frozenset({408, 413, 415})


def _answer(status: int, payload: dict[str, Any], delivery: str) -> JSONResponse:
    # The delivery id is only logged once it looks like one (it comes from the caller).
    shown = delivery if delivery.replace("-", "").isalnum() and len(delivery) <= 64 else "?"
    level = logging.INFO if status < 500 else logging.WARNING
    log.log(level, "delivery %s -> %s %s", shown, status, payload.get("error") or payload)
    headers = {"Connection": "close"} if status in CLOSE_AFTER else None
    return JSONResponse(payload, status_code=status, headers=headers)
