"""The production bake on a stack where nothing else sends production any traffic.

Unlike tests/e2e/test_staged_deploy.py there is no steady load here: the bake's only traffic
is its own synthetic probe, as on a fresh ``make up``. A good release must bake and stay; a bad
one must still be caught by the probe's traffic alone and rolled back. A bake whose metrics
backend is down or unreachable pauses for a person: approve keeps the release, reject rolls
back (no answer in time rolls back too: tests/reliability/test_deploy_faults.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.flow_runs import resume_flow_run

from blocks.kube import KubeEnvironment
from devstack import procs
from devstack import stack as devstack
from devstack.stack import StackInfo
from flows.deploy import staged_deploy
from flows.operate import hotfix
from opsflows.errors import VerificationFailed
from opsflows.settings import Settings
from tests.deploy_support import (
    environments,
    image_of,
    new_image,
    paused_run_of,
    put_back_healthy,
    run_in_thread,
    save_without_prometheus,
)
from tests.support import flow_run_artifacts, flow_run_id, oplog_row

FAST: dict[str, Any] = {"bake_seconds": 4, "bake_interval_s": 1}
NO_PROMETHEUS = "test-production-no-prometheus"


@pytest.fixture(scope="module")
def envs(bootstrapped: Any) -> dict[str, KubeEnvironment]:
    return environments()


@pytest.fixture(autouse=True)
def healthy_afterwards(envs: dict[str, KubeEnvironment]) -> Iterator[dict[str, str]]:
    """Record the images before the test; put back a healthy one afterwards if needed."""
    before = {name: image_of(env) for name, env in envs.items()}
    yield before
    put_back_healthy(envs, before)


def served(stack: StackInfo) -> dict[str, Any]:
    response = httpx.get(stack.app_url("production") + "/health", timeout=5)
    return {**response.json(), "code": response.status_code}


def test_good_release_bakes_on_probe_traffic_alone(
    stack: StackInfo, envs: dict[str, KubeEnvironment]
) -> None:
    image = new_image()
    state = staged_deploy(image=image, smoke_retry_s=3, return_state=True, **FAST)
    assert state.is_completed(), state
    assert image_of(envs["production"]) == image and served(stack)["image"] == image
    assert state.result()["production"]["probe"]["requests"] > 0
    details = oplog_row(stack, flow_run_id(state))["details"]
    assert details["bake_verdict"] == "pass"
    probe = details["bake_probe"]
    assert probe["requests"] >= 10 and probe["errors"] == 0 and probe["p95_latency_s"] < 2
    assert details["bake_real_traffic"]["error_rate"] == 0
    assert details["bake_real_traffic"]["p95_latency_s"] is not None
    artifacts = " ".join(flow_run_artifacts(flow_run_id(state)))
    assert "bake-traffic-production" in artifacts and "synthetic probe" in artifacts
    assert "requests)" in artifacts  # the probe's figure beside each bake-table value


def test_hotfix_bakes_on_probe_traffic_alone(
    stack: StackInfo, envs: dict[str, KubeEnvironment]
) -> None:
    image = new_image()
    result = hotfix(image=image, **FAST)
    assert result["bake_verdict"] == "pass" and result["probe"]["errors"] == 0
    assert image_of(envs["production"]) == image and served(stack)["image"] == image


@pytest.mark.parametrize(
    ("suffix", "measurement"), [("-slow", "p95_latency_s"), ("-prodbroken", "error_rate")]
)
def test_bad_release_is_caught_by_probe_traffic_alone(
    stack: StackInfo,
    envs: dict[str, KubeEnvironment],
    healthy_afterwards: dict[str, str],
    suffix: str,
    measurement: str,
) -> None:
    previous = healthy_afterwards["production"]
    image = new_image(suffix)
    state = hotfix(image=image, return_state=True, **FAST)
    assert state.is_failed()
    with pytest.raises(VerificationFailed) as info:
        state.result()
    message = str(info.value)
    assert f"bake fail: {measurement}" in message and "rolled back automatically" in message
    assert image_of(envs["production"]) == previous
    now = served(stack)
    assert now["code"] == 200 and now["image"] == previous
    details = oplog_row(stack, flow_run_id(state))["details"]
    assert details["bake_verdict"] == "fail" and "bake_review" not in details
    probe = details["bake_probe"]
    assert probe["requests"] > 0
    if suffix == "-slow":
        assert probe["p95_latency_s"] > 2
    else:
        assert probe["errors"] > 0


@pytest.fixture
def no_prometheus(stack: StackInfo, envs: dict[str, KubeEnvironment]) -> str:
    """Production's block with its metrics backend unreachable (nothing listens there)."""
    return save_without_prometheus(envs["production"], NO_PROMETHEUS, procs.free_port())


