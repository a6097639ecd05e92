"""The simulated kubelet: pod status as a function of image and time."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.kubesim.pods import PodRuntime, image_behavior, pod_status, ready_at, split_image

RUNTIME = PodRuntime(
    created=100.0,
    start_at=101.0,
    crashloop_restart_seconds=2.0,
    image_pull_backoff_seconds=3.0,
    pod_ip="10.244.0.2",
)


def pod(image: str) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "web", "image": image}]}}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("registry.local/web-app:1.0.0", "ok"),
        ("registry.local/web-app:1.1.0-slow", "ok"),
        ("registry.local/web-app:2.0-crashloop", "crashloop"),
        ("registry.local/web-app:badpull", "badpull"),
        ("nonexistent.invalid/web-app:1.0.0", "badpull"),
        ("nonexistent.invalid:5000/web-app", "badpull"),
        ("registry.local:5000/crashloop/app:1.0", "ok"),
    ],
)
def test_image_behavior_is_decided_by_tag_and_registry(image: str, expected: str) -> None:
    assert image_behavior(image) == expected


def test_split_image_handles_ports_and_digests() -> None:
    assert split_image("registry.local:5000/team/app:1.2") == (
        "registry.local:5000",
        "team/app",
        "1.2",
    )
    assert split_image("app") == ("", "app", "")
    assert split_image("app@sha256:abc") == ("", "app", "")


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_ordinary_image_creates_then_runs_ready() -> None:
    before = pod_status(pod("web:1"), RUNTIME, 100.5)
    assert before["phase"] == "Pending"
    assert before["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert conditions(before)["Ready"] == "False"

    after = pod_status(pod("web:1"), RUNTIME, 101.0)
    (container,) = after["containerStatuses"]
    assert after["phase"] == "Running" and after["podIP"] == "10.244.0.2"
    assert container["ready"] and container["restartCount"] == 0 and "running" in container["state"]
    assert conditions(after) | {
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    } == conditions(after)
    assert ready_at(pod("web:1")["spec"], RUNTIME) == 101.0


def test_crashloop_image_restarts_forever_and_is_never_ready() -> None:
    counts = []
    for now in (101.0, 103.0, 105.5):
        status = pod_status(pod("web:1-crashloop"), RUNTIME, now)
        (container,) = status["containerStatuses"]
        assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert container["lastState"]["terminated"]["exitCode"] == 1
        assert not container["ready"] and status["phase"] == "Running"
        counts.append(container["restartCount"])
    assert counts == [1, 2, 3]
    assert ready_at(pod("web:1-crashloop")["spec"], RUNTIME) is None


def test_bad_pull_goes_err_image_pull_then_back_off() -> None:
    reasons = [
        pod_status(pod("web:badpull"), RUNTIME, now)["containerStatuses"][0]["state"]["waiting"][
            "reason"
        ]
        for now in (100.5, 101.0, 103.9, 104.0)
    ]
    assert reasons == ["ContainerCreating", "ErrImagePull", "ErrImagePull", "ImagePullBackOff"]
    assert pod_status(pod("web:badpull"), RUNTIME, 110.0)["phase"] == "Pending"


def test_container_logs_follow_the_container_status() -> None:
    from devstack.kubesim.pods import NoPreviousContainer, container_log

    crashing = {
        "metadata": {"name": "p"},
        "status": pod_status(pod("web:2-crashloop"), RUNTIME, 106.0),
    }
    previous = container_log(crashing, "web", previous=True)
    assert "web:2-crashloop crashed during startup" in previous
    assert previous.splitlines()[-1].endswith("exiting with code 1")
    assert container_log(crashing, None, previous=True, tail_lines=1).count("\n") == 1
    assert container_log(crashing, "web", previous=False) == ""  # waiting: nothing running
    healthy = {"metadata": {"name": "p"}, "status": pod_status(pod("web:1"), RUNTIME, 102.0)}
    assert "listening on :8080" in container_log(healthy, "web", previous=False)
    with pytest.raises(NoPreviousContainer, match="previous terminated container"):
        container_log(healthy, "web", previous=True)
    with pytest.raises(KeyError):
        container_log(healthy, "sidecar", previous=False)


def test_a_pod_taken_down_crash_loops_from_then_with_its_reason() -> None:
    import dataclasses

    down = dataclasses.replace(RUNTIME, down_at=110.0, down_reason="OOMKilled")
    image = "registry.local/web-app:1.0.0"
    before = pod_status(pod(image), down, 109.0)
    assert before["conditions"][2]["status"] == "True"  # Ready until it goes down
    after = pod_status(pod(image), down, 113.5)
    status = after["containerStatuses"][0]
    assert after["phase"] == "Running" and after["conditions"][2]["status"] == "False"
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["restartCount"] == 2  # at 110 and 112, every 2 s
    last = status["lastState"]["terminated"]
    assert (last["reason"], last["exitCode"]) == ("OOMKilled", 137)
    assert not down.is_down(109.9) and down.is_down(110.0) and not RUNTIME.is_down(1e9)
