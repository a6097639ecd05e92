"""A TCP fault-injection proxy, for tests that need a PostgreSQL connection to hang for real.

A test starts its own proxy on a free loopback port in front of the stack's PostgreSQL and
points only its own ``PostgresTarget`` at it::

    with TcpFaultProxy("127.0.0.1", postgres_port) as proxy:
        proxy.add(TcpRule("stall", after=2 * 1024 * 1024, times=1))
        ... pg_dump through (proxy.host, proxy.port) ...
        assert proxy.count("stall") == 1

Every client connection gets its own upstream connection and two pumps (request: client to
server; reply: server to client). A rule acts on the first connection whose bytes in its
direction (``reply=True``: what the server sends) cross ``after``: ``stall`` forwards up to
``after`` bytes and then forwards nothing more while keeping both connections open (a hung
server or middlebox: TCP keepalives are still answered, so only the client's own
progress watch can tell); ``cut`` resets both ends there. ``times`` limits how many
connections a rule hits. A stalled connection ends when the client closes it. Every stall
and cut is also counted process-wide (:mod:`devstack.faultcount`, kind ``"tcp <action>"``).
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections import Counter
from dataclasses import dataclass

from devstack import faultcount

ACTIONS = ("stall", "cut")


@dataclass
class TcpRule:
    """What to do to a connection once ``after`` bytes went through in its direction."""

    action: str
    after: int = 0
    reply: bool = True
    times: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; use one of {ACTIONS}")


class _Link:
    """One proxied connection: the client and upstream sockets, closed together."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.closed = threading.Event()

    def close(self, reset: bool = False) -> None:
        """Close both ends; ``reset``: with a TCP reset (linger 0), as a dropped link would.

        The other pump is blocked in ``recv`` on one of the sockets, and closing a socket
        another thread reads does not release it: ``shutdown`` first wakes that reader
        (``SHUT_RD`` sends nothing, so the last close still resets the connection).
        """
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                if reset:
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                sock.shutdown(socket.SHUT_RD if reset else socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class TcpFaultProxy:
    """The proxy: ``start()``/``stop()`` or a context manager; ``host``/``port`` to connect to."""

    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rules: list[TcpRule] = []
        self.hits: Counter[str] = Counter()
        self.connections = 0
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, 0), Handler)
        address = self._server.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> TcpFaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    def __enter__(self) -> TcpFaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, rule: TcpRule) -> TcpRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def count(self, action: str) -> int:
        with self._lock:
            return self.hits[action]

    def _rule_for(self, reply: bool, sent: int, incoming: int) -> TcpRule | None:
        """The rule this direction's next ``incoming`` bytes trigger (consumed), if any."""
        with self._lock:
            for rule in self.rules:
                if rule.reply != reply or (rule.times is not None and rule.times <= 0):
                    continue
                if sent + incoming > rule.after:
                    if rule.times is not None:
                        rule.times -= 1
                    self.hits[rule.action] += 1
                    faultcount.record(f"tcp {rule.action}")
                    return rule
        return None

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        upstream.settimeout(None)
        link = _Link(client, upstream)
        with self._lock:
            self.connections += 1
            self._links.append(link)
        replies = threading.Thread(
            target=self._pump, args=(link, upstream, client, True), daemon=True
        )
        replies.start()
        self._pump(link, client, upstream, False)
        replies.join()
        with self._lock:
            self._links.remove(link)

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket, reply: bool) -> None:
        sent = 0
        armed = True
        try:
            while not link.closed.is_set():
                data = src.recv(65536)
                if not data:
                    break
                rule = self._rule_for(reply, sent, len(data)) if armed else None
                if rule is None:
                    dst.sendall(data)
                    sent += len(data)
                    continue
                armed = False
                dst.sendall(data[: max(rule.after - sent, 0)])
                sent = rule.after
                if rule.action == "cut":
                    link.close(reset=True)
                    return
                link.closed.wait()  # stall: forward nothing more; the client gives up
                return
        except OSError:
            pass
        link.close()
