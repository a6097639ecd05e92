"""The scale-back check of the traffic-spike runbook (pure): the baseline an earlier scale-up
recorded in the operation log, and whether the load stayed calm long enough to return to it
(never below it, never below what the CPU now needs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from decisions.records import Record
from decisions.triage import Check
from decisions.triage_pods import MODES, SCALE_BACK, ScaleDecision


def scaled_to(details: Mapping[str, Any]) -> tuple[str, int, int] | None:
    """``(mode, baseline, to)`` of an op-log row that scaled (None: it did not)."""
    mode, base, to = details.get("mode"), details.get("baseline_replicas"), details.get("to")
    if mode not in (*MODES, "scale-out") or not isinstance(base, int) or not isinstance(to, int):
        return None
    return str(mode), base, to


def baseline(rows: Sequence[Mapping[str, Any]], environment: str) -> int | None:
    """The replica count before the scale-ups not yet scaled back, from op-log rows (oldest
    first): the first scale-up's baseline, forgotten once a scale-back reached it. A later
    scale-up from fewer replicas (someone scaled down meanwhile) lowers it to that."""
    found: int | None = None
    for row in rows:
        details = row.get("details") or {}
        if details.get("environment") != environment:
            continue
        scaled = scaled_to(details)
        if scaled is None:
            continue
        mode, base, to = scaled
        if mode == SCALE_BACK:
            if found is not None and to <= found:
                found = None
        elif to > base:
            found = base if found is None else min(found, base)
    return found


@dataclass(frozen=True)
class CalmFacts(Record):
    """The load over the calm window, for the scale-back check."""

    environment: str
    replicas: int
    baseline: int | None
    calm_s: float
    cpu_threshold: float
    queue_threshold: int
    #: The highest pod CPU share and queue seen over the calm window (None: no data).
    max_cpu: float | None
    max_queue: float | None
    #: Sum of the pods' CPU now, to size what the pods left must carry.
    total_cpu: float
    target_utilization: float = 0.6


def decide_scale_back(facts: CalmFacts) -> ScaleDecision:
    """Back to the recorded baseline once calm; never below it (module docstring)."""
    env, now, base = facts.environment, facts.replicas, facts.baseline
    if base is None:
        return ScaleDecision("none", f"no scale-up of {env} waiting to be scaled back")
    if now <= base:
        return ScaleDecision("none", f"{env} runs {now} replicas, at or below its baseline {base}")
    window = f"the last {facts.calm_s:g} s"
    if facts.max_cpu is None or facts.max_queue is None:
        return ScaleDecision("none", f"no load metrics for {env} over {window}: not scaling back")
    if facts.max_cpu > facts.cpu_threshold or facts.max_queue > facts.queue_threshold:
        return ScaleDecision(
            "none",
            f"load still high in {window} (CPU max {facts.max_cpu:.0%}, queue max "
            f"{facts.max_queue:.0f}): keeping {now} replicas",
        )
    needed = math.ceil(facts.total_cpu / facts.target_utilization - 1e-9)
    to = max(base, needed)
    if to >= now:
        return ScaleDecision(
            "none",
            f"calm, but the CPU now ({facts.total_cpu:.2f}) needs {needed} pods at "
            f"{facts.target_utilization:.0%}: keeping {now} replicas",
        )
    return ScaleDecision(
        "scale",
        f"load under the thresholds for {window} (CPU max {facts.max_cpu:.0%}, queue max "
        f"{facts.max_queue:.0f}): scale {env} back from {now} to {to} replicas "
        f"(baseline {base})",
        to,
    )


def calm_checks(facts: CalmFacts) -> list[Check]:
    window = f"{facts.calm_s:g} s"
    cpu, queue = facts.max_cpu, facts.max_queue
    return [
        Check(
            "a scale-up to return from",
            facts.baseline is not None and facts.replicas > facts.baseline,
            f"{facts.replicas} replicas, baseline "
            + ("none recorded" if facts.baseline is None else str(facts.baseline)),
        ),
        Check(
            f"CPU under {facts.cpu_threshold:.0%} for {window}",
            None if cpu is None else cpu <= facts.cpu_threshold,
            "no data" if cpu is None else f"max {cpu:.0%}",
        ),
        Check(
            f"queue under {facts.queue_threshold} for {window}",
            None if queue is None else queue <= facts.queue_threshold,
            "no data" if queue is None else f"max {queue:.0f}",
        ),
    ]
