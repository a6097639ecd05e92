"""The sample app's pure rules: image tag -> behaviour, and which pods are Ready."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.sampleapp.behaviour import (
    BUSY_CPU,
    BUSY_QUEUE,
    FAST_LATENCY_S,
    FLAKY_ERROR_RATE,
    LATENCY_JITTER,
    POOL_EXHAUSTED_ERROR_RATE,
    PRODBROKEN_ERROR_RATE,
    SLOW_LATENCY_S,
    Behaviour,
    behaviour_for,
    image_tag,
)
from devstack.sampleapp.pods import Pod, ready_pods
from opsflows.thresholds import THRESHOLDS

HEALTHY = Behaviour(error_rate=0.0, latency_s=FAST_LATENCY_S, healthy=True)
BROKEN = Behaviour(error_rate=1.0, latency_s=FAST_LATENCY_S, healthy=False)
SLOW = Behaviour(error_rate=0.0, latency_s=SLOW_LATENCY_S, healthy=True)
FLAKY = Behaviour(error_rate=FLAKY_ERROR_RATE, latency_s=FAST_LATENCY_S, healthy=True)
PRODBROKEN = Behaviour(error_rate=PRODBROKEN_ERROR_RATE, latency_s=FAST_LATENCY_S, healthy=True)


@pytest.mark.parametrize(
    ("image", "env", "expected"),
    [
        ("registry.local/web-app:1.0.0", "staging", HEALTHY),
        ("registry.local/web-app:1.0.0", "production", HEALTHY),
        ("registry.local/web-app:1.1.0-broken", "staging", BROKEN),
        ("registry.local/web-app:1.1.0-broken", "production", BROKEN),
        ("registry.local/web-app:BROKEN", "staging", BROKEN),
        ("registry.local/web-app:1.2.0-slow", "staging", SLOW),
        ("registry.local/web-app:1.2.0-slow", "production", SLOW),
        ("registry.local/web-app:1.3.0-flaky", "production", FLAKY),
        ("registry.local/web-app:1.4.0-prodbroken", "staging", HEALTHY),
        ("registry.local/web-app:1.4.0-prodbroken", "production", PRODBROKEN),
        ("registry.local/web-app:1.5.0-prodslow", "staging", HEALTHY),
        ("registry.local/web-app:1.5.0-prodslow", "production", SLOW),
        ("registry.local/web-app:1.6.0-busy", "staging", Behaviour(queue=BUSY_QUEUE, cpu=BUSY_CPU)),
        (
            "registry.local/web-app:1.7.0-poolexhaust",
            "production",
            Behaviour(error_rate=POOL_EXHAUSTED_ERROR_RATE, pool_exhausted=True),
        ),
        # the registry host and path are not the tag
        ("broken.registry:5000/slow/web-app:2.0.0", "production", HEALTHY),
        ("registry.local/web-app", "production", HEALTHY),
        ("registry.local/web-app@sha256:abc", "production", HEALTHY),
    ],
)
def test_behaviour_for_tag_and_env(image: str, env: str, expected: Behaviour) -> None:
    assert behaviour_for(image, env) == expected


def test_markers_combine_to_the_worst() -> None:
    both = behaviour_for("registry.local/web-app:3.0-slow-flaky", "staging")
    assert both == Behaviour(error_rate=FLAKY_ERROR_RATE, latency_s=SLOW_LATENCY_S)
    prod = behaviour_for("registry.local/web-app:3.0-prodbroken-prodslow", "production")
    assert prod == Behaviour(error_rate=PRODBROKEN_ERROR_RATE, latency_s=SLOW_LATENCY_S)


def test_a_fault_on_a_bad_image_keeps_the_worst_of_both() -> None:
    slow = behaviour_for("registry.local/web-app:1.2.0-slow", "staging")
    both = slow.worst(Behaviour(error_rate=1.0, healthy=False, cpu=0.9))
    assert both == Behaviour(error_rate=1.0, latency_s=SLOW_LATENCY_S, healthy=False, cpu=0.9)


def test_thresholds_are_on_the_right_side_of_the_gates() -> None:
    # the runbook's gates: error rate 0.5%, p95 2 s
    assert FAST_LATENCY_S * (1 + LATENCY_JITTER) < 0.01
    # even the fastest jittered slow request misses the gate
    assert SLOW_LATENCY_S * (1 - LATENCY_JITTER) > 2.0
    assert FLAKY_ERROR_RATE > 0.005
    assert 0.2 <= PRODBROKEN_ERROR_RATE <= 0.5
    # and the alert rules' thresholds (opsflows/thresholds.py)
    assert BUSY_QUEUE > THRESHOLDS.request_queue
    assert BUSY_CPU > THRESHOLDS.cpu
    assert POOL_EXHAUSTED_ERROR_RATE >= THRESHOLDS.error_rate_page


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("registry.local/web-app:1.0.0", "1.0.0"),
        ("registry.local:5000/web-app:1.0.0-slow", "1.0.0-slow"),
        ("registry.local:5000/web-app", "latest"),
        ("web-app:9@sha256:ff", "9"),
    ],
)
def test_image_tag(image: str, tag: str) -> None:
    assert image_tag(image) == tag


def _pod(
    name: str, image: str, ready: str = "True", *, terminating: bool = False
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {"app": "web-app"}}
    if terminating:
        metadata["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": "web", "image": image}]},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": ready},
            ],
        },
    }


def test_ready_pods_keeps_only_ready_non_terminating_pods_sorted() -> None:
    body = {
        "kind": "PodList",
        "items": [
            _pod("web-b", "registry.local/web-app:1.1.0"),
            _pod("web-a", "registry.local/web-app:1.0.0"),
            _pod("web-c", "registry.local/web-app:1.1.0", ready="False"),
            _pod("web-d", "registry.local/web-app:1.0.0", terminating=True),
            {"metadata": {"name": "web-e"}, "spec": {"containers": []}, "status": {}},
            "garbage",
        ],
    }
    assert ready_pods(body) == (
        Pod("web-a", "registry.local/web-app:1.0.0"),
        Pod("web-b", "registry.local/web-app:1.1.0"),
    )


@pytest.mark.parametrize("body", [{}, {"items": None}, {"items": "x"}, {"kind": "Status"}])
def test_ready_pods_of_odd_bodies_is_empty(body: dict[str, Any]) -> None:
    assert ready_pods(body) == ()


def test_traffic_load_spreads_demand_over_the_ready_pods() -> None:
    from devstack.sampleapp.control import FaultError, check_level, traffic_load

    assert traffic_load(2.85, 3) == (pytest.approx(0.95), 1500)
    cpu, queue = traffic_load(2.85, 5)
    assert cpu == pytest.approx(0.57) and queue == 0
    assert traffic_load(9, 3) == (1.0, 22000)
    assert traffic_load(0, 3) == (0.0, 0) and traffic_load(2, 0) == (0.0, 0)
    assert check_level(3) == 3.0
    for bad in (-0.1, 101, "x", None, False):
        with pytest.raises(FaultError):
            check_level(bad)
