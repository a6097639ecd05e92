"""The webhook's routing table: which deployment an event starts, with what parameters."""

from __future__ import annotations

from typing import Any

import pytest

from decisions.webhook import Delivery, decide, load_table, render, route_event
from deployments.webhook import ROUTES_FILE, load_routes
from opsflows.errors import ConfigurationError
from tests.webhook_support import NOW, SECRET, TABLE, generic, github, push, status_of


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
    ok = {
        "deployment": "migrate-database/migrate-database",
        "parameters": {"reason": "ci", "git_ref": "v2"},
    }
    headers, body = generic(ok)
    run = decide(TABLE, SECRET, headers, body, NOW)
    assert run is not None
    assert run.parameters == {"reason": "ci", "git_ref": "v2", "migrations_dir": "db/migrations"}
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
    with pytest.raises(ConfigurationError, match=message):
        load_table({"routes": [route]})
    with pytest.raises(ConfigurationError, match="non-empty"):
        load_table({"routes": []})


def test_the_shipped_routing_table_is_valid() -> None:
    table = load_routes(ROUTES_FILE)
    assert table.max_body_bytes == 256 * 1024
    assert table.max_age_seconds == 300
    assert {r.source for r in table.routes} == {"github", "opsflows"}
    events = {(r.source, r.event) for r in table.routes}
    assert {("github", "push"), ("github", "deployment"), ("github", "workflow_run")} <= events
