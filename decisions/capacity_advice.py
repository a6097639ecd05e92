"""The runbook's scaling plan as advice for one resource (RUNBOOK.md "Capacity Planning").

The advice sizes for the horizon (90 days): the value the trend line gives then (or the
current value, when higher) must stay under the threshold after the change.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from decisions.capacity import Resource, Trend

HORIZON_DAYS = 90


def _gib(value: float) -> str:
    """Bytes in GiB, or MiB under 1 GiB."""
    if abs(value) < 2**30:
        return f"{value / 2**20:.0f} MiB"
    return f"{value / 2**30:.1f} GiB"


def projected(current: float, trend: Trend | None, days: float = HORIZON_DAYS) -> float:
    """The value in ``days`` on the trend; never below the current value."""
    if trend is None:
        return current
    return max(current, trend.value_in(days))


def advise(
    resource: Resource,
    current: float,
    capacity: float | None,
    trend: Trend | None,
    days: float | None,
    extra: dict[str, float],
) -> str:
    """What the scaling plan says to do, and how much; "no action" when the trend stays under
    the threshold for the horizon."""
    if days is None:
        return f"no action within {HORIZON_DAYS} days ({resource.rule})"
    when = "now" if days == 0 else f"within {days:.0f} days"
    peak = projected(current, trend)
    name = resource.name
    if name in ("cpu", "request_rate"):
        replicas = int(extra.get("replicas", 0))
        limit = resource.limit(capacity) or 0.0
        if replicas <= 0 or limit <= 0:
            return f"add replicas {when} (replica count unknown)"
        # per-replica load scales as 1/replicas: keep the 90-day load under the threshold
        needed = max(replicas + 1, math.ceil(replicas * peak / limit))
        return f"add {needed - replicas} replicas {when} ({replicas} -> {needed}) for 90 days"
    if name == "memory":
        limit_bytes = extra.get("memory_limit_bytes", 0.0)
        if limit_bytes <= 0:
            return f"optimize the code or add memory {when}"
        wanted = limit_bytes * peak / resource.threshold
        return (
            f"optimize the code or raise the memory limit {when} "
            f"({_gib(limit_bytes)} -> {_gib(wanted)}) for 90 days"
        )
    if name == "disk":
        size = extra.get("volume_bytes", 0.0)
        if size <= 0:
            return f"grow the volume or delete old data {when}"
        grow = size * peak / resource.threshold - size
        return f"grow the volume by {_gib(grow)} {when} ({_gib(size)} -> {_gib(size + grow)})"
    if name == "connections":
        ceiling = capacity or 0.0
        # the runbook pages at 150 of 200: keep the same headroom ratio after raising
        ratio = resource.threshold / ceiling if ceiling else 0.75
        wanted = math.ceil(peak / ratio)
        return (
            f"raise the connection pool {when}: max_connections {ceiling:.0f} -> {wanted}, "
            "or put PgBouncer in front"
        )
    if capacity and resource.unit == "bytes":
        wanted = peak / resource.threshold  # relative: the threshold is a share of capacity
        return (
            f"grow the {resource.title.lower()}'s space {when}: {_gib(capacity)} -> {_gib(wanted)}"
        )
    return f"act {when}: {resource.rule}"
