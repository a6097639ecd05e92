"""The process-wide count of injected faults: what the fault proxies and tests add to it."""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from devstack import faultcount
from devstack.faultproxy import FaultProxy, Rule
from devstack.tcpfaultproxy import TcpFaultProxy, TcpRule
from tests.support import count_fault


def added(before: dict[str, int]) -> dict[str, int]:
    now = faultcount.totals()
    return {k: n - before.get(k, 0) for k, n in now.items() if n != before.get(k, 0)}


@contextlib.contextmanager
def upstream() -> Iterator[int]:
    """A TCP server that answers every connection with a tiny HTTP 200."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed: the test is over
            with conn, contextlib.suppress(OSError):  # a cut connection resets this end
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError):
        return 0


def test_http_proxy_counts_every_request_a_fault_acted_on_not_the_passed_ones() -> None:
    before = faultcount.totals()
    with upstream() as port, FaultProxy("127.0.0.1", port) as proxy:
        proxy.add(Rule("503", contains="/a", times=2))
        proxy.add(Rule("refuse", contains="/b", times=1))
        proxy.add(Rule("pass", contains="/c"))
        codes = [get(proxy.url + path) for path in ("/a", "/a", "/a", "/b", "/b", "/c")]
    assert codes == [503, 503, 200, 0, 200, 200]
    assert added(before) == {"http 503": 2, "http refuse": 1}


def test_tcp_proxy_counts_every_cut_connection_and_resets_both_ends() -> None:
    """A cut resets the end the other pump was reading too: the one-at-a-time upstream
    is free for the next connection, and a client waiting for its answer hears it at once
    (``get`` would raise ``TimeoutError`` after 5 s)."""
    before = faultcount.totals()
    with upstream() as port, TcpFaultProxy("127.0.0.1", port) as proxy:
        proxy.add(TcpRule("cut", after=0, reply=False, times=2))
        proxy.add(TcpRule("cut", after=0, reply=True, times=1))
        codes = [get(f"http://{proxy.host}:{proxy.port}/") for _ in range(4)]
    assert codes == [0, 0, 0, 200]
    assert added(before) == {"tcp cut": 3}


def test_tests_count_their_own_faults_and_a_count_only_grows() -> None:
    before = faultcount.totals()
    count_fault("kill")
    count_fault("kill", 2)
    assert added(before) == {"kill": 3}
    with pytest.raises(ValueError):
        count_fault("kill", -1)
