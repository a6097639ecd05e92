"""The webhook's pure rules: signatures, freshness, replay window and the routing table."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

from decisions.webhook import (
    MAX_BODY_BYTES,
    Delivery,
    Rejected,
    RouteTable,
    check_fresh,
    decide,
    event_time,
    load_table,
    read_delivery,
    render,
    route_event,
    sign,
    signature_valid,
)
from deployments.webhook import ROUTES_FILE, load_routes

SECRET = b"unit-test-secret"
NOW = 1_700_000_000.0

TABLE = load_table(
    {
        "routes": [
            {
                "name": "push-main",
                "source": "github",
                "event": "push",
                "match": {"ref": "refs/heads/main", "deleted": False},
                "deployment": "staged-deploy/staged-deploy",
                "parameters": {
                    "image": "registry.local/web-app:{{ after }}",
                    "replicas": "{{ replicas }}",
                },
            },
            {
                "name": "ci-run",
                "source": "opsflows",
                "event": "run-deployment",
                "allow": {"migrate-database/migrate-database": ["reason"]},
            },
        ]
    }
)


def github(
    event: str, payload: dict[str, Any], delivery: str = "d-1"
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(SECRET, body),
    }
    return headers, body


def generic(
    payload: dict[str, Any], ts: float = NOW, delivery: str = "ci-42"
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    stamp = str(int(ts))
    headers = {
        "X-Opsflows-Event": "run-deployment",
        "X-Opsflows-Delivery": delivery,
        "X-Opsflows-Timestamp": stamp,
        "X-Opsflows-Signature": sign(SECRET, body, stamp),
    }
    return headers, body


def push(**extra: Any) -> dict[str, Any]:
    return {
        "ref": "refs/heads/main",
        "deleted": False,
        "after": "abc123",
        "replicas": 3,
        "repository": {"pushed_at": int(NOW) - 10},
        **extra,
    }


def status_of(headers: dict[str, str], body: bytes, table: RouteTable = TABLE) -> int:
    with pytest.raises(Rejected) as info:
        decide(table, SECRET, headers, body, NOW)
    return info.value.status


# --- signatures -------------------------------------------------------------------------


def test_github_signature_matches_githubs_documented_example() -> None:
    # From GitHub's "Validating webhook deliveries" docs.
    assert (
        sign(b"It's a Secret to Everybody", b"Hello, World!")
        == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_signature_checks() -> None:
    body = b'{"a": 1}'
    good = sign(SECRET, body)
    assert signature_valid(SECRET, body, good, None)
    assert not signature_valid(SECRET, body + b" ", good, None)
    assert not signature_valid(b"other", body, good, None)
    assert not signature_valid(SECRET, body, None, None)
    assert not signature_valid(SECRET, body, good.removeprefix("sha256="), None)
    assert not signature_valid(SECRET, body, "sha256=ünïcode", None)
    assert not signature_valid(b"", body, sign(b"", body), None)


def test_generic_signature_covers_the_timestamp() -> None:
    headers, body = generic({"deployment": "migrate-database/migrate-database"})
    assert decide(TABLE, SECRET, headers, body, NOW) is not None
    # Refreshing the timestamp of a captured request breaks its signature.
    refreshed = {**headers, "X-Opsflows-Timestamp": str(int(NOW) + 1)}
    assert status_of(refreshed, body) == 401


def test_missing_or_wrong_signature_is_401() -> None:
    headers, body = github("push", push())
    assert status_of({**headers, "X-Hub-Signature-256": sign(b"wrong", body)}, body) == 401
    del headers["X-Hub-Signature-256"]
    assert status_of(headers, body) == 401


def test_signature_is_checked_before_the_body_is_parsed() -> None:
    headers, _ = github("push", push())
    assert status_of(headers, b"not json") == 401
    headers["X-Hub-Signature-256"] = sign(SECRET, b"not json")
    assert status_of(headers, b"not json") == 400


# --- headers and body -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-GitHub-Event": "push"},
        {"X-GitHub-Event": "push", "X-GitHub-Delivery": "has spaces"},
        {"X-GitHub-Event": "push", "X-Opsflows-Event": "run-deployment", "X-GitHub-Delivery": "a"},
        {"X-Opsflows-Event": "run-deployment", "X-Opsflows-Delivery": "a"},
        {"X-Opsflows-Event": "x", "X-Opsflows-Delivery": "a", "X-Opsflows-Timestamp": "soon"},
    ],
)
def test_incomplete_headers_are_400(headers: dict[str, str]) -> None:
    with pytest.raises(Rejected) as info:
        read_delivery(headers)
    assert info.value.status == 400


def test_headers_are_case_insensitive() -> None:
    delivery, signature = read_delivery(
        {"x-github-event": "push", "X-GITHUB-DELIVERY": "abc", "x-hub-signature-256": "sha256=1"}
    )
    assert delivery == Delivery("github", "push", "abc")
    assert signature == "sha256=1"


def test_oversized_body_is_400_before_anything_else() -> None:
    body = b" " * (MAX_BODY_BYTES + 1)
    assert status_of({}, body) == 400


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_400(body: bytes) -> None:
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "d",
        "X-Hub-Signature-256": sign(SECRET, body),
    }
    assert status_of(headers, body) == 400


# --- freshness --------------------------------------------------------------------------


def test_freshness_window() -> None:
    check_fresh(NOW - 299, NOW)
    check_fresh(NOW + 299, NOW)
    for occurred in (NOW - 301, NOW + 301):
        with pytest.raises(Rejected) as info:
            check_fresh(occurred, NOW)
        assert info.value.status == 401


def test_stale_generic_request_is_401() -> None:
    headers, body = generic({"deployment": "migrate-database/migrate-database"}, ts=NOW - 600)
    assert status_of(headers, body) == 401


def test_github_event_time_comes_from_the_signed_payload() -> None:
    delivery = Delivery("github", "push", "d")
    assert event_time(delivery, {"repository": {"pushed_at": 1234}}) == 1234.0
    wf = Delivery("github", "workflow_run", "d")
    assert event_time(wf, {"workflow_run": {"updated_at": "1970-01-01T00:01:00Z"}}) == 60.0
    with pytest.raises(Rejected) as info:
        event_time(delivery, {"repository": {}})
    assert info.value.status == 400
    headers, body = github("push", push(repository={"pushed_at": int(NOW) - 3600}))
    assert status_of(headers, body) == 401


def test_ping_is_answered_without_a_route() -> None:
    headers, body = github("ping", {"zen": "Keep it simple."})
    assert decide(TABLE, SECRET, headers, body, NOW) is None


def test_replay_window_must_cover_the_freshness_window() -> None:
    base = {"routes": [{"source": "github", "event": "push", "deployment": "a/b"}]}
    with pytest.raises(ValueError, match="replay_ttl_seconds"):
        load_table({**base, "max_age_seconds": 300, "replay_ttl_seconds": 500})
    assert load_table({**base, "replay_ttl_seconds": 600}).replay_ttl_seconds == 600


# --- routing ----------------------------------------------------------------------------


def test_push_to_main_maps_to_staged_deploy_with_the_image() -> None:
    headers, body = github("push", push(), delivery="abc-1")
    run = decide(TABLE, SECRET, headers, body, NOW)
    assert run is not None
    assert run.deployment == "staged-deploy/staged-deploy"
    assert run.parameters == {"image": "registry.local/web-app:abc123", "replicas": 3}
    assert run.idempotency_key == "github:abc-1"


def test_push_to_another_branch_or_an_unknown_event_is_404() -> None:
    headers, body = github("push", push(ref="refs/heads/feature"))
    assert status_of(headers, body) == 404
    headers, body = github("issues", {"action": "opened"})
    assert status_of(headers, body) == 404


def test_a_route_field_missing_from_the_payload_is_400() -> None:
    payload = push()
    del payload["after"]
    headers, body = github("push", payload)
    assert status_of(headers, body) == 400


def test_generic_form_only_starts_allowed_deployments_with_allowed_parameters() -> None:
    ok = {"deployment": "migrate-database/migrate-database", "parameters": {"reason": "ci"}}
    headers, body = generic(ok)
    run = decide(TABLE, SECRET, headers, body, NOW)
    assert run is not None and run.parameters == {"reason": "ci"}
    assert run.idempotency_key == "opsflows:ci-42"
    headers, body = generic({"deployment": "restore/restore", "parameters": {}})
    assert status_of(headers, body) == 404
    bad = {**ok, "parameters": {"reason": "ci", "database": "app-db-admin"}}
    headers, body = generic(bad)
    assert status_of(headers, body) == 400
    headers, body = generic({"deployment": ["not", "a", "name"]})
    assert status_of(headers, body) == 400


def test_render_keeps_types_and_fills_text() -> None:
    payload = {"a": {"b": [10, 20]}, "name": "x"}
    assert render("{{ a.b.1 }}", payload, "r") == 20
    assert render({"k": ["{{name}}-{{ a.b.0 }}"]}, payload, "r") == {"k": ["x-10"]}
    assert render(7, payload, "r") == 7


def test_first_matching_route_wins() -> None:
    table = load_table(
        {
            "routes": [
                {
                    "name": "one",
                    "source": "github",
                    "event": "push",
                    "match": {"ref": ["x", "y"]},
                    "deployment": "a/one",
                },
                {"name": "two", "source": "github", "event": "push", "deployment": "a/two"},
            ]
        }
    )
    delivery = Delivery("github", "push", "d")
    assert route_event(table, delivery, {"ref": "y"}).route == "one"
    assert route_event(table, delivery, {"ref": "z"}).route == "two"


@pytest.mark.parametrize(
    "route, message",
    [
        ({"source": "gitlab", "event": "push", "deployment": "a/b"}, "source"),
        ({"source": "github", "deployment": "a/b"}, "event"),
        ({"source": "github", "event": "push"}, "exactly one"),
        ({"source": "github", "event": "push", "deployment": "no-slash"}, "flow/deployment"),
        ({"source": "github", "event": "push", "allow": {"a/b": []}}, "generic"),
        ({"source": "github", "event": "push", "deployment": "a/b", "match": ["x"]}, "mappings"),
    ],
)
def test_bad_tables_are_refused_with_the_reason(route: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_table({"routes": [route]})
    with pytest.raises(ValueError, match="non-empty"):
        load_table({"routes": []})


def test_the_shipped_routing_table_is_valid() -> None:
    table = load_routes(ROUTES_FILE)
    assert table.max_body_bytes == 256 * 1024
    assert table.max_age_seconds == 300
    assert {r.source for r in table.routes} == {"github", "opsflows"}
    events = {(r.source, r.event) for r in table.routes}
    assert {("github", "push"), ("github", "deployment"), ("github", "workflow_run")} <= events


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
    assert resp.status_code == 400 and "larger than" in resp.json()["error"]


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
