"""What a signed CI request may choose: never the promotion policy, a path on the worker,
or an image from a repository its route does not list; migrations only at a git ref."""

from __future__ import annotations

from typing import Any

import pytest

from decisions.webhook import decide, load_table
from deployments.webhook import ROUTES_FILE, load_routes
from opsflows.errors import ConfigurationError
from tests.webhook_support import NOW, SECRET, TABLE, generic, github, push, rejection

MIGRATE = "migrate-database/migrate-database"
DEPLOY = "staged-deploy/staged-deploy"


def permissive_table() -> Any:
    """A routes file that (wrongly) lets CI set the policy and the migrations folder."""
    return load_table(
        {
            "routes": [
                {
                    "name": "ci-run",
                    "source": "opsflows",
                    "event": "run-deployment",
                    "images": ["registry.local/web-app"],
                    "allow": {
                        DEPLOY: ["image", "policy", "migrations_dir"],
                        MIGRATE: ["migrations_dir", "repository", "git_ref"],
                    },
                },
                {
                    "name": "push-policy",
                    "source": "github",
                    "event": "push",
                    "deployment": DEPLOY,
                    "images": ["registry.local/web-app"],
                    "parameters": {
                        "image": "registry.local/web-app:{{ after }}",
                        "policy": "{{ policy }}",
                    },
                },
            ]
        }
    )


# --- the promotion policy ---------------------------------------------------------------


@pytest.mark.parametrize("policy", ["auto", "manual"])
def test_policy_from_ci_is_403_even_when_the_routes_file_allows_it(policy: str) -> None:
    image = "registry.local/web-app:1.4.2"
    payload = {"deployment": DEPLOY, "parameters": {"image": image, "policy": policy}}
    refused = rejection(*generic(payload), table=permissive_table())
    assert refused.status == 403
    assert "policy" in refused.reason and "promotion" in refused.reason
    # The shipped table does not list it either (its generic route refuses it the same way).
    refused = rejection(*generic(payload))
    assert refused.status == 403 and "policy" in refused.reason


def test_a_route_rendering_the_policy_from_the_payload_is_403() -> None:
    headers, body = github("push", push(policy="auto"))
    refused = rejection(headers, body, table=permissive_table())
    assert refused.status == 403 and "policy" in refused.reason


# --- images -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "evil.example/miner:1.0",
        "registry.local/other-app:1.0",
        "registry.local/web-app-evil:1.0",
        "web-app:1.0",
        "registry.local/web-app",  # no tag or digest
        "registry.local/web-app:latest",
        "registry.local/web-app:1.0 ",
        "",
        42,
    ],
)
def test_an_image_outside_the_routes_repositories_is_403_naming_them(image: Any) -> None:
    payload = {"deployment": DEPLOY, "parameters": {"image": image, "commit": "abc"}}
    refused = rejection(*generic(payload))
    assert refused.status == 403, refused.reason
    assert "registry.local/web-app" in refused.reason and "ghcr.io/acme/api" in refused.reason


@pytest.mark.parametrize(
    "image",
    [
        "registry.local/web-app:1.4.2",
        "ghcr.io/acme/api:v2",
        "registry.local/web-app@sha256:" + "a" * 64,
    ],
)
def test_an_image_from_a_listed_repository_with_a_tag_or_digest_is_accepted(image: str) -> None:
    payload = {"deployment": DEPLOY, "parameters": {"image": image}}
    run = decide(TABLE, SECRET, *generic(payload), NOW)
    assert run is not None and run.parameters["image"] == image


def test_a_github_deployment_payload_cannot_choose_another_image() -> None:
    def deployment(image: str) -> dict[str, Any]:
        return {"deployment": {"payload": {"image": image}, "updated_at": int(NOW) - 5}}

    headers, body = github("deployment", deployment("evil.example/web-app:1"))
    refused = rejection(headers, body)
    assert refused.status == 403 and "registry.local/web-app" in refused.reason
    run = decide(TABLE, SECRET, *github("deployment", deployment("registry.local/web-app:9")), NOW)
    assert run is not None and run.parameters["image"] == "registry.local/web-app:9"


