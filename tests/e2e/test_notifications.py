"""Severity routing reaches Prefect's own notification blocks (posting to the devstack sink)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from prefect import flow

from blocks.notify import NotificationRouting
from devstack.stack import StackInfo
from opsflows.errors import ConfigurationError
from procedures.operation import ROUTING, load_block, notify, operation_log


@flow(name="test-notify")
def send(severity: str, subject: str) -> int:
    routing = load_block(NotificationRouting, ROUTING)
    with operation_log("notification test", "route by severity", None, routing):
        return notify(severity, subject, "body text")


def sink(info: StackInfo, channel: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{info.kube_url}/_sink/{channel}", timeout=5)
    response.raise_for_status()
    data = response.json()
    return list(data if isinstance(data, list) else data.get("items", data.get("messages", [])))


def seen(info: StackInfo, channel: str, marker: str) -> bool:
    return any(marker in str(item) for item in sink(info, channel))


@pytest.mark.parametrize(
    ("severity", "page", "note"),
    [("P1", True, True), ("P2", True, True), ("P3", False, True), ("P4", False, False)],
)
def test_routing_follows_the_runbook_channels(
    stack: StackInfo, bootstrapped: Any, severity: str, page: bool, note: bool
) -> None:
    marker = f"incident-{uuid.uuid4().hex[:8]}"
    delivered = send(severity, marker)
    assert delivered == int(page) + int(note)
    assert seen(stack, "page", marker) is page
    assert seen(stack, "notify", marker) is note


def test_unknown_severity_is_rejected(stack: StackInfo, bootstrapped: Any) -> None:
    with pytest.raises(ConfigurationError, match="unknown severity 'P9'"):
        send("P9", "nope")


def test_block_types_register_from_the_module(stack: StackInfo, prefect_api: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Successfully registered" in result.stdout
