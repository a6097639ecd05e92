"""The one-pod-down and traffic-spike decisions (pure: no services)."""

from __future__ import annotations

from typing import Any

import pytest

from decisions.scale_back import CalmFacts, baseline, decide_scale_back
from decisions.triage import PodFacts
from decisions.triage_pods import (
    LoadFacts,
    OnePodDownFacts,
    balance_check,
    check_max,
    check_mode,
    check_ratio,
    cpu_check,
    decide_one_pod_down,
    decide_traffic_spike,
    find_pod,
    needed_replicas,
    termination_check,
)
from opsflows.errors import ConfigurationError, NotFoundError

IMAGE = "registry.local/web-app:1.0.0"


def pod(name: str, ready: bool = True, image: str = IMAGE, **kw: Any) -> PodFacts:
    return PodFacts(name=name, phase="Running", ready=ready, image=image, **kw)


DOWN = pod(
    "web-c",
    ready=False,
    restarts=4,
    waiting_reason="CrashLoopBackOff",
    last_terminated="OOMKilled (exit 137) at 2026-12-01T08:00:00Z",
    log_tail="fatal: out of memory",
)


def facts(**kw: Any) -> OnePodDownFacts:
    base: dict[str, Any] = {
        "environment": "staging",
        "healthy": True,
        "pods": (pod("web-a"), pod("web-b"), DOWN),
        "replicas": 3,
        "max_replicas": 5,
        "cpu_threshold": 0.8,
        "cpu": {"web-a": 0.4, "web-b": 0.5},
    }
    return OnePodDownFacts(**{**base, **kw})


def test_one_pod_down_with_room_is_restarted() -> None:
    d = decide_one_pod_down(facts())
    assert (d.action, d.pods, d.to_replicas) == ("restart", ("web-c",), None)
    assert "under 80%" in d.reason
    assert decide_one_pod_down(facts(cpu=None)).action == "restart"


def test_overloaded_or_repeatedly_crashing_scales_out_within_max() -> None:
    hot = decide_one_pod_down(facts(cpu={"web-a": 0.95, "web-b": 0.9}))
    assert (hot.action, hot.to_replicas, hot.pods) == ("scale-out", 4, ("web-c",))
    assert "web-a at 95%" in hot.reason
    again = decide_one_pod_down(facts(recent_replacements=1))
    assert (again.action, again.to_replicas) == ("scale-out", 4)
    assert "keeps crashing" in again.reason
    at_max = decide_one_pod_down(facts(max_replicas=3, recent_replacements=2))
    assert (at_max.action, at_max.to_replicas) == ("restart", None)
    assert "max_replicas (3)" in at_max.reason


def test_nothing_to_do_or_not_one_pods_problem() -> None:
    assert decide_one_pod_down(facts(pods=(pod("a"), pod("b")))).action == "none"
    assert decide_one_pod_down(facts(named="web-a")).action == "none"
    assert decide_one_pod_down(facts(named="web-c")).pods == ("web-c",)
    assert decide_one_pod_down(facts(pods=None)).action == "escalate"
    none_ready = decide_one_pod_down(facts(pods=(DOWN,)))
    assert none_ready.action == "escalate" and "service-down" in none_ready.reason
    assert decide_one_pod_down(facts(healthy=False)).action == "escalate"
    other = PodFacts(**{**DOWN.as_dict(), "image": "registry.local/web-app:2.0-crashloop"})
    stuck = decide_one_pod_down(facts(pods=(pod("web-a"), pod("web-b"), other)))
    assert stuck.action == "escalate" and "rollout is stuck" in stuck.reason
    half = (pod("a"), pod("b", ready=False), DOWN, pod("d"))
    assert decide_one_pod_down(facts(pods=half)).action == "escalate"


def test_a_named_pod_must_exist() -> None:
    pods = (pod("web-a"), DOWN)
    assert find_pod("web-c", pods, "staging") is DOWN
    with pytest.raises(NotFoundError, match="'web-zzz' is not a pod of staging.*web-a, web-c"):
        find_pod("web-zzz", pods, "staging")


def test_termination_and_cpu_checks() -> None:
    item = termination_check(DOWN)
    assert item.passed and "OOMKilled (exit 137)" in item.evidence
    assert "out of memory" in item.evidence and item.item == "last termination of web-c"
    assert not termination_check(pod("x", ready=False)).passed
    assert cpu_check("cpu", {"a": 0.5, "b": 0.79}, 0.8).passed
    assert cpu_check("cpu", {"a": 0.5, "b": 0.81}, 0.8).passed is False
    assert cpu_check("cpu", {}, 0.8).passed is None


def load(**kw: Any) -> LoadFacts:
    base: dict[str, Any] = {
        "environment": "staging",
        "replicas": 3,
        "max_replicas": 10,
        "cpu_threshold": 0.8,
        "queue_threshold": 1000,
        "cpu": {"a": 0.9, "b": 0.9, "c": 0.9},
        "queue": 1000.0,
    }
    return LoadFacts(**{**base, **kw})


