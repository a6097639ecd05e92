"""What the deploy tests share: image names, the two environments, traffic, paused runs."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from blocks.kube import KubeEnvironment
from devstack.loadgen import run_load


def new_image(suffix: str = "") -> str:
    """A version nobody deployed yet (so every deploy is a real change)."""
    return f"registry.local/web-app:4.{uuid.uuid4().int % 10_000}.0{suffix}"


def environments() -> dict[str, KubeEnvironment]:
    """The staging and production blocks saved by bootstrap."""
    return {name: KubeEnvironment.load(name) for name in ("staging", "production")}


@contextlib.contextmanager
def steady_load(url: str, rps: float = 15) -> Iterator[None]:
    """Steady traffic on ``url`` for the body of the ``with``: the error rate and p95 the
    bake judges are real."""
    stop = threading.Event()
    thread = threading.Thread(target=run_load, args=(url, rps, 0, stop), daemon=True)
    thread.start()
    time.sleep(2)
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=15)


def paused_run_of(image: str, timeout_s: float = 120) -> Any:
    """The paused flow run (staged deploy or hotfix) deploying ``image``."""
    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            for run in client.read_flow_runs(flow_run_filter=paused, limit=50):
                if run.parameters.get("image") == image:
                    return run
        time.sleep(0.5)
    raise AssertionError(f"no paused run for {image}")


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a thread; its return value lands in the box under ``state``."""
    box: dict[str, Any] = {}

    def target() -> None:
        box["state"] = fn()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


BAD_MARKERS = ("broken", "crashloop", "badpull", "slow", "flaky")


def image_of(env: KubeEnvironment) -> str:
    """The image the environment's Deployment runs now."""
    from prefect.logging import disable_run_logger

    from tasks import rollout

    with disable_run_logger():
        return str(rollout.current_release.fn(env).image)


def put_back_healthy(envs: dict[str, KubeEnvironment], before: dict[str, str]) -> None:
    """After a test: any environment left on a bad image goes back to its image before."""
    from prefect.logging import disable_run_logger

    from tasks import rollout

    with disable_run_logger():
        for name, env in envs.items():
            if any(marker in image_of(env) for marker in BAD_MARKERS):
                rollout.set_image.fn(env, before[name])
            rollout.wait_for_rollout.fn(env, timeout_s=60)


def save_without_prometheus(production: KubeEnvironment, name: str, free_port: int) -> str:
    """Save a copy of ``production``'s block whose metrics backend does not answer."""
    KubeEnvironment(
        environment=production.environment,
        api_url=production.api_url,
        namespace=production.namespace,
        service_url=production.service_url,
        prometheus_url=f"http://127.0.0.1:{free_port}",
        verify_ssl=False,
    ).save(name, overwrite=True)
    return name
