"""Signed webhook requests as CI systems send them (tests/e2e/test_webhook.py): a GitHub
push (JSON or form-encoded) and the generic ``run-deployment`` event, plus replaying one."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from decisions.webhook import sign


def github_push(secret: bytes, delivery: str, **changes: Any) -> tuple[dict[str, str], bytes]:
    payload = {
        "ref": "refs/heads/main",
        "after": "c0ffee1",
        "repository": {"pushed_at": int(time.time())},
        **changes,
    }
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(secret, body),
    }
    return headers, body


def generic(
    secret: bytes, delivery: str, payload: dict[str, Any], age: float = 0
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    stamp = str(int(time.time() - age))
    return {
        "X-Opsflows-Event": "run-deployment",
        "X-Opsflows-Delivery": delivery,
        "X-Opsflows-Timestamp": stamp,
        "X-Opsflows-Signature": sign(secret, body, stamp, delivery),
    }, body


def github_form(secret: bytes, delivery: str) -> tuple[dict[str, str], bytes]:
    """A push as GitHub sends it with its default content type (form-encoded, signed)."""
    headers, body = github_push(secret, delivery)
    from urllib.parse import urlencode

    form = urlencode({"payload": body.decode()}).encode()
    return {
        **headers,
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Hub-Signature-256": sign(secret, form),
    }, form


def renamed(request: tuple[dict[str, str], bytes]) -> tuple[dict[str, str], bytes]:
    """A captured generic request sent again under a new delivery id, not re-signed."""
    headers, body = request
    return {**headers, "X-Opsflows-Delivery": f"ci-{uuid.uuid4()}"}, body
