"""Signed webhook requests for the unit tests of the webhook's rules and receiver.

A fixed secret and clock, a small routing table (two GitHub routes, one generic route) and
builders for GitHub and generic (``X-Opsflows-*``) deliveries signed with that secret.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from decisions.webhook import Rejected, RouteTable, decide, load_table, sign

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
                "images": ["registry.local/web-app"],
            },
            {
                "name": "github-deployment",
                "source": "github",
                "event": "deployment",
                "deployment": "staged-deploy/staged-deploy",
                "parameters": {"image": "{{ deployment.payload.image }}"},
                "images": ["registry.local/web-app"],
            },
            {
                "name": "ci-run",
                "source": "opsflows",
                "event": "run-deployment",
                "images": ["registry.local/web-app", "ghcr.io/acme/api"],
                "allow": {
                    "migrate-database/migrate-database": {
                        "parameters": ["reason", "git_ref", "dry_run"],
                        "fixed": {"migrations_dir": "db/migrations"},
                    },
                    "staged-deploy/staged-deploy": ["image", "commit"],
                },
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
        "X-Opsflows-Signature": sign(SECRET, body, stamp, delivery),
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


def rejection(headers: dict[str, str], body: bytes, table: RouteTable = TABLE) -> Rejected:
    with pytest.raises(Rejected) as info:
        decide(table, SECRET, headers, body, NOW)
    return info.value


def status_of(headers: dict[str, str], body: bytes, table: RouteTable = TABLE) -> int:
    return rejection(headers, body, table).status
