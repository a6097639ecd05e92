"""Alertmanager (Debian's) with the devstack's config posts to the webhook with the bearer token.

A separate Alertmanager, configured by ``devstack.alertmanager`` exactly as the stack's, is
pointed at a small HTTP server of this test; alerts are posted to its API as Prometheus
does. Run as root, it runs as the stack's unprivileged OS user, like the stack's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import alertmanager, postgres, procs
from opsflows.settings import Settings

TOKEN = "test-token-not-a-secret"


@dataclass
class Receiver:
    """Records every POST: its path, Authorization header and JSON body."""

    url: str
    posts: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            found.posts.append((self.path, self.headers.get("Authorization", ""), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.url = f"http://127.0.0.1:{server.server_address[1]}/alertmanager"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


@pytest.fixture
def am(receiver: Receiver) -> Iterator[str]:
    user = None
    if os.geteuid() == 0:
        user = Settings().os_user
        postgres.ensure_os_user(user)
    tmp = Path(tempfile.mkdtemp(prefix="opsflows-alertmanager-"))
    tmp.chmod(0o755)
    base = tmp / "alertmanager"
    config = alertmanager.write_config(base, receiver.url, TOKEN, group_wait_s=0.5)
    if user:
        postgres.chown_tree(base, user)
    port = procs.free_port()
    argv = procs.as_user(user, alertmanager.command(config, base / "data", "127.0.0.1", port))
    log = tmp / "alertmanager.log"
    url = f"http://127.0.0.1:{port}"
    with procs.background(argv, dict(os.environ), log, cwd=Path("/")) as proc:
        deadline = time.monotonic() + 30
        while not procs.http_ok(url + "/-/ready")():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "Alertmanager not ready"
            time.sleep(0.2)
        yield url
    shutil.rmtree(tmp, ignore_errors=True)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)


def alert(name: str, env: str, severity: str, runbook: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {
            "alertname": name,
            "env": env,
            "environment": env,
            "severity": severity,
            "runbook": runbook,
        },
        "annotations": {"summary": f"{name} in {env}"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
        "generatorURL": "http://prometheus.test/graph",
    }


def test_alerts_are_posted_grouped_with_the_bearer_token(am: str, receiver: Receiver) -> None:
    alerts = [
        alert("HighErrorRate", "production", "P2", "service-down"),
        alert("HighErrorRate", "staging", "P3", "service-down"),
        alert("CertificateExpiry", "production", "P2", "cert-expiry"),
    ]
    httpx.post(f"{am}/api/v2/alerts", json=alerts, timeout=5).raise_for_status()
    wait_for(lambda: len(receiver.posts) >= 3, 20, "one post per (alertname, environment)")
    time.sleep(1)
    assert len(receiver.posts) == 3
    groups = {}
    for path, authorization, body in receiver.posts:
        assert path == "/alertmanager"
        assert authorization == f"Bearer {TOKEN}"
        assert body["version"] == "4"
        assert body["receiver"] == "opsflows"
        assert body["status"] == "firing"
        assert body["truncatedAlerts"] == 0
        assert set(body["groupLabels"]) == {"alertname", "environment"}
        (one,) = body["alerts"]
        assert one["labels"]["runbook"] and one["labels"]["severity"]
        assert one["annotations"]["summary"]
        assert one["fingerprint"]
        groups[(body["groupLabels"]["alertname"], body["groupLabels"]["environment"])] = one
    assert set(groups) == {
        ("HighErrorRate", "production"),
        ("HighErrorRate", "staging"),
        ("CertificateExpiry", "production"),
    }
    assert groups[("HighErrorRate", "staging")]["labels"]["severity"] == "P3"


def test_service_down_mutes_its_symptoms_in_the_same_environment(
    am: str, receiver: Receiver
) -> None:
    down = alert("ServiceDown", "production", "P1", "service-down")
    httpx.post(f"{am}/api/v2/alerts", json=[down], timeout=5).raise_for_status()
    wait_for(lambda: len(receiver.posts) >= 1, 20, "ServiceDown posted")
    symptoms = [
        alert("HighErrorRate", "production", "P2", "service-down"),
        alert("HighErrorRate", "staging", "P2", "service-down"),
    ]
    httpx.post(f"{am}/api/v2/alerts", json=symptoms, timeout=5).raise_for_status()
    wait_for(lambda: len(receiver.posts) >= 2, 20, "the staging error rate posted")
    time.sleep(2)
    names = {
        (b["groupLabels"]["alertname"], b["groupLabels"]["environment"])
        for _, _, b in receiver.posts
    }
    assert names == {("ServiceDown", "production"), ("HighErrorRate", "staging")}
