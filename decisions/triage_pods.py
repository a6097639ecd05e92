"""Pure decisions of the one-pod-down and traffic-spike triage runbooks.

One pod down (:func:`decide_one_pod_down`)::

    pods unreadable, or no pod Ready                 -> escalate (service-down's case)
    every pod Ready (or the named pod is)            -> nothing to do
    the service fails /health while pods are Ready   -> escalate (not one pod's fault)
    the down pod runs another image than the Ready   -> escalate (a stuck rollout: a
      ones                                              rollback is a person's call)
    half the pods or more down                       -> escalate (not "one pod")
    the Ready pods are over the CPU threshold, or    -> scale out by the pods down (within
      a pod was replaced here within the repeat         max_replicas) and replace the pod
      window (it keeps crashing)
    otherwise                                        -> restart: delete the pod, its
                                                        ReplicaSet starts a clean one

Traffic spike (:func:`decide_traffic_spike`): no pod over the CPU threshold and no backlog ->
nothing; already at ``max_replicas`` -> escalate with a recommendation; otherwise scale to
enough pods for the measured CPU at the target utilisation (at least one more; twice as many
when a pod is saturated, since its real demand is hidden), capped at ``max_replicas``. The
scale-back check (:mod:`decisions.scale_back`) returns to the baseline recorded when it scaled
up, only after the load stayed under the threshold for the calm window, and never below it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from decisions.records import Record
from decisions.triage import Check, PodFacts
from opsflows.errors import ConfigurationError, NotFoundError

#: A pod at this share of its CPU is saturated: what it would use is hidden.
SATURATED = 0.99
ONE_POD_DOWN = "one-pod-down"
TRAFFIC_SPIKE = "traffic-spike"
SCALE_UP, SCALE_BACK = "scale-up", "scale-back"
MODES = (SCALE_UP, SCALE_BACK)


def check_ratio(name: str, value: float, low: float = 0.0, high: float = 1.0) -> float:
    """A share in (low, high], or a ConfigurationError naming it."""
    if not low < value <= high:
        raise ConfigurationError(f"{name} must be in ({low:g}, {high:g}], got {value}")
    return value


def check_max(max_replicas: int | None, block_max: int) -> int:
    """The replica cap of this run: the block's ``max_replicas``, or a lower one given."""
    if max_replicas is None:
        return block_max
    if isinstance(max_replicas, bool) or not isinstance(max_replicas, int) or max_replicas < 1:
        raise ConfigurationError(f"max_replicas must be a whole number >= 1, got {max_replicas!r}")
    if max_replicas > block_max:
        raise ConfigurationError(
            f"max_replicas {max_replicas} is above the environment's policy maximum of {block_max}",
            hint="raise max_replicas in the KubeEnvironment block if this is intended",
        )
    return max_replicas


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigurationError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def find_pod(name: str, pods: Sequence[PodFacts], environment: str) -> PodFacts:
    """The pod named ``name`` among the Deployment's pods.

    Raises:
        NotFoundError: no such pod (the error names it and the pods there are).
    """
    found = next((p for p in pods if p.name == name), None)
    if found is None:
        names = ", ".join(p.name for p in pods) or "none"
        raise NotFoundError(
            f"pod {name!r} is not a pod of {environment}'s Deployment (its pods: {names})",
            hint="leave pod empty to act on the pod that is not Ready",
        )
    return found


# --- one pod down --------------------------------------------------------------------------


@dataclass(frozen=True)
class OnePodDownFacts(Record):
    """What the one-pod-down checklist found (``None``: could not be checked)."""

    environment: str
    healthy: bool | None
    pods: tuple[PodFacts, ...] | None
    replicas: int
    max_replicas: int
    cpu_threshold: float
    #: The CPU share of each pod as Prometheus last saw it (None: no data).
    cpu: Mapping[str, float] | None = None
    #: The pod the alert or the person named (already checked to exist).
    named: str | None = None
    #: Pods this runbook replaced in the environment within the repeat window.
    recent_replacements: int = 0

    @property
    def down(self) -> tuple[PodFacts, ...]:
        pods = self.pods or ()
        if self.named is not None:
            return tuple(p for p in pods if p.name == self.named and not p.ready)
        return tuple(p for p in pods if not p.ready)

    @property
    def ready(self) -> tuple[PodFacts, ...]:
        return tuple(p for p in self.pods or () if p.ready)

    @property
    def ready_cpu(self) -> dict[str, float]:
        """The CPU of the Ready pods Prometheus has a value for."""
        cpu = self.cpu or {}
        return {p.name: cpu[p.name] for p in self.ready if p.name in cpu}


PodAction = Literal["none", "restart", "scale-out", "escalate"]


