"""Production deploys that cannot finish on their own: the rollback's API down, the run killed.

Production serves steady traffic for the whole module, so the bake judges real PromQL. The
simulator's faults are cleared after every test, and production is put back on the image
it ran before if a test left it on another one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.logging import disable_run_logger

from blocks.kube import KubeEnvironment
from devstack.stack import StackInfo
from flows.deploy import staged_deploy
from flows.operate import rollback
from opsflows.errors import VerificationFailed
from tasks import rollout
from tests.backup_support import REPO_ROOT
from tests.deploy_support import environments, new_image, steady_load
from tests.support import count_fault, flow_run_id, oplog_row

DEPLOYMENT = "/apis/apps/v1/namespaces/production/deployments/web-app"
FAST: dict[str, Any] = {"bake_interval_s": 1, "smoke_retry_s": 3, "approval_timeout_s": 60}
#: The shortest lease the Prefect server grants; the killed run's lock is held on it.
TEST_LEASE_S = 60


@pytest.fixture(scope="module")
def envs(bootstrapped: Any) -> dict[str, KubeEnvironment]:
    return environments()


@pytest.fixture(scope="module", autouse=True)
def production_traffic(stack: StackInfo) -> Iterator[None]:
    """Steady load on production: the error rate the bake judges is real."""
    with steady_load(stack.app_url("production") + "/"):
        yield


def release_of(env: KubeEnvironment) -> dict[str, Any]:
    """Production's revision and image (``current_release``, outside a flow)."""
    with disable_run_logger():
        return rollout.current_release.fn(env).as_dict()


@pytest.fixture
def before(
    stack: StackInfo, envs: dict[str, KubeEnvironment]
) -> Iterator[dict[str, dict[str, Any]]]:
    """The releases before the test; afterwards no fault is left and both run them again."""
    seen = {name: release_of(env) for name, env in envs.items()}
    yield seen
    httpx.delete(f"{stack.kube_url}/_sim/faults", timeout=5).raise_for_status()
    with disable_run_logger():
        for name, env in envs.items():
            if release_of(env)["image"] != seen[name]["image"]:
                rollout.set_image.fn(env, seen[name]["image"])
            rollout.wait_for_rollout.fn(env, timeout_s=60)


def template_image(stack: StackInfo) -> str:
    """The image production's Deployment asks for (read straight from the API)."""
    dep = httpx.get(stack.kube_url + DEPLOYMENT, timeout=5).json()
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


def health(stack: StackInfo) -> dict[str, Any]:
    response = httpx.get(stack.app_url("production") + "/health", timeout=5)
    return {**response.json(), "code": response.status_code}


def sink(stack: StackInfo, channel: str) -> list[str]:
    entries = httpx.get(f"{stack.kube_url}/_sink/{channel}", timeout=5).json()
    return [str(e["body"].get("subject")) for e in entries if isinstance(e["body"], dict)]


def fail_the_rollback(stack: StackInfo, image: str, done: threading.Event) -> dict[str, bool]:
    """Take the Kubernetes API away from the rollback of ``image``, in a background thread.

    Once production's Deployment asks for ``image`` (the release is out), every change to
    it is refused; the first refused change is the rollback starting (the bake only reads),
    and from then on the whole API is down.
    """
    seen: dict[str, bool] = {}
    rule = {"status": 503, "method": "PATCH", "path": f"^{DEPLOYMENT}$", "count": None}

    def rollback_began() -> bool:
        rules = httpx.get(f"{stack.kube_url}/_sim/faults", timeout=5).json()["rules"]
        return any(r["method"] == "PATCH" and r["hits"] > 0 for r in rules)

    def watch() -> None:
        while not done.is_set() and template_image(stack) != image:
            time.sleep(0.1)
        httpx.post(f"{stack.kube_url}/_sim/faults", json=rule, timeout=5).raise_for_status()
        seen["writes refused"] = True
        while not done.is_set() and not rollback_began():
            time.sleep(0.05)
        if not done.is_set():
            httpx.post(f"{stack.kube_url}/_sim/faults", json={"down": True}, timeout=5)
            seen["api down"] = True

    threading.Thread(target=watch, daemon=True).start()
    return seen


def test_api_down_during_the_automatic_rollback_pages_and_the_rollback_flow_recovers(
    stack: StackInfo, envs: dict[str, KubeEnvironment], before: dict[str, dict[str, Any]]
) -> None:
    production = envs["production"]
    previous = before["production"]
    image = new_image("-prodbroken")
    done = threading.Event()
    seen = fail_the_rollback(stack, image, done)
    try:
        state = staged_deploy(image=image, bake_seconds=15, return_state=True, **FAST)
    finally:
        done.set()
    assert seen == {"writes refused": True, "api down": True}, seen
    assert state.is_failed()
    with pytest.raises(VerificationFailed) as info:
        state.result()
    error = info.value
    assert "error_rate" in error.message, "the bake found the release bad"
    assert "the automatic rollback to revision" in error.message and "failed" in error.message
    assert error.hint is not None and "roll back by hand" in error.hint
    assert f"[P1] production: rollback of {image} FAILED" in sink(stack, "page")

    entry = oplog_row(stack, flow_run_id(state))
    assert entry["status"] == "failed"
    assert "automatic rollback failed" in entry["follow_up"]
    assert f"revision {previous['revision']}" in entry["follow_up"]
    assert entry["impact"] == f"production may still run {image}: the automatic rollback failed"

    httpx.delete(f"{stack.kube_url}/_sim/faults", timeout=5).raise_for_status()  # API back
    assert release_of(production)["image"] == image, "the bad release is still in production"
    done_by_hand = rollback(environment="production", revision=previous["revision"])
    assert done_by_hand["after"]["image"] == previous["image"]
    assert release_of(production)["image"] == previous["image"]
    now = health(stack)
    assert now["code"] == 200 and now["image"] == previous["image"]


def active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return int(client.read_global_concurrency_limit_by_name(name).active_slots)


def test_deploy_killed_mid_production_frees_the_change_lock_and_production_recovers(
    stack: StackInfo, envs: dict[str, KubeEnvironment], before: dict[str, dict[str, Any]]
) -> None:
    production = envs["production"]
    previous = before["production"]
    assert active_slots("change-production") == 0
    image = new_image("-prodbroken")
    code = (
        "from flows.deploy import staged_deploy; "
        f"staged_deploy(image={image!r}, bake_seconds=300, bake_interval_s=1, smoke_retry_s=3)"
    )
    run = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "OPSFLOWS_CHANGE_LEASE_S": str(TEST_LEASE_S)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def released() -> bool:
            assert run.poll() is None, "the deploy ended before it was killed"
            return template_image(stack) == image

        wait_for(released, "the deploy changed production")
        run.send_signal(signal.SIGKILL)
        count_fault("kill")
    finally:
        run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    assert active_slots("change-production") == 1, "the dead run still holds the lock"
    assert release_of(production)["image"] == image, "production was left on the new release"

    # The next change waits for the dead run's lease to run out, then takes the lock.
    recovered = rollback(
        environment="production", revision=previous["revision"], lock_timeout_s=600
    )
    assert recovered["before"]["image"] == image
    assert recovered["after"]["image"] == previous["image"]
    now = health(stack)
    assert now["code"] == 200 and now["image"] == previous["image"]
    assert active_slots("change-production") == 0
