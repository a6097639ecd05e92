"""The webhook's request checks: signatures, headers and body, freshness and replay window."""

from __future__ import annotations

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
)
from opsflows.errors import ConfigurationError
from tests.webhook_support import NOW, SECRET, TABLE, generic, github, push, status_of

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
    with pytest.raises(ConfigurationError, match="replay_ttl_seconds"):
        load_table({**base, "max_age_seconds": 300, "replay_ttl_seconds": 500})
    assert load_table({**base, "replay_ttl_seconds": 600}).replay_ttl_seconds == 600
