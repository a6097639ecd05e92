"""The CI webhook end to end: signed events start served deployments, everything else nothing.

One process serves a tiny flow (``webhook-probe/e2e-webhook``, defined here) and one runs
``python -m deployments.webhook_cli serve`` with a private routing table, secret block and
replay database, and small server limits (``LIMITS``, as ``OPSFLOWS_WEBHOOK_*``); both are
started once for the module and stopped at the end. The failure automation is tested here too,
on the same served flow, with its own automation name and notification channel.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow

from decisions.webhook import sign
from devstack import procs
from devstack.stack import StackInfo
from tests.e2e.webhook_requests import generic, github_form, github_push, renamed

REPO = Path(__file__).resolve().parents[2]
PROBE = "webhook-probe/e2e-webhook"
SECRET_BLOCK = "opsflows-test-webhook-secret"


@flow(name="webhook-probe")
def webhook_probe(tag: str = "", note: str = "", fail: bool = False) -> str:
    """Return the tag it was started with (a stand-in runbook for the webhook tests).

    Args:
        tag: Echoed back.
        note: Free text.
        fail: Raise, so the run ends Failed (for the failure automation).
    """
    if fail:
        raise RuntimeError(f"asked to fail ({note})")
    return tag


def serve_probe() -> None:
    """Entry of the serving subprocess (``python -c`` below)."""
    from prefect import serve

    from deployments.serve import POLL_SECONDS

    deployment: Any = webhook_probe.to_deployment(name=PROBE.split("/")[1])
    serve(deployment, pause_on_shutdown=False, query_seconds=POLL_SECONDS)


ROUTES = {
    "max_body_bytes": 262144,
    "routes": [
        {
            "name": "push-main",
            "source": "github",
            "event": "push",
            "match": {"ref": "refs/heads/main"},
            "deployment": PROBE,
            "parameters": {"tag": "{{ after }}"},
        },
        {
            "name": "ci-run",
            "source": "opsflows",
            "event": "run-deployment",
            # policy and migrations_dir are listed on purpose: the receiver refuses them anyway.
            "allow": {PROBE: ["note", "fail", "image", "policy", "migrations_dir"]},
            "images": ["registry.local/web-app"],
        },
    ],
}
#: The receiver's server limits for this module (OPSFLOWS_WEBHOOK_*), small enough to test.
LIMITS = {
    "OPSFLOWS_WEBHOOK_MAX_CONNECTIONS": "4",
    "OPSFLOWS_WEBHOOK_HEADER_TIMEOUT_S": "3",
    "OPSFLOWS_WEBHOOK_BODY_TIMEOUT_S": "2",
}


@dataclass
class Receiver:
    url: str
    secret: bytes
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not procs.wait_until(procs.http_ok(self.url + "/healthz"), 60):
            raise RuntimeError(f"webhook did not start; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
            self.proc = None

    def post(self, headers: dict[str, str], body: bytes) -> httpx.Response:
        return httpx.post(self.url + "/webhook", content=body, headers=headers, timeout=30)


def deployment_id() -> uuid.UUID:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(PROBE).id


def runs_of_probe() -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id()]))
        )


def wait_final(run_id: str, timeout: float = 90) -> Any:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(uuid.UUID(run_id))
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(0.3)
    raise AssertionError(f"flow run {run_id} not final after {timeout}s")


@pytest.fixture(scope="module")
def receiver(
    stack: StackInfo, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Receiver]:
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    tmp = tmp_path_factory.mktemp("webhook")
    secret = secrets.token_urlsafe(24)
    Secret(value=secret).save(SECRET_BLOCK, overwrite=True)
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
        client.delete_deployment(client.read_deployment_by_name(PROBE).id)
    routes = tmp / "routes.yaml"
    routes.write_text(json.dumps(ROUTES))
    env = {**os.environ, **stack.client_env(), **LIMITS}
    port = procs.free_port(stack.host)
    argv = [sys.executable, "-m", "deployments.webhook_cli", "serve", "--port", str(port)]
    argv += ["--routes", str(routes), "--secret-block", SECRET_BLOCK]
    argv += ["--replay-db", str(tmp / "deliveries.sqlite")]
    hook = Receiver(f"http://{stack.host}:{port}", secret.encode(), argv, env, tmp / "webhook.log")
    serve = [sys.executable, "-c", "from tests.e2e.test_webhook import serve_probe; serve_probe()"]
    with procs.background(serve, env, tmp / "serve.log", cwd=REPO) as runner:
        hook.start()
        served = procs.http_ok(
            f"{stack.prefect_api_url}/deployments/name/{PROBE}",
            below=400,
            headers=stack.prefect_headers(),
        )
        assert procs.wait_until(served, 90) and runner.poll() is None, (
            tmp / "serve.log"
        ).read_text()
        try:
            yield hook
        finally:
            hook.stop()
            for run in runs_of_probe():
                if run.state is not None and not run.state.is_final():
                    wait_final(str(run.id), timeout=60)


AUTO = {"parameters": {"policy": "auto"}}
PATH = {"parameters": {"migrations_dir": "/tmp"}}
EVIL = {"parameters": {"image": "evil.example/web-app:1.0"}}


def test_the_same_delivery_twice_starts_one_run(receiver: Receiver) -> None:
    delivery = f"ci-{uuid.uuid4()}"
    before = len(runs_of_probe())
    request = generic(receiver.secret, delivery, {"deployment": PROBE, "parameters": {"note": "x"}})
    first = receiver.post(*request)
    second = receiver.post(*request)
    assert first.status_code == 202, first.text
    assert second.status_code == 409, second.text
    assert second.json()["flow_run_id"] == first.json()["flow_run_id"]
    assert len(runs_of_probe()) == before + 1
    # (its run finishes while the next test waits for its own)


def test_a_signed_push_sent_again_under_a_new_delivery_id_starts_nothing(
    receiver: Receiver,
) -> None:
    headers, body = github_push(receiver.secret, str(uuid.uuid4()), after=uuid.uuid4().hex[:7])
    first = receiver.post(headers, body)
    assert first.status_code == 202, first.text
    before = len(runs_of_probe())
    again = receiver.post({**headers, "X-GitHub-Delivery": str(uuid.uuid4())}, body)
    assert again.status_code == 409, again.text
    assert again.json()["flow_run_id"] == first.json()["flow_run_id"]
    # The next push (another commit) starts its run: once it is there, a run the replay
    # had started would be there too.
    following = receiver.post(*github_push(receiver.secret, str(uuid.uuid4()), after="beef"))
    assert following.status_code == 202, following.text
    assert len(runs_of_probe()) == before + 1


def raw_request(receiver: Receiver, head_only: bool) -> tuple[socket.socket, bytes]:
    """A socket that sent a signed push's headers (and the first bytes of its body)."""
    headers, body = github_push(receiver.secret, str(uuid.uuid4()))
    host, port = receiver.url.removeprefix("http://").rsplit(":", 1)
    lines = ["POST /webhook HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock = socket.create_connection((host, int(port)), timeout=20)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body[:5]))
    return sock, body


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    started, received = time.monotonic(), b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def test_a_client_that_stalls_its_body_is_cut_off_within_the_body_timeout(
    receiver: Receiver,
) -> None:
    before = len(runs_of_probe())
    sock, _ = raw_request(receiver, head_only=False)
    with sock:
        received, took = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert took < float(LIMITS["OPSFLOWS_WEBHOOK_BODY_TIMEOUT_S"]) + 3, took
    assert len(runs_of_probe()) == before


def test_requests_beyond_the_connection_limit_get_503(receiver: Receiver) -> None:
    held = [
        raw_request(receiver, head_only=True)[0]
        for _ in range(int(LIMITS["OPSFLOWS_WEBHOOK_MAX_CONNECTIONS"]) - 1)
    ]
    try:
        time.sleep(0.3)
        resp = receiver.post(*github_push(receiver.secret, str(uuid.uuid4())))
        assert resp.status_code == 503, resp.text
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while (health := httpx.get(receiver.url + "/healthz", timeout=5)).status_code == 503:
        assert time.monotonic() < deadline, "the held connections were never released"
        time.sleep(0.2)
    assert health.status_code == 200


def test_signed_push_starts_the_mapped_deployment_and_the_run_completes(receiver: Receiver) -> None:
    resp = receiver.post(*github_push(receiver.secret, str(uuid.uuid4())))
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert answer["deployment"] == PROBE and answer["route"] == "push-main"
    assert answer["ui_url"].endswith(f"/runs/flow-run/{answer['flow_run_id']}")
    run = wait_final(answer["flow_run_id"])
    assert run.state.is_completed(), run.state
    assert run.parameters["tag"] == "c0ffee1"
    assert run.deployment_id == deployment_id()
    assert "webhook" in run.tags


def test_bad_requests_start_nothing_and_get_the_right_status(receiver: Receiver) -> None:
    before = len(runs_of_probe())
    secret = receiver.secret
    headers, body = github_push(secret, str(uuid.uuid4()))
    cases: list[tuple[str, int, dict[str, str], bytes]] = [
        ("bad signature", 401, {**headers, "X-Hub-Signature-256": sign(b"guess", body)}, body),
        ("no signature", 401, {k: v for k, v in headers.items() if "Signature" not in k}, body),
        ("stale", 401, *generic(secret, "ci-stale", {"deployment": PROBE}, age=600)),
        ("oversized", 413, *github_push(secret, "big-1", filler="x" * 300_000)),
        ("form-encoded", 415, *github_form(secret, "form-1")),
        ("not json", 400, {**headers, "X-Hub-Signature-256": sign(secret, b"{")}, b"{"),
        ("renamed delivery", 401, *renamed(generic(secret, "ci-rn", {"deployment": PROBE}))),
        ("unmapped event", 404, {**headers, "X-GitHub-Event": "issues"}, body),
        ("other branch", 404, *github_push(secret, "b-1", ref="refs/heads/feature")),
        ("not allowed", 404, *generic(secret, "ci-na", {"deployment": "backup/backup"})),
        (
            "bad parameter",
            400,
            *generic(secret, "ci-bp", {"deployment": PROBE, "parameters": {"tag": "x"}}),
        ),
        ("policy from CI", 403, *generic(secret, "ci-pol", {"deployment": PROBE, **AUTO})),
        ("migrations path", 403, *generic(secret, "ci-md", {"deployment": PROBE, **PATH})),
        ("unlisted image", 403, *generic(secret, "ci-img", {"deployment": PROBE, **EVIL})),
    ]
    for name, status, hdrs, data in cases:
        resp = receiver.post(hdrs, data)
        assert resp.status_code == status, (name, resp.status_code, resp.text)
        assert "flow_run_id" not in resp.json(), name
        if status == 403:
            assert any(w in resp.json()["error"] for w in ("policy", "migrations_dir", "images"))
        assert receiver.secret.decode() not in resp.text
    assert receiver.secret.decode() not in receiver.log.read_text()
    # A positive signal before the negative assertion: one good delivery after the bad ones.
    # The receiver creates its run before answering 202, so once it is there, any run a bad
    # delivery had started would be there too.
    good = receiver.post(*generic(secret, f"ci-good-{uuid.uuid4().hex[:6]}", {"deployment": PROBE}))
    assert good.status_code == 202, good.text
    started = runs_of_probe()
    assert len(started) == before + 1, "only the good delivery started a run"
    assert good.json()["flow_run_id"] in {str(r.id) for r in started}


def test_failure_automation_pages_when_a_watched_run_fails(
    receiver: Receiver, stack: StackInfo
) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from deployments.automations import create_failure_automation

    channel = f"test-automation-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(
        name="e2e automation",
        url=f"{stack.kube_url}/_sink/{channel}",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,
    ).save(channel, overwrite=True)
    name = f"opsflows-test: {channel}"
    automation_id = create_failure_automation(
        flows=["webhook-probe"], block=f"custom-webhook/{channel}", name=name
    )
    try:
        # Creating it again updates the same automation instead of adding a second one.
        assert (
            create_failure_automation(["webhook-probe"], f"custom-webhook/{channel}", name)
            == automation_id
        )
        payload = {"deployment": PROBE, "parameters": {"fail": True, "note": channel}}
        resp = receiver.post(*generic(receiver.secret, f"ci-{channel}", payload))
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["flow_run_id"]
        assert wait_final(run_id).state.is_failed()
        sink = f"{stack.kube_url}/_sink/{channel}"
        deadline = time.monotonic() + 60
        received: list[Any] = []
        while time.monotonic() < deadline and not received:
            received = httpx.get(sink, timeout=5).json()
            time.sleep(0.5)
        assert received, "no page arrived within 60 s"
        text = json.dumps(received)
        assert run_id in text and "Failed" in text and "e2e-webhook" in text
        # One failure, one page: a second failing run is the positive signal; once its page
        # is in, a duplicate page for the first run would have arrived before it.
        resp = receiver.post(*generic(receiver.secret, f"ci2-{channel}", payload))
        second = resp.json()["flow_run_id"]
        assert wait_final(second).state.is_failed()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and second not in json.dumps(received):
            time.sleep(0.5)
            received = httpx.get(sink, timeout=5).json()
        assert second in json.dumps(received), "the second failure paged too"
        assert [run_id in json.dumps(page) for page in received].count(True) == 1
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(automation_id)
        httpx.delete(f"{stack.kube_url}/_sink/{channel}", timeout=5)
