"""Pure decisions of the runbooks whose quick fix is a restart: connection-pool-exhausted
("Restart web servers") and memory-leak ("Restart service"), RUNBOOK.md "Common Issues &
Quick Fixes".

Both record their evidence before the restart, because a restart destroys it:

* connection-pool-exhausted: the database's connections by state and application name
  (``pg_stat_activity``) and each pod's pool use (the app's metrics);
* memory-leak: each pod's memory trend over the last minutes (a Prometheus range query).

Then::

    the evidence could not be read                  -> escalate (nothing to judge a restart on)
    no pod's pool is full / no pod leaks             -> nothing to do (false alarm, recovered)
    otherwise                                        -> restart (``kubectl rollout restart``)

and the restart counts only when verified: the new pods' pool has room / their memory is
back near its base and under the threshold (:func:`pool_recovered`, :func:`memory_recovered`),
with health and the error rate as the service-down verification checks them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from decisions.records import Record
from decisions.triage import Check

MIB = 1024 * 1024
#: A pod leaks when its memory grew by more than this share of its limit over the window.
LEAK_GROWTH = 0.05


@dataclass(frozen=True)
class Connections(Record):
    """``pg_stat_activity`` grouped: (state, application name, count), most first."""

    groups: tuple[tuple[str, str, int], ...]

    @property
    def total(self) -> int:
        return sum(n for _, _, n in self.groups)

    def describe(self) -> str:
        parts = [f"{n} {state} ({app or 'no application_name'})" for state, app, n in self.groups]
        return f"{self.total} connections: " + (", ".join(parts) or "none")


@dataclass(frozen=True)
class PoolUse(Record):
    """One pod's database pool (the app's ``sampleapp_db_pool_*`` gauges)."""

    pod: str
    size: int
    in_use: int

    @property
    def full(self) -> bool:
        return self.size > 0 and self.in_use >= self.size


def pool_use(size: Mapping[str, float], in_use: Mapping[str, float]) -> tuple[PoolUse, ...]:
    """Pool use by pod from the two gauges' values by pod (pods in both only)."""
    return tuple(
        PoolUse(pod, int(size[pod]), int(in_use[pod])) for pod in sorted(size) if pod in in_use
    )


def connections_check(connections: Connections | None) -> Check:
    item = "connections by state and application"
    if connections is None:
        return Check(item, None, "pg_stat_activity could not be read")
    return Check(item, True, connections.describe())


def pool_check(pools: Sequence[PoolUse] | None, item: str = "connection pools have room") -> Check:
    if pools is None:
        return Check(item, None, "the app's pool metrics could not be read")
    if not pools:
        return Check(item, None, "no pod reports its pool yet")
    full = [p for p in pools if p.full]
    return Check(
        item,
        not full,
        ", ".join(f"{p.pod} {p.in_use}/{p.size}" + (" FULL" if p.full else "") for p in pools),
    )


@dataclass(frozen=True)
class MemoryTrend(Record):
    """One pod's memory over the window: first and last sample, peak, limit."""

    pod: str
    first: float
    last: float
    peak: float
    limit: float
    seconds: float

    @property
    def ratio(self) -> float:
        return self.last / self.limit if self.limit else 0.0

    @property
    def per_min(self) -> float:
        """Growth in bytes per minute over the window."""
        return (self.last - self.first) / self.seconds * 60 if self.seconds > 0 else 0.0

    def leaking(self, threshold: float) -> bool:
        """Above the threshold, or grown by more than :data:`LEAK_GROWTH` of its limit."""
        grew = self.limit > 0 and (self.last - self.first) > LEAK_GROWTH * self.limit
        return self.ratio > threshold or grew

    def describe(self) -> str:
        return (
            f"{self.pod} {self.first / MIB:.0f} -> {self.last / MIB:.0f} MiB "
            f"({self.ratio:.0%} of {self.limit / MIB:.0f} MiB, {self.per_min / MIB:+.1f} MiB/min "
            f"over {self.seconds:.0f} s)"
        )


def memory_trends(
    series: Mapping[str, Sequence[tuple[float, float]]], limits: Mapping[str, float]
) -> tuple[MemoryTrend, ...]:
    """Trends from a range query's samples by pod ((time, bytes), in time order)."""
    out = []
    for pod, samples in sorted(series.items()):
        if not samples or pod not in limits:
            continue
        first, last = samples[0], samples[-1]
        out.append(
            MemoryTrend(
                pod,
                first[1],
                last[1],
                max(v for _, v in samples),
                limits[pod],
                last[0] - first[0],
            )
        )
    return tuple(out)


