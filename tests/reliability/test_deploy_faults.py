"""Deploy, rollback, hotfix, scale and restart with faults injected at each step.

Faults are scoped to this module's objects: simulator fault rules match only the paths of
the Deployment under test and are used up (or drained) before each test ends, and blocks
and concurrency limits made here have names of their own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.logging import disable_run_logger

from blocks.kube import KubeEnvironment
from devstack import procs
from devstack.kubesim.seed import web_app_deployment
from devstack.stack import StackInfo
from flows.deploy import staged_deploy
from flows.operate import hotfix, restart, rollback, scale
from opsflows.errors import (
    ConfigurationError,
    GateRejected,
    ServiceUnavailable,
    Throttled,
    VerificationFailed,
)
from tasks import rollout
from tests.deploy_support import save_without_prometheus
from tests.support import count_fault, flow_run_artifacts, flow_run_id


def image_of(env: KubeEnvironment) -> str:
    with disable_run_logger():
        return str(rollout.current_release.fn(env).image)


def generation(env: KubeEnvironment) -> int:
    dep = client.AppsV1Api(env.api_client()).read_namespaced_deployment(
        env.deployment, env.namespace
    )
    return int(dep.metadata.generation)


def add_fault(stack: StackInfo, **rule: Any) -> None:
    httpx.post(f"{stack.kube_url}/_sim/faults", json=rule, timeout=5).raise_for_status()


def drain_faults(stack: StackInfo, path: str, url: str) -> None:
    """Use up what is left of the rules on ``path`` (other engineers' rules stay)."""
    for _ in range(500):
        rules = httpx.get(f"{stack.kube_url}/_sim/faults", timeout=5).json()["rules"]
        if not any(rule["path"] == path for rule in rules):
            return
        httpx.get(url, timeout=5)
    raise AssertionError(f"fault rules on {path} were not drained")


@pytest.fixture(scope="module")
def envs(bootstrapped: Any) -> dict[str, KubeEnvironment]:
    return {name: KubeEnvironment.load(name) for name in ("staging", "production")}


@pytest.fixture(scope="module")
def scratch(stack: StackInfo, bootstrapped: Any) -> Iterator[tuple[str, KubeEnvironment]]:
    """A Deployment in a namespace of its own, saved as a block with its own change limit."""
    suffix = uuid.uuid4().hex[:6]
    name = f"faults-{suffix}"
    env = KubeEnvironment(
        environment=name,
        api_url=stack.kube_url,
        namespace=name,
        service_url=f"http://127.0.0.1:{procs.free_port()}",
        prometheus_url=stack.prometheus_url,
        verify_ssl=False,
    )
    core = client.CoreV1Api(env.api_client())
    core.create_namespace({"metadata": {"name": name}})
    client.AppsV1Api(env.api_client()).create_namespaced_deployment(name, web_app_deployment())
    env.save(f"test-{name}", overwrite=True)
    with disable_run_logger():
        rollout.wait_for_rollout.fn(env, timeout_s=30)
    yield f"test-{name}", env
    core.delete_namespace(name)
    with get_client(sync_client=True) as prefect:
        prefect.delete_global_concurrency_limit_by_name(f"change-{name}")


@pytest.fixture
def quiet() -> Iterator[None]:
    with disable_run_logger():
        yield


def test_bad_image_reference_fails_before_any_side_effect(
    stack: StackInfo, envs: dict[str, KubeEnvironment]
) -> None:
    before = {name: (image_of(env), generation(env)) for name, env in envs.items()}
    for image, why in (
        ("registry.local/web-app:latest", "not pinned"),
        ("Registry.local/WEB APP:1", "not valid"),
    ):
        state = staged_deploy(image=image, return_state=True)
        assert state.is_failed()
        with pytest.raises(ConfigurationError, match=why):
            state.result()
        assert "preflight-checklist" in " ".join(flow_run_artifacts(flow_run_id(state)))
    hot = hotfix(image="registry.local/web-app", return_state=True)
    with pytest.raises(ConfigurationError, match="not pinned"):
        hot.result()
    assert {name: (image_of(env), generation(env)) for name, env in envs.items()} == before
    notes = httpx.get(f"{stack.kube_url}/_sink/notify", timeout=5).json()
    assert not any("registry.local/web-app started" in str(n["body"]) for n in notes)


def test_api_blips_mid_rollout_are_tolerated(
    stack: StackInfo, scratch: tuple[str, KubeEnvironment], quiet: None
) -> None:
    _, env = scratch
    path = f"^/apis/apps/v1/namespaces/{env.namespace}/deployments/web-app$"
    rollout.set_image.fn(env, "registry.local/web-app:5.0.1")
    add_fault(stack, status=503, method="GET", path=path, count=3)
    done = rollout.wait_for_rollout.fn(env, timeout_s=30, api_outage_s=10)
    assert done.message == "successfully rolled out"
    assert image_of(env) == "registry.local/web-app:5.0.1"


def test_api_down_mid_rollout_fails_as_transient_after_the_outage_budget(
    stack: StackInfo, scratch: tuple[str, KubeEnvironment], quiet: None
) -> None:
    _, env = scratch
    path = f"^/apis/apps/v1/namespaces/{env.namespace}/deployments/web-app$"
    rollout.set_image.fn(env, "registry.local/web-app:5.0.2")
    add_fault(stack, status=503, method="GET", path=path, count=25)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="unreachable for"):
            rollout.wait_for_rollout.fn(env, timeout_s=60, api_outage_s=2)
        assert time.monotonic() - started < 15
    finally:
        url = f"{env.api_url}/apis/apps/v1/namespaces/{env.namespace}/deployments/web-app"
        drain_faults(stack, path, url)
    rollout.wait_for_rollout.fn(env, timeout_s=30)


@pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs")
def test_lost_patch_response_is_retried_idempotently(
    stack: StackInfo, scratch: tuple[str, KubeEnvironment]
) -> None:
    _, env = scratch
    path = f"^/apis/apps/v1/namespaces/{env.namespace}/deployments/web-app$"
    add_fault(stack, status=503, method="PATCH", path=path, count=1, after=True)
    result = rollout.set_image(env, "registry.local/web-app:5.0.3")  # a real task run, retried
    assert result.image == "registry.local/web-app:5.0.3"
    assert image_of(env) == "registry.local/web-app:5.0.3"
    with disable_run_logger():
        assert rollout.rollout_history.fn(env)[-1].image == "registry.local/web-app:5.0.3"


def test_missing_or_busy_change_lock(
    stack: StackInfo, scratch: tuple[str, KubeEnvironment]
) -> None:
    block, env = scratch
    before = generation(env)
    state = restart(environment=block, lock_timeout_s=1, return_state=True)
    with pytest.raises(ConfigurationError, match=f"change-{env.environment} does not exist"):
        state.result()
    with get_client(sync_client=True) as prefect:
        prefect.upsert_global_concurrency_limit_by_name(f"change-{env.environment}", 1)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with concurrency(f"change-{env.environment}", occupy=1, strict=True):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert held.wait(30)
        state = restart(environment=block, lock_timeout_s=2, return_state=True)
        with pytest.raises(Throttled, match="held change-"):
            state.result()
    finally:
        release.set()
        holder.join(timeout=30)
    assert generation(env) == before, "nothing may change without the lock"


