"""The webhook's request checks: signatures, headers and body, freshness and replay window."""

from __future__ import annotations

import json

import pytest

from decisions.webhook import (
    MAX_BODY_BYTES,
    Delivery,
    Rejected,
    check_fresh,
    decide,
    event_time,
    load_table,
    read_delivery,
    sign,
    signature_valid,
    signed_bytes,
)
from opsflows.errors import ConfigurationError
from tests.webhook_support import NOW, SECRET, TABLE, generic, github, push, rejection, status_of

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


MIGRATE = {"deployment": "migrate-database/migrate-database", "parameters": {"git_ref": "main"}}


def test_generic_signature_covers_the_timestamp() -> None:
    headers, body = generic(MIGRATE)
    assert decide(TABLE, SECRET, headers, body, NOW) is not None
    # Refreshing the timestamp of a captured request breaks its signature.
    refreshed = {**headers, "X-Opsflows-Timestamp": str(int(NOW) + 1)}
    assert status_of(refreshed, body) == 401


def test_generic_signature_covers_the_delivery_id() -> None:
    headers, body = generic(MIGRATE, delivery="ci-1")
    assert decide(TABLE, SECRET, headers, body, NOW) is not None
    # A captured request sent again under a new delivery id (to pass the replay store)
    # no longer matches its signature.
    renamed = {**headers, "X-Opsflows-Delivery": "ci-2"}
    assert status_of(renamed, body) == 401


def test_generic_signed_bytes_are_timestamp_delivery_and_body() -> None:
    body = b'{"deployment": "a/b"}'
    assert signed_bytes(body, "1700000000", "ci-7") == b'1700000000.ci-7.{"deployment": "a/b"}'
    assert signed_bytes(body) == body
    with pytest.raises(ValueError, match="delivery"):
        signed_bytes(body, "1700000000")


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


def test_oversized_body_is_413_before_anything_else() -> None:
    body = b" " * (MAX_BODY_BYTES + 1)
    assert status_of({}, body) == 413


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]
)
def test_a_body_that_is_not_json_by_its_content_type_is_415_naming_the_setting(
    content_type: str,
) -> None:
    payload = "payload=" + json.dumps(push())
    headers, body = github("push", push())
    headers["Content-Type"] = content_type
    headers["X-Hub-Signature-256"] = sign(SECRET, payload.encode())
    refused = rejection(headers, payload.encode())
    assert refused.status == 415
    assert "Content type: application/json" in refused.reason


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "application/json; charset=utf-8"]
)
def test_json_or_no_content_type_is_accepted(content_type: str | None) -> None:
    headers, body = github("push", push())
    if content_type:
        headers["content-type"] = content_type
    assert decide(TABLE, SECRET, headers, body, NOW) is not None


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
    headers, body = generic(MIGRATE, ts=NOW - 600)
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
    with pytest.raises(ConfigurationError, match="replay_ttl_seconds"):
        load_table({**base, "max_age_seconds": 300, "replay_ttl_seconds": 500})
    assert load_table({**base, "replay_ttl_seconds": 600}).replay_ttl_seconds == 600
