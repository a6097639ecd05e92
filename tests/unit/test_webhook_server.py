"""The server ``opsflows webhook serve`` runs, with its limits, on a real socket.

uvicorn is configured by ``deployments.webhook_server.server_config`` exactly as the CLI does
it (small limits from ``Settings``) and runs in a thread; the clients are raw sockets, so a
test can send headers and then stall, or hold connections open.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsflows.settings import Settings
from tests.webhook_support import NOW, SECRET, TABLE, github, push

LIMITS = {
    "webhook_max_connections": 3,
    "webhook_header_timeout_s": 1.5,
    "webhook_body_timeout_s": 1.5,
    "webhook_keep_alive_s": 5,
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    import uvicorn

    from deployments.webhook import ReplayStore, StartedRun, create_app
    from deployments.webhook_server import server_config

    async def fixed_secret() -> bytes:
        return SECRET

    async def starter(run: Any) -> StartedRun:
        return StartedRun("run-1", "")

    settings = Settings(**LIMITS)  # type: ignore[arg-type]
    store = ReplayStore(tmp_path / "deliveries.sqlite")
    app = create_app(
        TABLE,
        store,
        fixed_secret,
        starter,
        clock=lambda: NOW,
        body_timeout_s=settings.webhook_body_timeout_s,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = server_config(app, settings, "127.0.0.1", port, "warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def head(path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_or_close(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and how long that took."""
    sock.settimeout(timeout)
    started = time.monotonic()
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def test_a_body_that_stalls_after_the_headers_is_408_and_closed_within_the_timeout(
    server: tuple[str, int],
) -> None:
    headers, body = github("push", push())
    with socket.create_connection(server) as sock:
        sock.sendall(head("/webhook", headers, len(body)) + body[:10])
        received, took = answer_or_close(sock, timeout=10)
    assert status(received) == 408, received
    assert b"did not arrive within 1.5 s" in received
    assert 1.0 <= took < 4, took  # closed, not left open until the client gives up


def test_headers_that_never_finish_are_cut_off_within_the_timeout(
    server: tuple[str, int],
) -> None:
    with socket.create_connection(server) as sock:
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: test\r\nX-GitHub-Event: pu")
        received, took = answer_or_close(sock, timeout=10)
    assert received == b"" and 1.0 <= took < 4, (received, took)
    with socket.create_connection(server) as idle:  # connected, never says anything
        received, took = answer_or_close(idle, timeout=10)
    assert received == b"" and 1.0 <= took < 4, (received, took)


def test_requests_beyond_the_connection_limit_get_503(server: tuple[str, int]) -> None:
    headers, body = github("push", push())
    held = [socket.create_connection(server) for _ in range(LIMITS["webhook_max_connections"] - 1)]
    try:
        for sock in held:  # each sends its headers, then stalls its body
            sock.sendall(head("/webhook", headers, len(body)))
        time.sleep(0.2)
        with socket.create_connection(server) as extra:
            extra.sendall(head("/webhook", headers, len(body)) + body)
            received, _ = answer_or_close(extra, timeout=5)
        assert status(received) == 503, received
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)  # the server notices the closed connections
    with socket.create_connection(server) as sock:
        sock.sendall(head("/webhook", {**headers, "Connection": "close"}, len(body)) + body)
        received, _ = answer_or_close(sock, timeout=5)
    assert status(received) == 202, received


def test_oversized_and_form_encoded_bodies_are_413_and_415_before_being_read(
    server: tuple[str, int],
) -> None:
    headers, _ = github("push", push())
    with socket.create_connection(server) as sock:
        sock.sendall(head("/webhook", headers, TABLE.max_body_bytes + 1))  # no body follows
        received, took = answer_or_close(sock, timeout=5)
    assert status(received) == 413 and took < 1, (received, took)
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    with socket.create_connection(server) as sock:
        sock.sendall(head("/webhook", form, 100))
        received, took = answer_or_close(sock, timeout=5)
    assert status(received) == 415 and b"Content type: application/json" in received
    assert took < 1