@dataclass(frozen=True)
class PodDecision(Record):
    """What one-pod-down does: which pods it replaces, and the replicas after a scale-out."""

    action: PodAction
    reason: str
    pods: tuple[str, ...] = ()
    to_replicas: int | None = None


def decide_one_pod_down(facts: OnePodDownFacts) -> PodDecision:
    """Restart, scale out, escalate or nothing (see the module docstring)."""
    env = facts.environment
    if facts.pods is None:
        return PodDecision("escalate", f"the pods of {env} could not be read: nothing to act on")
    down, ready = facts.down, facts.ready
    if not down:
        if facts.named is not None:
            return PodDecision("none", f"pod {facts.named} is Ready: nothing to do")
        return PodDecision("none", f"every pod of {env} is Ready: nothing to do (recovered)")
    if not ready:
        return PodDecision(
            "escalate", f"no pod of {env} is Ready: the service is down (service-down runbook)"
        )
    if facts.healthy is False:
        return PodDecision(
            "escalate",
            f"{len(ready)} pods are Ready but {env} fails /health: more than one pod is wrong "
            "(service-down runbook)",
        )
    names = tuple(p.name for p in down)
    serving = {p.image for p in ready}
    other = [p for p in down if p.image not in serving]
    if other:
        return PodDecision(
            "escalate",
            f"{other[0].name} runs {other[0].image}, not the image the Ready pods serve "
            f"({', '.join(sorted(serving))}): a rollout is stuck, not one pod",
            names,
        )
    if len(down) * 2 >= len(facts.pods):
        return PodDecision(
            "escalate",
            f"{len(down)} of {len(facts.pods)} pods are down: more than one pod's problem",
            names,
        )
    busy = {n: c for n, c in facts.ready_cpu.items() if c > facts.cpu_threshold}
    why: list[str] = []
    if busy:
        worst = max(busy, key=lambda n: busy[n])
        why.append(
            f"the Ready pods are over the CPU threshold ({worst} at {busy[worst]:.0%}, "
            f"limit {facts.cpu_threshold:.0%})"
        )
    if facts.recent_replacements:
        why.append(
            f"{facts.recent_replacements} pod(s) were replaced here recently: it keeps crashing"
        )
    replace = f"replace {', '.join(names)} (delete: its ReplicaSet starts a clean pod)"
    if why:
        wanted = facts.replicas + len(down)
        to = min(wanted, facts.max_replicas)
        if to > facts.replicas:
            capped = f" (capped at max_replicas {facts.max_replicas})" if to < wanted else ""
            return PodDecision(
                "scale-out",
                f"{'; '.join(why)}: scale out from {facts.replicas} to {to} replicas{capped} "
                f"and {replace}",
                names,
                to,
            )
        return PodDecision(
            "restart",
            f"{'; '.join(why)}, but {env} is at max_replicas ({facts.max_replicas}): {replace}",
            names,
        )
    load = (
        f"the Ready pods' CPU is under {facts.cpu_threshold:.0%}"
        if facts.ready_cpu
        else "the Ready pods' CPU is unknown (no metrics)"
    )
    return PodDecision("restart", f"{load}: {replace}", names)


def recent_replacements(rows: Iterable[Mapping[str, Any]], environment: str) -> int:
    """Pods this runbook replaced in ``environment`` according to op-log rows."""
    count = 0
    for row in rows:
        details = row.get("details") or {}
        if details.get("environment") == environment and details.get("replaced"):
            count += len(details["replaced"])
    return count


def termination_check(pod: PodFacts) -> Check:
    """The checklist item recording why the pod went down (its last termination, its log)."""
    why = pod.last_terminated or pod.waiting_reason or f"never started ({pod.phase})"
    evidence = f"{pod.name}: {why}"
    if pod.restarts:
        evidence += f", {pod.restarts} restarts"
    if pod.log_tail:
        evidence += f", log: {pod.log_tail}"
    return Check(f"last termination of {pod.name}", pod.last_terminated is not None, evidence)


def pods_check(pods: Sequence[PodFacts] | None) -> Check:
    """ "All pods Running and Ready", with the state of those that are not."""
    item = "all pods Running and Ready"
    if pods is None:
        return Check(item, None, "the pods could not be read")
    not_ready = [p for p in pods if not p.ready]
    return Check(
        item,
        bool(pods) and not not_ready,
        f"{len(pods) - len(not_ready)}/{len(pods)} Ready"
        + (": " + "; ".join(p.describe() for p in not_ready) if not_ready else ""),
    )


def cpu_check(item: str, cpu: Mapping[str, float] | None, threshold: float) -> Check:
    """Every pod's CPU share at most ``threshold`` (None: Prometheus had no values)."""
    if not cpu:
        return Check(item, None, "no CPU values in Prometheus")
    shown = ", ".join(f"{name} {value:.0%}" for name, value in sorted(cpu.items()))
    ok = max(cpu.values()) <= threshold
    return Check(item, ok, f"{shown} (limit {threshold:.0%})")