def test_traffic_spike_scales_to_what_the_cpu_needs_within_max() -> None:
    d = decide_traffic_spike(load())
    assert (d.action, d.to_replicas) == ("scale", 5)  # 2.7 CPU at 60% per pod
    saturated = load(cpu={"a": 1.0, "b": 1.0, "c": 1.0}, queue=6000.0)
    assert needed_replicas(saturated) == 6
    capped = decide_traffic_spike(saturated.__class__(**{**saturated.as_dict(), "max_replicas": 4}))
    assert (capped.action, capped.to_replicas) == ("scale", 4)
    assert "capped at max_replicas 4" in capped.reason and capped.recommendation
    assert decide_traffic_spike(load(cpu={"a": 0.81}, replicas=1)).to_replicas == 2
    assert decide_traffic_spike(load(), wanted=7).to_replicas == 7


def test_traffic_spike_at_max_escalates_and_calm_does_nothing() -> None:
    at_max = decide_traffic_spike(load(max_replicas=3))
    assert at_max.action == "escalate" and at_max.to_replicas is None
    assert "already at max_replicas (3)" in at_max.reason
    assert "raise max_replicas" in at_max.recommendation
    calm = decide_traffic_spike(load(cpu={"a": 0.3, "b": 0.2}, queue=0.0))
    assert calm.action == "none" and "nothing to scale" in calm.reason
    assert decide_traffic_spike(load(cpu={}, queue=None)).action == "escalate"
    assert decide_traffic_spike(load(), wanted=3).action == "none"


def test_balance_check() -> None:
    ok = balance_check({"a": 5.0, "b": 4.0, "c": 6.0}, ["a", "b", "c"], 0.5)
    assert ok.passed and "within ±50%" in ok.evidence
    skew = balance_check({"a": 9.0, "b": 1.0, "c": 5.0}, ["a", "b", "c"], 0.5)
    assert skew.passed is False and "a, b" in skew.evidence
    idle = balance_check({"a": 5.0, "b": 5.0}, ["a", "b", "c"], 0.5)
    assert idle.passed is False and "c 0.00/s" in idle.evidence
    assert balance_check({}, ["a"], 0.5).passed is None


def row(mode: str, base: int, to: int, env: str = "staging") -> dict[str, Any]:
    details = {"mode": mode, "baseline_replicas": base, "to": to, "environment": env}
    return {"details": details}


def test_baseline_is_the_first_unreturned_scale_up() -> None:
    assert baseline([], "staging") is None
    ups = [row("scale-up", 2, 4), row("scale-up", 4, 6)]
    assert baseline(ups, "staging") == 2
    assert baseline([*ups, row("scale-back", 2, 3)], "staging") == 2
    assert baseline([*ups, row("scale-back", 2, 2)], "staging") is None
    assert baseline([*ups, row("scale-back", 2, 2), row("scale-out", 3, 4)], "staging") == 3
    assert baseline([row("scale-up", 2, 4, env="production")], "staging") is None
    # scaled down by hand to 2 after a scale-out from 3, then a spike: back to 2, not 3
    assert baseline([row("scale-out", 3, 4), row("scale-up", 2, 4)], "staging") == 2


def calm(**kw: Any) -> CalmFacts:
    base: dict[str, Any] = {
        "environment": "staging",
        "replicas": 5,
        "baseline": 2,
        "calm_s": 300,
        "cpu_threshold": 0.8,
        "queue_threshold": 1000,
        "max_cpu": 0.3,
        "max_queue": 0.0,
        "total_cpu": 0.5,
    }
    return CalmFacts(**{**base, **kw})


def test_scale_back_only_when_calm_and_never_below_the_baseline() -> None:
    back = decide_scale_back(calm())
    assert (back.action, back.to_replicas) == ("scale", 2)
    partial = decide_scale_back(calm(total_cpu=2.0))
    assert (partial.action, partial.to_replicas) == ("scale", 4)
    assert decide_scale_back(calm(total_cpu=3.0)).action == "none"
    busy = decide_scale_back(calm(max_cpu=0.9))
    assert busy.action == "none" and "still high" in busy.reason
    assert decide_scale_back(calm(max_queue=1500.0)).action == "none"
    assert decide_scale_back(calm(max_cpu=None)).action == "none"
    assert decide_scale_back(calm(baseline=None)).action == "none"
    assert decide_scale_back(calm(replicas=2)).action == "none"


def test_bad_parameters_are_named() -> None:
    assert check_max(None, 10) == 10 and check_max(4, 10) == 4
    for bad in (0, -1, True):
        with pytest.raises(ConfigurationError, match="max_replicas must be"):
            check_max(bad, 10)
    with pytest.raises(ConfigurationError, match="above the environment's policy maximum"):
        check_max(11, 10)
    with pytest.raises(ConfigurationError, match="mode must be one of"):
        check_mode("sideways")
    with pytest.raises(ConfigurationError, match="tolerance"):
        check_ratio("tolerance", 0.0)


def test_recent_replacements_count_the_pods_replaced_in_the_environment() -> None:
    from decisions.triage_pods import recent_replacements

    rows = [
        {"details": {"environment": "staging", "replaced": ["a"]}},
        {"details": {"environment": "staging", "replaced": ["b", "c"]}},
        {"details": {"environment": "production", "replaced": ["d"]}},
        {"details": {"environment": "staging"}},
        {"details": None},
    ]
    assert recent_replacements(rows, "staging") == 3
    assert recent_replacements([], "staging") == 0