@pytest.fixture
def prometheus_down(stack: StackInfo, envs: dict[str, KubeEnvironment]) -> Iterator[str]:
    """The stack's Prometheus stopped for the test (started again afterwards)."""
    assert procs.stop(Path(stack.state_dir), "prometheus")
    try:
        yield "production"
    finally:
        devstack.up(Settings())  # starts what is not running: Prometheus
        assert httpx.get(stack.prometheus_url + "/-/ready", timeout=5).status_code == 200


def paused_hotfix(image: str, block: str) -> tuple[Any, Any, dict[str, Any]]:
    thread, box = run_in_thread(
        lambda: hotfix(
            image=image,
            environment=block,
            inconclusive_timeout_s=180,
            return_state=True,
            **FAST,
        )
    )
    return paused_run_of(image), thread, box


def test_inconclusive_bake_pauses_and_reject_rolls_back(
    stack: StackInfo,
    envs: dict[str, KubeEnvironment],
    healthy_afterwards: dict[str, str],
    prometheus_down: str,
) -> None:
    previous = healthy_afterwards["production"]
    image = new_image()
    run, thread, box = paused_hotfix(image, prometheus_down)
    try:
        assert run.state.is_paused()
        assert image_of(envs["production"]) == image  # the release serves while people decide
    finally:
        resume_flow_run(
            run.id, run_input={"approve": False, "approver": "bob", "reason": "no data"}
        )
    thread.join(timeout=120)
    state = box["state"]
    artifacts = " ".join(flow_run_artifacts(run.id))
    assert "bake-review-production" in artifacts and "inconclusive" in artifacts
    pages = httpx.get(f"{stack.kube_url}/_sink/page", timeout=5).json()
    subjects = " ".join(str(e["body"].get("subject")) for e in pages if isinstance(e["body"], dict))
    assert f"production: bake of {image} inconclusive, needs a decision" in subjects
    assert state.is_failed()
    with pytest.raises(VerificationFailed) as info:
        state.result()
    message = str(info.value)
    assert "rejected by bob: no data" in message and "rolled back automatically" in message
    assert image_of(envs["production"]) == previous and served(stack)["image"] == previous
    row = oplog_row(stack, run.id)
    assert row["status"] == "failed"
    assert row["details"]["bake_review"]["approver"] == "bob"
    assert row["details"]["bake_review"]["kept"] is False


def test_inconclusive_bake_pauses_and_approve_keeps_the_release(
    stack: StackInfo,
    envs: dict[str, KubeEnvironment],
    no_prometheus: str,
) -> None:
    image = new_image()
    run, thread, box = paused_hotfix(image, no_prometheus)
    resume_flow_run(
        run.id, run_input={"approve": True, "approver": "alice", "reason": "checked by hand"}
    )
    thread.join(timeout=120)
    state = box["state"]
    assert state.is_completed(), state
    assert state.result()["kept_by"] == "alice"
    assert image_of(envs["production"]) == image and served(stack)["image"] == image
    row = oplog_row(stack, run.id)
    assert row["status"] == "succeeded"
    review = row["details"]["bake_review"]
    assert (review["approver"], review["reason"], review["kept"]) == (
        "alice",
        "checked by hand",
        True,
    )
    assert "accepted by alice: checked by hand" in str(row["issues"])
    # The probe still ran: its figures are what the person saw beside "no data".
    assert row["details"]["bake_probe"]["requests"] > 0