# --- traffic spike -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadFacts(Record):
    """The load of an environment as Prometheus shows it, and its replica policy."""

    environment: str
    replicas: int
    max_replicas: int
    cpu_threshold: float
    queue_threshold: int
    #: CPU share of each Ready pod (empty: no data).
    cpu: Mapping[str, float]
    #: Requests waiting in the environment (None: no data).
    queue: float | None
    target_utilization: float = 0.6

    @property
    def total_cpu(self) -> float:
        return sum(self.cpu.values())

    @property
    def hot(self) -> bool:
        over_cpu = bool(self.cpu) and max(self.cpu.values()) > self.cpu_threshold
        return over_cpu or (self.queue or 0) > self.queue_threshold

    def describe(self) -> str:
        cpu = (
            f"CPU max {max(self.cpu.values()):.0%} over {len(self.cpu)} pods "
            f"(sum {self.total_cpu:.2f})"
            if self.cpu
            else "no CPU values"
        )
        queue = "queue unknown" if self.queue is None else f"queue {self.queue:.0f}"
        return f"{self.replicas} replicas, {cpu}, {queue}"


def needed_replicas(facts: LoadFacts) -> int:
    """Pods needed to carry the measured CPU at the target utilisation (saturated pods hide
    their demand: then at least twice as many)."""
    needed = math.ceil(facts.total_cpu / facts.target_utilization - 1e-9)
    if any(c >= SATURATED for c in facts.cpu.values()) or (
        (facts.queue or 0) > facts.queue_threshold and not facts.cpu
    ):
        needed = max(needed, 2 * facts.replicas)
    return max(needed, 1)


ScaleAction = Literal["none", "scale", "escalate"]


@dataclass(frozen=True)
class ScaleDecision(Record):
    """Scale to ``to_replicas``, escalate, or nothing; why."""

    action: ScaleAction
    reason: str
    to_replicas: int | None = None
    recommendation: str = ""


def decide_traffic_spike(facts: LoadFacts, wanted: int | None = None) -> ScaleDecision:
    """Scale up within ``max_replicas`` (``wanted``: the count a person asked for)."""
    env, now, top = facts.environment, facts.replicas, facts.max_replicas
    if wanted is None and not facts.hot:
        if not facts.cpu and facts.queue is None:
            return ScaleDecision("escalate", f"no load metrics for {env} in Prometheus")
        return ScaleDecision(
            "none",
            f"no pod of {env} over {facts.cpu_threshold:.0%} CPU and no backlog over "
            f"{facts.queue_threshold} ({facts.describe()}): nothing to scale",
        )
    target = wanted if wanted is not None else max(now + 1, needed_replicas(facts))
    if now >= top and target > now:
        return ScaleDecision(
            "escalate",
            f"{env} is already at max_replicas ({top}) under load ({facts.describe()})",
            recommendation=f"{target} replicas would be needed: raise max_replicas in the "
            f"{env} block after checking the cluster has room, or shed load (rate limiting, "
            "a CDN); then run traffic-spike again",
        )
    if wanted is not None and wanted <= now:
        return ScaleDecision("none", f"{env} already runs {now} replicas (asked {wanted})")
    to = min(target, top)
    capped = f", capped at max_replicas {top} ({target} would be needed)" if to < target else ""
    how = (
        "as asked"
        if wanted is not None
        else (f"for CPU {facts.total_cpu:.2f} at {facts.target_utilization:.0%} per pod")
    )
    return ScaleDecision(
        "scale",
        f"{facts.describe()}: scale {env} from {now} to {to} replicas {how}{capped}",
        to,
        recommendation=(f"raise max_replicas above {top} if the load stays" if to < target else ""),
    )


def balance_check(rates: Mapping[str, float], pods: Iterable[str], tolerance: float) -> Check:
    """Load balanced: every Ready pod serves within ``tolerance`` of the mean request rate."""
    item = "load balanced"
    names = sorted(set(pods))
    if not names:
        return Check(item, None, "no Ready pods")
    if not rates or sum(rates.values()) <= 0:
        return Check(item, None, "no request rates in Prometheus")
    per_pod = {n: float(rates.get(n, 0.0)) for n in names}
    mean = sum(per_pod.values()) / len(per_pod)
    off = {n: r for n, r in per_pod.items() if abs(r - mean) > tolerance * mean}
    shown = ", ".join(f"{n} {r:.2f}/s" for n, r in per_pod.items())
    verdict = (
        f"outside ±{tolerance:.0%} of the mean {mean:.2f}/s: {', '.join(sorted(off))}"
        if off
        else f"within ±{tolerance:.0%} of the mean {mean:.2f}/s"
    )
    return Check(item, not off, f"{shown}; {verdict}")
