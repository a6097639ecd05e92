"""The Kubernetes API fails while a rotation switches its consumers (``/_sim/faults`` 503s)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

import flows.rotate_credentials as flow_module
from devstack.stack import StackInfo
from tests.rotation_support import World, assert_no_secrets, check_failed_run


def test_the_kubernetes_api_fails_while_switching_consumers(
    stack: StackInfo, bootstrapped: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = World(stack, consumers=2).create()
    try:
        before = w.value()
        # the second environment's restart fails on every attempt (4 = 1 + 3 retries); the
        # rule then expires by itself, so the shared simulator is left as it was
        path = f"namespaces/{w.envs[1]}/deployments/"
        rule = {"status": 503, "method": "PATCH", "path": path, "count": 4}

        def fault() -> None:
            httpx.post(f"{stack.kube_url}/_sim/faults", json=rule).raise_for_status()

        monkeypatch.setattr(flow_module, "restart_consumers", _on_call(2, fault))
        state = w.run()

        check_failed_run(w, state, "switch_consumers")
        rules = httpx.get(f"{stack.kube_url}/_sim/faults").json()["rules"]
        assert not [r for r in rules if r["path"] == path]  # all four attempts hit the fault
        for env in w.envs:  # the first environment had switched: it is switched back
            assert w.kube_secret(env)["password"] == before["password"]
        template = w.deployment(w.envs[0])["spec"]["template"]["metadata"]["annotations"]
        assert template["opsflows.io/credential-version"] == before["version"]
        assert w.block_password() == before["password"]
        assert_no_secrets(w.run_ids, w.passwords)
    finally:
        w.remove()


def _on_call(n: int, fault: Callable[[], None]) -> Any:
    """The flow's ``restart_consumers``, with ``fault`` armed before its ``n``-th call."""
    original = flow_module.restart_consumers
    calls: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == n:
            fault()
            return original.with_options(retry_delay_seconds=0)(*args, **kwargs)
        return original(*args, **kwargs)

    return wrapped