def test_prometheus_unreachable_is_inconclusive_and_rolls_back(
    stack: StackInfo, envs: dict[str, KubeEnvironment]
) -> None:
    production = envs["production"]
    previous = image_of(production)
    save_without_prometheus(production, "test-production-no-prometheus", procs.free_port())
    count_fault("unreachable")
    image = f"registry.local/web-app:5.{uuid.uuid4().int % 1000}.0"
    state = hotfix(
        image=image,
        environment="test-production-no-prometheus",
        bake_seconds=3,
        bake_interval_s=1,
        inconclusive_timeout_s=2,
        return_state=True,
    )
    # An inconclusive bake waits for a person; nobody answered within 2 s, so it rolled back.
    assert state.is_failed()
    with pytest.raises(VerificationFailed) as info:
        state.result()
    message = str(info.value)
    assert "inconclusive" in message and "rolled back automatically" in message
    assert "nobody reviewed the inconclusive bake within 2s" in message
    assert image_of(production) == previous
    assert httpx.get(stack.app_url("production") + "/health", timeout=5).json()["image"] == (
        previous
    )


def test_rollback_scale_and_restart_flows_on_staging(
    stack: StackInfo, envs: dict[str, KubeEnvironment]
) -> None:
    staging = envs["staging"]
    previous = image_of(staging)
    with disable_run_logger():
        rollout.set_image.fn(staging, f"registry.local/web-app:5.{uuid.uuid4().int % 1000}.1")
        rollout.wait_for_rollout.fn(staging, timeout_s=30)
    before = generation(staging)
    refused = rollback(environment="staging", revision=99999, return_state=True)
    with pytest.raises(ConfigurationError, match="not in the rollout history"):
        refused.result()
    too_many = scale(environment="staging", replicas=staging.max_replicas + 1, return_state=True)
    with pytest.raises(ConfigurationError, match="above the policy maximum"):
        too_many.result()
    assert generation(staging) == before
    done = rollback(environment="staging")
    assert done["after"]["image"] == previous and not done["skipped"]
    assert image_of(staging) == previous
    # A restart survives API blips while it waits for the new pods.
    path = "^/apis/apps/v1/namespaces/staging/deployments/web-app$"
    add_fault(stack, status=503, method="GET", path=path, count=2)
    restarted = restart(environment="staging")
    assert restarted["image"] == previous
    try:
        assert scale(environment="staging", replicas=3)["to"] == 3
        with disable_run_logger():
            status = rollout.rollout_status(staging)
        assert status.available == 3
    finally:
        scale(environment="staging", replicas=2)


def test_api_refusing_the_production_change_leaves_production_as_it_was(
    stack: StackInfo, envs: dict[str, KubeEnvironment]
) -> None:
    production = envs["production"]
    previous, before = image_of(production), generation(production)
    path = "^/apis/apps/v1/namespaces/production/deployments/web-app$"
    add_fault(stack, status=503, method="PATCH", path=path, count=4)  # 1 try + 3 retries
    image = f"registry.local/web-app:5.{uuid.uuid4().int % 1000}.2"
    state = hotfix(image=image, bake_seconds=2, bake_interval_s=1, return_state=True)
    with pytest.raises(VerificationFailed, match="production stayed on revision"):
        state.result()
    assert image_of(production) == previous and generation(production) == before
    rules = httpx.get(f"{stack.kube_url}/_sim/faults", timeout=5).json()["rules"]
    assert not any(rule["path"] == path for rule in rules)


def test_unsafe_migration_blocks_the_deploy_before_any_side_effect(
    tmp_path: Path, envs: dict[str, KubeEnvironment]
) -> None:
    (tmp_path / "001_required_column.sql").write_text(
        "-- A NOT NULL column without a default rewrites and locks the table.\n"
        "ALTER TABLE deploy_gate_probe ADD COLUMN owner text NOT NULL;\n"
    )
    before = {name: (image_of(env), generation(env)) for name, env in envs.items()}
    state = staged_deploy(
        image="registry.local/web-app:5.9.9", migrations_dir=str(tmp_path), return_state=True
    )
    with pytest.raises(
        GateRejected, match="migrations pass the lint gate: .*adding-required-field"
    ):
        state.result()
    assert {name: (image_of(env), generation(env)) for name, env in envs.items()} == before
