"""A small HTTP fault-injection proxy, for tests that need a service to fail for real.

A test starts its own proxy on a free loopback port in front of a service (moto, usually)
and points only its own client at it, so faults never disturb the shared service::

    with FaultProxy("127.0.0.1", moto_port) as proxy:
        proxy.add(Rule("503", method="PUT", contains="partNumber=", times=2))
        ... client with endpoint_url=proxy.url ...
        assert proxy.count("503") == 2

Each client connection carries one request (the proxy answers with ``Connection: close``;
HTTP clients simply reconnect). Rules are matched in order against the method and the
request target; a rule with ``times`` stops matching after that many requests.

Actions: ``pass`` (forward), ``503`` (answer 503 with an S3-style error body), ``refuse``
(close the connection without an answer), ``cut`` (forward the headers and ``cut_after``
body bytes, then drop both sides), ``slow`` (forward the body at ``rate_bps``), ``stall``
(forward ``cut_after`` body bytes, then nothing more, holding the connection open until the
client gives up or the proxy stops: a hung peer). With ``reply=True``, ``cut``, ``slow`` and
``stall`` act on the answer instead (a download cut or stalled after ``cut_after`` bytes of
the response, or served at ``rate_bps``).

Every request a rule other than ``pass`` acted on is also counted process-wide
(:mod:`devstack.faultcount`, kind ``"http <action>"``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from devstack import faultcount

ACTIONS = ("pass", "503", "refuse", "cut", "slow", "stall")
_S3_503 = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
    b"<Message>injected by faultproxy</Message></Error>"
)


@dataclass
class Rule:
    """What to do with the requests it matches."""

    action: str
    method: str | None = None
    contains: str | None = None
    times: int | None = None
    cut_after: int = 0
    rate_bps: int = 0
    reply: bool = False

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; use one of {ACTIONS}")

    def matches(self, method: str, target: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not self.contains or self.contains in target


class _Request:
    """One HTTP/1.1 request read from the client: head and (de-chunked) body stream."""

    def __init__(self, rfile: Any) -> None:
        line = rfile.readline(65537)
        if not line:
            raise EOFError
        self.method, self.target, _ = line.decode("latin-1").split(" ", 2)
        self.headers: list[tuple[str, str]] = []
        while True:
            raw = rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            self.headers.append((name.strip(), value.strip()))
        self.rfile = rfile

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def head_bytes(self) -> bytes:
        kept = [(k, v) for k, v in self.headers if k.lower() not in {"connection", "keep-alive"}]
        lines = [f"{self.method} {self.target} HTTP/1.1"] + [f"{k}: {v}" for k, v in kept]
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def body_chunks(self, size: int = 65536) -> Any:
        """The raw body bytes as sent (chunked framing kept, so upstream parses it)."""
        length = self.header("Content-Length")
        if length is not None:
            left = int(length)
            while left > 0:
                data = self.rfile.read(min(size, left))
                if not data:
                    return
                left -= len(data)
                yield data
            return
        if (self.header("Transfer-Encoding") or "").lower() == "chunked":
            while True:
                line = self.rfile.readline(65537)
                yield line
                chunk = int(line.split(b";")[0].strip() or b"0", 16)
                if chunk == 0:
                    while True:
                        trailer = self.rfile.readline(65537)
                        yield trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return
                yield self.rfile.read(chunk + 2)


class FaultProxy:
    """The proxy: ``start()``/``stop()`` or a context manager; ``url`` to point clients at."""

    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rules: list[Rule] = []
        self.hits: Counter[str] = Counter()
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.connection, self.rfile)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, 0), Handler)
        address = self._server.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases stalled connections
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def count(self, action: str) -> int:
        with self._lock:
            return self.hits[action]

    def _choose(self, method: str, target: str) -> Rule:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, target):
                    if rule.times is not None:
                        rule.times -= 1
                    self.hits[rule.action] += 1
                    self.log.append((method, target, rule.action))
                    if rule.action != "pass":
                        faultcount.record(f"http {rule.action}")
                    return rule
            self.hits["pass"] += 1
            self.log.append((method, target, "pass"))
            return Rule("pass")

    def _handle(self, client: socket.socket, rfile: Any) -> None:
        try:
            request = _Request(rfile)
        except (EOFError, ValueError, OSError):
            return
        rule = self._choose(request.method, request.target)
        if rule.action == "refuse":
            _hard_close(client)
            return
        if rule.action == "503":
            for _ in request.body_chunks():
                pass
            client.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(_S3_503)}\r\nConnection: close\r\n\r\n".encode()
                + _S3_503
            )
            return
        with contextlib.closing(socket.create_connection(self.upstream, timeout=60)) as up:
            up.sendall(request.head_bytes())
            on_body = None if rule.reply else rule
            ends = (up, client)
            if not _relay(request.body_chunks(), up, on_body, ends, self._stopping):
                return
            answers = iter(lambda: up.recv(65536), b"")
            _relay(answers, client, rule if rule.reply else None, ends, self._stopping)


def _relay(
    chunks: Any,
    out: socket.socket,
    rule: Rule | None,
    ends: tuple[socket.socket, socket.socket],
    stopping: threading.Event,
) -> bool:
    """Send ``chunks`` to ``out``, cut, stalled or slowed by ``rule``; False when it cut."""
    sent = 0
    for data in chunks:
        cuts = rule is not None and rule.action in ("cut", "stall")
        if cuts and rule is not None and sent + len(data) > rule.cut_after:
            out.sendall(data[: max(rule.cut_after - sent, 0)])
            if rule.action == "stall":
                _hold(ends[1], stopping)
            for end in ends:
                _hard_close(end)
            return False
        if rule is not None and rule.action == "slow" and rule.rate_bps > 0:
            time.sleep(len(data) / rule.rate_bps)
        out.sendall(data)
        sent += len(data)
    return True


def _hold(client: socket.socket, stopping: threading.Event) -> None:
    """Forward nothing until the client closes its end (or the proxy stops)."""
    with contextlib.suppress(OSError, ValueError):
        while not stopping.is_set():
            readable, _, _ = select.select([client], [], [], 0.5)
            if readable and not client.recv(65536):
                return


def _hard_close(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a crashed peer or a dropped link would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
