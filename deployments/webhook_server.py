"""The HTTP server ``opsflows webhook serve`` runs: uvicorn with limits a public endpoint needs.

The receiver answers the internet (GitHub, CI runners), so one slow or greedy client must
not hold it. Every limit is a setting (``opsflows/settings.py``, ``OPSFLOWS_WEBHOOK_*``)::

    webhook_max_connections    uvicorn limit_concurrency: a request arriving when that many
                               connections are open (itself included) gets 503
    webhook_header_timeout_s   a connection whose request head (request line and headers)
                               is not complete that long after it opened, or after the
                               first byte of its next request, is closed (uvicorn has no
                               such timeout: ``HeaderDeadlineProtocol`` adds it)
    webhook_body_timeout_s     a body that has not all arrived that long after its headers
                               gets 408 and the connection is closed (``read_body``)
    webhook_keep_alive_s       uvicorn timeout_keep_alive: idle seconds between requests
    webhook_max_header_bytes   h11 max_incomplete_event_size: a larger request head is 400

The body's size limit is the routing table's ``max_body_bytes`` (413).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from opsflows.settings import Settings


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head arrives too slowly.

    The deadline runs while the server waits for a request head: from the connection's
    start, and from the first byte of each following request (between requests uvicorn's
    keep-alive timeout applies). Subclassed per server with ``header_timeout`` set.
    """

    header_timeout: float = 10.0
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_head():
            if self._head_deadline is None:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _arm(self) -> None:
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self._waiting_for_head():
            self.logger.info(
                "closing a connection: no request head within %gs", self.header_timeout
            )
            self.transport.close()


def protocol_with_deadline(header_timeout: float) -> type[HeaderDeadlineProtocol]:
    """A ``HeaderDeadlineProtocol`` class with its deadline set (uvicorn instantiates it)."""
    return type(
        "HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": header_timeout}
    )


def server_config(
    app: Any, settings: Settings, host: str, port: int, log_level: str = "info"
) -> uvicorn.Config:
    """The uvicorn configuration of the receiver, with every limit from ``settings``."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol_with_deadline(settings.webhook_header_timeout_s),
        limit_concurrency=settings.webhook_max_connections,
        timeout_keep_alive=settings.webhook_keep_alive_s,
        h11_max_incomplete_event_size=settings.webhook_max_header_bytes,
        # The receiver keeps state (the replay store): one process, never a reload.
        workers=1,
    )
