"""The scale-out guide's reverse proxy (``docs/scale-out/nginx-prefect.conf``), proved.

Debian's nginx runs the rendered file (``tests/proxy_support.py``) in front of the test stack's
real Prefect server; a second one, rendered from the same file, fronts a recorder instead, to
see exactly what reaches the upstream.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from devstack.stackinfo import StackInfo
from opsflows.settings import Settings
from tests.proxy_support import PEOPLE, Proxy, basic, nginx_in_front_of, refused_by_nginx


@pytest.fixture(scope="module")
def server(stack: StackInfo) -> StackInfo:
    assert stack.prefect_auth_string, "the test stack's Prefect server has no credentials"
    return stack


@pytest.fixture(scope="module")
def proxy(server: StackInfo) -> Iterator[Proxy]:
    upstream = f"{server.host}:{server.prefect_port}"
    with nginx_in_front_of(upstream, server.prefect_headers()["Authorization"]) as running:
        yield running


@dataclass
class Recorder:
    """A stand-in upstream that keeps the headers of every request it got."""

    address: str
    seen: list[dict[str, str]]


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append({k.lower(): v for k, v in self.headers.items()})
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Recorder(f"127.0.0.1:{httpd.server_address[1]}", seen)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_nginx_runs_unprivileged(proxy: Proxy) -> None:
    master = int(proxy.pid_file.read_text())
    uids = Path(f"/proc/{master}/status").read_text().split("Uid:")[1].split()[:2]
    assert "0" not in uids, f"nginx runs as root (uids {uids})"
    if os.geteuid() == 0:
        assert int(uids[0]) == pwd.getpwnam(Settings().os_user).pw_uid


def test_nobody_gets_in_without_a_login(proxy: Proxy) -> None:
    with proxy.client() as anonymous:
        for path in ("/api/health", "/", "/api/flow_runs/filter"):
            refused_by_nginx(anonymous.get(path))
    # the refusal happened at nginx: the upstream was never asked
    lines = [line for line in proxy.log_lines() if "user=- " in line]
    assert lines and all(line.endswith("upstream=-") for line in lines), lines


def test_a_wrong_password_or_an_unknown_person_is_refused(proxy: Proxy) -> None:
    for person, password in (
        ("alice", PEOPLE["bob"]),
        ("bob", ""),
        ("mallory", PEOPLE["alice"]),
    ):
        with proxy.client(person, password) as client:
            refused_by_nginx(client.get("/api/health"))
            refused_by_nginx(client.post("/api/flow_runs/filter", json={"limit": 1}))
    # a refused login is logged under the name it claimed
    lines = proxy.log_lines()
    assert any('user=mallory "GET /api/health' in line and " 401 " in line for line in lines)


@pytest.mark.parametrize("person", sorted(PEOPLE))
def test_each_person_reaches_the_ui_and_the_api(proxy: Proxy, person: str) -> None:
    with proxy.client(person) as client:
        health = client.get("/api/health")
        assert health.status_code == 200 and health.json() is True
        runs = client.post("/api/flow_runs/filter", json={"limit": 1})
        assert runs.status_code == 200, runs.text[:300]
        assert isinstance(runs.json(), list)
        ui = client.get("/")
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        assert ui.headers.get("strict-transport-security", "").startswith("max-age=")


def test_the_api_call_needs_the_credentials_nginx_adds(proxy: Proxy, server: StackInfo) -> None:
    """The same call straight to the server: refused without its credentials, and a person's
    own password is not them; it succeeds only with what nginx injects."""
    url = server.prefect_api_url + "/flow_runs/filter"
    without = httpx.post(url, json={"limit": 1}, timeout=15)
    assert without.status_code == 401
    assert without.json() == {"exception_message": "Unauthorized"}
    as_alice = httpx.post(
        url, json={"limit": 1}, headers={"Authorization": basic("alice", PEOPLE["alice"])}
    )
    assert as_alice.status_code == 401
    injected = httpx.post(url, json={"limit": 1}, headers=server.prefect_headers(), timeout=15)
    assert injected.status_code == 200


def test_the_access_log_names_each_person(proxy: Proxy) -> None:
    for person in PEOPLE:
        with proxy.client(person) as client:
            assert client.post("/api/flow_runs/filter", json={"limit": 1}).status_code == 200
    lines = proxy.log_lines()
    for person in PEOPLE:
        assert any(
            f'user={person} "POST /api/flow_runs/filter HTTP/1.1" 200 ' in line
            and line.endswith("upstream=200")
            for line in lines
        ), "\n".join(lines[-10:])


def test_the_server_credentials_never_reach_the_person(proxy: Proxy, server: StackInfo) -> None:
    auth = server.prefect_auth_string
    assert auth
    header = server.prefect_headers()["Authorization"]
    secrets = (auth, header.removeprefix("Basic "))
    with proxy.client("alice") as client:
        answers = [
            client.get("/api/health"),
            client.post("/api/flow_runs/filter", json={"limit": 5}),
            client.get("/"),
            client.get("/ui-settings"),
            client.get("/api/admin/settings"),
        ]
    for answer in answers:
        assert answer.status_code == 200, (answer.request.url, answer.status_code)
        seen = answer.text + json.dumps(dict(answer.headers))
        for secret in secrets:
            assert secret not in seen, f"{answer.request.url} shows the server's credentials"
    assert not any(secret in line for line in proxy.log_lines() for secret in secrets)


def test_removing_a_person_revokes_them_without_a_reload(proxy: Proxy) -> None:
    original = proxy.htpasswd.read_text()
    try:
        proxy.htpasswd.write_text(
            "".join(line + "\n" for line in original.splitlines() if not line.startswith("bob:"))
        )
        with proxy.client("bob") as bob:
            refused_by_nginx(bob.get("/api/health"))
        with proxy.client("alice") as alice:
            assert alice.get("/api/health").status_code == 200
    finally:
        proxy.htpasswd.write_text(original)
    with proxy.client("bob") as bob:
        assert bob.get("/api/health").status_code == 200


def test_plain_http_only_redirects_to_https(proxy: Proxy) -> None:
    answer = httpx.get(
        proxy.http_url + "/api/health",
        headers={"Authorization": basic("alice", PEOPLE["alice"])},
        timeout=15,
    )
    assert answer.status_code == 301
    assert answer.headers["location"] == "https://127.0.0.1/api/health"
    assert "www-authenticate" not in answer.headers


def test_websockets_pass_through_and_still_need_the_server_token(
    proxy: Proxy, server: StackInfo
) -> None:
    """The events socket upgrades through nginx (Upgrade/Connection), then asks for the
    server's auth string in its first message, which nginx cannot add: a person without it is
    closed (1008); a client holding it (a worker) is let in."""
    url = proxy.url.replace("https://", "wss://") + "/api/events/out"
    headers = {"Authorization": basic("alice", PEOPLE["alice"])}

    def open_socket() -> Any:
        return connect(
            url,
            ssl=proxy.tls(),
            subprotocols=["prefect"],  # type: ignore[list-item]
            additional_headers=headers,
            open_timeout=15,
        )

    with open_socket() as socket:
        socket.send(json.dumps({"type": "auth", "token": PEOPLE["alice"]}))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    with open_socket() as socket:
        socket.send(json.dumps({"type": "auth", "token": server.prefect_auth_string}))
        assert json.loads(socket.recv(timeout=15)) == {"type": "auth_success"}


def test_upstream_sees_the_server_credentials_and_the_login_name(recorder: Recorder) -> None:
    """What reaches the upstream, recorded: the person's password is replaced by the server's
    credentials, and X-Forwarded-User is the login whatever the client claimed."""
    server_auth = "Basic " + base64.b64encode(b"server-shared-string").decode("ascii")
    with nginx_in_front_of(recorder.address, server_auth) as proxy:
        headers = {"X-Forwarded-User": "mallory", "X-Forwarded-Proto": "http"}
        with proxy.client("alice") as alice:
            assert alice.get("/api/health", headers=headers).status_code == 200
        with proxy.client() as anonymous:
            refused_by_nginx(anonymous.get("/api/health", headers=headers))
    assert len(recorder.seen) == 1, recorder.seen  # the refused request never arrived
    (seen,) = recorder.seen
    assert seen["authorization"] == server_auth
    assert seen["x-forwarded-user"] == "alice"
    assert seen["x-forwarded-proto"] == "https"
    assert PEOPLE["alice"] not in json.dumps(seen)
