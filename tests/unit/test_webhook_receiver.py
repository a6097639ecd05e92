"""The webhook receiver around the rules: replay store, failed starts, missing secret, size."""

from __future__ import annotations

import warnings
from typing import Any

from decisions.webhook import Rejected
from tests.webhook_support import NOW, SECRET, TABLE, github, push

# --- the receiver around the rules (seams: secret, starter, clock; sqlite is a real file) ---


def receiver_client(tmp_path: Any, starter: Any, secret: Any = None) -> Any:
    with warnings.catch_warnings():  # starlette nudges towards httpx2; httpx works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from deployments.webhook import ReplayStore, create_app

    async def fixed_secret() -> bytes:
        return SECRET

    store = ReplayStore(tmp_path / "deliveries.sqlite")
    app = create_app(TABLE, store, secret or fixed_secret, starter, clock=lambda: NOW)
    return TestClient(app)


def test_receiver_starts_once_and_answers_replays_with_the_first_run(tmp_path: Any) -> None:
    from deployments.webhook import StartedRun

    started: list[Any] = []

    async def starter(run: Any) -> StartedRun:
        started.append(run)
        return StartedRun(f"run-{len(started)}", f"http://ui/runs/flow-run/run-{len(started)}")

    headers, body = github("push", push(), delivery="dup-1")
    with receiver_client(tmp_path, starter) as client:
        first = client.post("/webhook", content=body, headers=headers)
        again = client.post("/webhook", content=body, headers=headers)
    assert first.status_code == 202
    assert first.json() == {
        "flow_run_id": "run-1",
        "ui_url": "http://ui/runs/flow-run/run-1",
        "deployment": "staged-deploy/staged-deploy",
        "route": "push-main",
    }
    assert again.status_code == 409 and again.json()["flow_run_id"] == "run-1"
    assert [r.idempotency_key for r in started] == ["github:dup-1"]


def test_the_same_signed_body_under_a_new_delivery_id_is_409_and_starts_nothing(
    tmp_path: Any,
) -> None:
    from deployments.webhook import StartedRun

    started: list[Any] = []

    async def starter(run: Any) -> StartedRun:
        started.append(run)
        return StartedRun(f"run-{len(started)}", "")

    headers, body = github("push", push(), delivery="first")
    next_headers, next_body = github("push", push(after="def456"), delivery="second")
    with receiver_client(tmp_path, starter) as client:
        first = client.post("/webhook", content=body, headers=headers)
        # A captured GitHub delivery sent again: its delivery header is not signed.
        again = client.post("/webhook", content=body, headers={**headers, "X-GitHub-Delivery": "x"})
        # The next event (another commit) is another body: it starts its run.
        other = client.post("/webhook", content=next_body, headers=next_headers)
    assert first.status_code == 202, first.text
    assert again.status_code == 409, again.text
    assert again.json()["flow_run_id"] == "run-1" and "already received" in again.json()["error"]
    assert other.status_code == 202, other.text
    assert [r.idempotency_key for r in started] == ["github:first", "github:second"]


def test_a_failed_start_releases_the_delivery_for_a_redelivery(tmp_path: Any) -> None:
    from deployments.webhook import StartedRun, Unavailable

    outcomes: list[Any] = [Unavailable("cannot reach the Prefect API"), Rejected(404, "gone")]

    async def starter(run: Any) -> StartedRun:
        if outcomes:
            raise outcomes.pop(0)
        return StartedRun("run-ok", "")

    headers, body = github("push", push(), delivery="retry-1")
    with receiver_client(tmp_path, starter) as client:
        statuses = [client.post("/webhook", content=body, headers=headers) for _ in range(3)]
    assert [r.status_code for r in statuses] == [503, 404, 202]
    assert statuses[2].json()["flow_run_id"] == "run-ok"


def test_missing_secret_block_is_503_and_starts_nothing(tmp_path: Any) -> None:
    from deployments.webhook import Unavailable

    async def no_secret() -> bytes:
        raise Unavailable("secret block 'webhook-secret' is missing; run `opsflows bootstrap`")

    async def starter(run: Any) -> Any:
        raise AssertionError("must not start")

    headers, body = github("push", push())
    with receiver_client(tmp_path, starter, no_secret) as client:
        resp = client.post("/webhook", content=body, headers=headers)
    assert resp.status_code == 503 and "opsflows bootstrap" in resp.json()["error"]


def test_a_streamed_oversized_body_is_refused_without_buffering_it(tmp_path: Any) -> None:
    async def starter(run: Any) -> Any:
        raise AssertionError("must not start")

    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 8192  # 320 KiB, chunked: no Content-Length to trust

    headers, _ = github("push", push())
    with receiver_client(tmp_path, starter) as client:
        resp = client.post("/webhook", content=chunks(), headers=headers)
    assert resp.status_code == 413 and "larger than" in resp.json()["error"]


def test_a_declared_oversized_body_is_413_before_it_is_read(tmp_path: Any) -> None:
    async def starter(run: Any) -> Any:
        raise AssertionError("must not start")

    headers, _ = github("push", push())
    body = b" " * (TABLE.max_body_bytes + 1)
    with receiver_client(tmp_path, starter) as client:
        resp = client.post("/webhook", content=body, headers=headers)
    assert resp.status_code == 413 and "larger than" in resp.json()["error"]
    assert resp.headers["connection"] == "close"


def test_githubs_form_encoded_default_is_415_naming_the_setting(tmp_path: Any) -> None:
    async def starter(run: Any) -> Any:
        raise AssertionError("must not start")

    headers, body = github("push", push())
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    with receiver_client(tmp_path, starter) as client:
        resp = client.post("/webhook", content=b"payload=" + body, headers=form)
    assert resp.status_code == 415
    assert "Content type: application/json" in resp.json()["error"]


def test_replay_store_survives_a_restart_and_forgets_after_its_ttl(tmp_path: Any) -> None:
    from deployments.webhook import ReplayStore

    path = tmp_path / "deliveries.sqlite"
    store = ReplayStore(path)
    assert store.claim("github:a", NOW, ttl=600)
    store.record("github:a", "run-a")
    store.close()
    reopened = ReplayStore(path)
    assert not reopened.claim("github:a", NOW + 10, ttl=600)
    assert reopened.flow_run_of("github:a") == "run-a"
    assert reopened.claim("github:a", NOW + 601, ttl=600)
    reopened.close()


def test_replay_store_claims_a_deliverys_keys_together_or_not_at_all(tmp_path: Any) -> None:
    from deployments.webhook import ReplayStore

    store = ReplayStore(tmp_path / "deliveries.sqlite")
    assert store.claim_all(("github:a", "signed:1"), NOW, ttl=600) is None
    store.record(("github:a", "signed:1"), "run-a")
    # A new delivery id with the same signed bytes: refused, and its id is not kept either.
    assert store.claim_all(("github:b", "signed:1"), NOW + 1, ttl=600) == "signed:1"
    assert store.flow_run_of("signed:1") == "run-a"
    assert store.claim_all(("github:b", "signed:2"), NOW + 2, ttl=600) is None
    store.release(("github:b", "signed:2"))
    assert store.claim_all(("github:b", "signed:2"), NOW + 3, ttl=600) is None
    store.close()