def memory_check(trends: Sequence[MemoryTrend] | None, threshold: float, window: str) -> Check:
    item = f"memory trend of the pods ({window})"
    if trends is None:
        return Check(item, None, "Prometheus could not be read")
    if not trends:
        return Check(item, None, "no pod's memory in Prometheus")
    leaking = [t for t in trends if t.leaking(threshold)]
    return Check(item, not leaking, "; ".join(t.describe() for t in trends))


Action = Literal["none", "restart", "escalate"]


@dataclass(frozen=True)
class RestartDecision(Record):
    action: Action
    reason: str

    @property
    def changes(self) -> bool:
        return self.action == "restart"


def decide_pool(environment: str, pools: Sequence[PoolUse] | None) -> RestartDecision:
    """Restart the web servers when a pod's pool is full (the seed's quick fix)."""
    if pools is None or not pools:
        return RestartDecision(
            "escalate", f"the pool use of {environment} could not be read: nothing to judge"
        )
    full = [p for p in pools if p.full]
    if not full:
        return RestartDecision(
            "none", f"every pool of {environment} has room: nothing to restart (recovered?)"
        )
    names = ", ".join(p.pod for p in full)
    return RestartDecision(
        "restart",
        f"{len(full)}/{len(pools)} pods of {environment} hold every pool connection ({names}): "
        "restart the web servers",
    )


def host_memory_check(ratio: float | None, threshold: float) -> Check:
    item = f"host memory under {threshold:.0%}"
    if ratio is None:
        return Check(item, None, "no host memory reported for the environment (node_exporter)")
    return Check(item, ratio <= threshold, f"{ratio:.1%} of the machine's memory in use")


def decide_memory(
    environment: str,
    trends: Sequence[MemoryTrend] | None,
    threshold: float,
    host_ratio: float | None = None,
) -> RestartDecision:
    """Restart the service when a pod's memory leaks (grows steadily or is past the
    threshold); a host whose memory is high while no pod leaks is not the service's to
    restart: escalate."""
    if trends is None or not trends:
        return RestartDecision(
            "escalate", f"the memory of {environment}'s pods could not be read: nothing to judge"
        )
    leaking = [t for t in trends if t.leaking(threshold)]
    if not leaking and host_ratio is not None and host_ratio > threshold:
        return RestartDecision(
            "escalate",
            f"the host's memory is {host_ratio:.1%} used but no pod of {environment} leaks: "
            "restarting the service would not free it",
        )
    if not leaking:
        return RestartDecision(
            "none", f"no pod of {environment} grows or is above {threshold:.0%} of its memory"
        )
    return RestartDecision(
        "restart",
        f"{len(leaking)}/{len(trends)} pods of {environment} leak memory "
        f"({'; '.join(t.describe() for t in leaking)}): restart the service",
    )


def pool_recovered(pools: Sequence[PoolUse] | None, old_pods: Sequence[str]) -> Check:
    """After the restart: the pods now serving are new ones and none has a full pool."""
    item = "connection pools back down"
    if not pools:
        return Check(item, None, "no pool use of the new pods in the metrics")
    stale = [p.pod for p in pools if p.pod in old_pods]
    if stale:
        return Check(item, False, f"old pods still serve: {', '.join(stale)}")
    return pool_check(pools, item)


def memory_recovered(
    memory: Mapping[str, tuple[float, float]] | None, old_pods: Sequence[str], threshold: float
) -> Check:
    """After the restart: the pods now serving are new ones, each under the threshold
    (``memory``: pod -> (bytes, limit))."""
    item = "memory back down"
    if not memory:
        return Check(item, None, "no memory of the new pods in the metrics")
    stale = [pod for pod in memory if pod in old_pods]
    if stale:
        return Check(item, False, f"old pods still serve: {', '.join(stale)}")
    high = [pod for pod, (used, limit) in memory.items() if limit and used / limit > threshold]
    return Check(
        item,
        not high,
        ", ".join(
            f"{pod} {used / MIB:.0f} MiB ({used / limit:.0%})"
            for pod, (used, limit) in sorted(memory.items())
            if limit
        ),
    )