def test_a_push_whose_rendered_image_is_not_pinned_is_403() -> None:
    # "registry.local/web-app:{{ after }}" with a value that turns it into another reference.
    headers, body = github("push", push(after="1@sha256:" + "0" * 10))
    assert rejection(headers, body).status == 403


# --- migrations: only the configured folder, at a git ref -------------------------------


@pytest.mark.parametrize("name", ["migrations_dir", "repository"])
def test_a_path_on_the_worker_from_ci_is_403(name: str) -> None:
    payload = {"deployment": MIGRATE, "parameters": {name: "/tmp/evil", "git_ref": "main"}}
    refused = rejection(*generic(payload), table=permissive_table())
    assert refused.status == 403 and name in refused.reason and "git_ref" in refused.reason
    payload = {"deployment": DEPLOY, "parameters": {"image": "registry.local/web-app:1"}}
    payload["parameters"]["migrations_dir"] = "/tmp/evil"
    assert rejection(*generic(payload), table=permissive_table()).status == 403


def test_migrations_come_from_the_routes_folder_at_the_callers_git_ref() -> None:
    payload = {"deployment": MIGRATE, "parameters": {"git_ref": "v1.4.2", "dry_run": True}}
    run = decide(TABLE, SECRET, *generic(payload), NOW)
    assert run is not None
    assert run.parameters == {
        "migrations_dir": "db/migrations",
        "git_ref": "v1.4.2",
        "dry_run": True,
    }


def test_migrations_without_a_git_ref_are_400() -> None:
    refused = rejection(*generic({"deployment": MIGRATE, "parameters": {"reason": "ci"}}))
    assert refused.status == 400 and "git_ref" in refused.reason


@pytest.mark.parametrize(
    "ref",
    ["--upload-pack=x", "main..evil", "HEAD~3", "main@{yesterday}", "a b", "/abs", "x/", "", 7],
)
def test_a_malformed_git_ref_is_400(ref: Any) -> None:
    refused = rejection(*generic({"deployment": MIGRATE, "parameters": {"git_ref": ref}}))
    assert refused.status == 400 and "git_ref" in refused.reason


@pytest.mark.parametrize("ref", ["main", "release/1.4", "v1.4.2", "4f2c9e1", "a" * 40])
def test_branch_tag_and_commit_refs_are_accepted(ref: str) -> None:
    run = decide(
        TABLE, SECRET, *generic({"deployment": MIGRATE, "parameters": {"git_ref": ref}}), NOW
    )
    assert run is not None and run.parameters["git_ref"] == ref


# --- the table's own checks -------------------------------------------------------------


@pytest.mark.parametrize(
    "route, message",
    [
        (
            {
                "source": "github",
                "event": "push",
                "deployment": "a/b",
                "parameters": {"image": "x"},
            },
            "images",
        ),
        ({"source": "opsflows", "event": "e", "allow": {"a/b": ["image"]}}, "images"),
        (
            {"source": "opsflows", "event": "e", "allow": {"a/b": ["image"]}, "images": ["a:1"]},
            "registry/repository",
        ),
        (
            {"source": "opsflows", "event": "e", "allow": {"a/b": {"parameters": ["x"], "y": 1}}},
            "parameters",
        ),
        (
            {
                "source": "opsflows",
                "event": "e",
                "allow": {"a/b": {"parameters": ["x"], "fixed": {"x": 1}}},
            },
            "fixed",
        ),
    ],
)
def test_bad_image_or_allow_entries_are_refused(route: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_table({"routes": [route]})


def test_the_shipped_table_lets_ci_choose_no_policy_path_or_foreign_image() -> None:
    table = load_routes(ROUTES_FILE)
    for route in table.routes:
        for names in route.allow.values():
            assert not {"policy", "migrations_dir", "repository"} & set(names), route.name
        if "image" in route.parameters or any("image" in n for n in route.allow.values()):
            assert route.images == ("registry.local/web-app",), route.name
    ci = next(r for r in table.routes if r.name == "ci-run")
    assert "git_ref" in ci.allow[MIGRATE]
    assert ci.fixed[MIGRATE]["migrations_dir"]
