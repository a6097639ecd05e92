"""A notification sink: where the local stack's notification blocks deliver.

Prefect notification blocks (``CustomWebhookNotificationBlock``, ``SlackWebhook`` with a custom
URL...) point at ``http://<kubesim>/_sink/<channel>``.  ``POST /_sink/{channel}`` stores the
body (decoded JSON, form fields, or text) with a timestamp and answers ``ok`` like Slack;
``GET /_sink/{channel}`` lists what arrived; ``GET /_sink`` counts per channel;
``DELETE /_sink/{channel}`` and ``DELETE /_sink`` forget.  Everything is in memory.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

MAX_PER_CHANNEL = 1000


class SinkStore:
    """Received notifications per channel (thread-safe, bounded)."""

    def __init__(self, max_per_channel: int = MAX_PER_CHANNEL) -> None:
        self._lock = threading.Lock()
        self._max = max_per_channel
        self._channels: dict[str, deque[dict[str, Any]]] = {}

    def add(self, channel: str, entry: dict[str, Any]) -> None:
        """Store one notification."""
        with self._lock:
            self._channels.setdefault(channel, deque(maxlen=self._max)).append(entry)

    def get(self, channel: str) -> list[dict[str, Any]]:
        """The notifications of one channel, oldest first."""
        with self._lock:
            return list(self._channels.get(channel, ()))

    def counts(self) -> dict[str, int]:
        """How many notifications each channel holds."""
        with self._lock:
            return {name: len(items) for name, items in sorted(self._channels.items())}

    def clear(self, channel: str | None = None) -> None:
        """Forget one channel, or everything."""
        with self._lock:
            if channel is None:
                self._channels.clear()
            else:
                self._channels.pop(channel, None)


def decode_body(raw: bytes, content_type: str) -> Any:
    """JSON bodies decoded, form bodies as a dict, anything else as text."""
    text = raw.decode("utf-8", errors="replace")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        return dict(parse_qsl(text, keep_blank_values=True))
    if media == "application/json" or media.endswith("+json") or not media:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def create_sink_app(store: SinkStore) -> Starlette:
    """The sink as a Starlette app, to be mounted at ``/_sink``."""

    async def root(request: Request) -> Response:
        if request.method == "DELETE":
            store.clear()
        return JSONResponse(store.counts())

    async def channel(request: Request) -> Response:
        name = str(request.path_params["channel"])
        if request.method == "POST":
            content_type = request.headers.get("content-type", "")
            store.add(
                name,
                {
                    "received_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "content_type": content_type,
                    "headers": dict(request.headers),
                    "body": decode_body(await request.body(), content_type),
                },
            )
            return PlainTextResponse("ok")
        if request.method == "DELETE":
            store.clear(name)
        return JSONResponse(store.get(name))

    return Starlette(
        routes=[
            Route("/", root, methods=["GET", "DELETE"]),
            Route("/{channel}", channel, methods=["GET", "POST", "DELETE"]),
        ]
    )


def sink_routes(store: SinkStore, prefix: str = "/_sink") -> list[BaseRoute]:
    """Routes for a parent app: the bare ``prefix`` (no redirect) plus the mounted sink."""
    app = create_sink_app(store)

    async def bare(request: Request) -> Response:
        if request.method == "DELETE":
            store.clear()
        return JSONResponse(store.counts())

    return [Route(prefix, bare, methods=["GET", "DELETE"]), Mount(prefix, app=app)]
