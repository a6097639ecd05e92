"""The restart runbooks' pure decisions: pool use, memory trends, the verdicts."""

from __future__ import annotations

from decisions.triage_restart import (
    MIB,
    Connections,
    PoolUse,
    connections_check,
    decide_memory,
    decide_pool,
    host_memory_check,
    memory_check,
    memory_recovered,
    memory_trends,
    pool_check,
    pool_recovered,
    pool_use,
)

LIMIT = 256 * MIB


def test_connections_by_state_and_application() -> None:
    found = Connections((("idle", "web-app", 8), ("active", "opsflows", 1), ("idle", "", 1)))
    check = connections_check(found)
    assert check.passed is True and found.total == 10
    assert check.evidence == (
        "10 connections: 8 idle (web-app), 1 active (opsflows), 1 idle (no application_name)"
    )
    assert connections_check(None).passed is None


def test_a_full_pool_restarts_and_room_everywhere_does_not() -> None:
    pools = pool_use({"a": 10, "b": 10}, {"a": 10, "b": 3})
    assert pools == (PoolUse("a", 10, 10), PoolUse("b", 10, 3))
    decision = decide_pool("staging", pools)
    assert (
        decision.action == "restart" and "1/2 pods" in decision.reason and "(a)" in decision.reason
    )
    assert pool_check(pools).passed is False and "a 10/10 FULL" in pool_check(pools).evidence
    assert decide_pool("staging", pool_use({"a": 10}, {"a": 2})).action == "none"
    assert decide_pool("staging", None).action == "escalate"
    assert decide_pool("staging", ()).action == "escalate"


def test_pool_recovery_needs_new_pods_with_room() -> None:
    assert pool_recovered([PoolUse("new", 10, 0)], ["old"]).passed is True
    assert pool_recovered([PoolUse("old", 10, 0)], ["old"]).passed is False
    assert pool_recovered([PoolUse("new", 10, 10)], ["old"]).passed is False
    assert pool_recovered([], ["old"]).passed is None


def trend(pod: str, start: float, end: float) -> dict[str, list[tuple[float, float]]]:
    return {pod: [(0.0, start * MIB), (30.0, (start + end) / 2 * MIB), (60.0, end * MIB)]}


def test_a_growing_pod_leaks_and_a_flat_one_does_not() -> None:
    series = trend("a", 64, 200) | trend("b", 64, 66)
    trends = memory_trends(series, {"a": LIMIT, "b": LIMIT})
    a, b = trends
    assert a.per_min == 136 * MIB and a.leaking(0.85) and not b.leaking(0.85)
    decision = decide_memory("staging", trends, 0.85)
    assert decision.action == "restart" and "1/2 pods" in decision.reason
    check = memory_check(trends, 0.85, "last 1 min")
    assert check.passed is False and "a 64 -> 200 MiB" in check.evidence
    assert "+136.0 MiB/min" in check.evidence


def test_a_flat_pod_above_the_threshold_counts_as_leaking() -> None:
    trends = memory_trends(trend("a", 230, 230), {"a": LIMIT})
    assert decide_memory("staging", trends, 0.85).action == "restart"


def test_no_leak_is_no_restart_unless_the_host_is_full_then_escalate() -> None:
    flat = memory_trends(trend("a", 64, 64), {"a": LIMIT})
    assert decide_memory("staging", flat, 0.85).action == "none"
    assert decide_memory("staging", flat, 0.85, host_ratio=0.5).action == "none"
    host = decide_memory("staging", flat, 0.85, host_ratio=0.93)
    assert host.action == "escalate" and "would not free it" in host.reason
    assert decide_memory("staging", None, 0.85).action == "escalate"
    assert memory_trends({"a": []}, {"a": LIMIT}) == ()
    assert memory_trends(trend("a", 1, 2), {}) == ()
    assert host_memory_check(0.93, 0.85).passed is False
    assert host_memory_check(None, 0.85).passed is None


def test_memory_recovery_needs_new_pods_under_the_threshold() -> None:
    assert memory_recovered({"new": (64 * MIB, LIMIT)}, ["old"], 0.85).passed is True
    assert memory_recovered({"old": (64 * MIB, LIMIT)}, ["old"], 0.85).passed is False
    assert memory_recovered({"new": (250 * MIB, LIMIT)}, ["old"], 0.85).passed is False
    assert memory_recovered({}, ["old"], 0.85).passed is None
