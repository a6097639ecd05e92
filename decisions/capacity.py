"""Capacity planning: trends, forecasts and the runbook's scaling plan (RUNBOOK.md "Capacity
Planning"), as pure functions on samples.

A resource's series is ``[(unix_seconds, value), ...]`` in the resource's own unit (a ratio
for CPU, memory and disk; connections; requests per second; bytes). The trend is Theil-Sen
(the median of pairwise slopes, ``scipy.stats.theilslopes``): a restart, a deploy's spike or
the join between backfilled and live samples moves it little. A forecast is the day the trend
line crosses the resource's scaling threshold; flat or falling, or later than the horizon,
it is "not within 90 days".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from decisions.capacity_advice import advise

DAY_S = 86400.0
HORIZON_DAYS = 90
#: A slope below this share of the threshold per day is flat (0.01% a day: 9% in 90 days
#: would still show; noise of a flat series does not).
FLAT_PER_DAY = 1e-4

#: Theil-Sen takes every pair of points: above this many, every k-th sample is used.
MAX_POINTS = 1500

Samples = Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Resource:
    """What is measured and when the runbook's scaling plan acts on it."""

    name: str  # the key: cpu, memory, disk, connections, request_rate, db_size, backup_store
    title: str
    unit: str  # "ratio", "count", "rps", "bytes"
    threshold: float  # in the series' unit (CPU 0.8, memory 0.85, disk 0.8, connections 150)
    rule: str  # the runbook's line: "CPU > 80%: add replicas"
    #: The threshold is a share of the capacity (request rate, database and store sizes).
    relative: bool = False

    def limit(self, capacity: float | None) -> float | None:
        """The threshold in the series' unit (None: relative and no capacity known)."""
        if not self.relative:
            return self.threshold
        return self.threshold * capacity if capacity else None


RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource("cpu", "CPU", "ratio", 0.80, "CPU > 80%: add replicas"),
        Resource("memory", "Memory", "ratio", 0.85, "memory > 85%: optimize or add memory"),
        Resource("disk", "Disk", "ratio", 0.80, "disk > 80%: grow the volume or delete old data"),
        Resource(
            "connections",
            "Database Connections",
            "count",
            150,
            "connections > 150: raise the connection pool",
        ),
        Resource("request_rate", "Request rate", "rps", 0.80, "requests > 80% of capacity", True),
        Resource("db_size", "Database size", "bytes", 0.80, "size > 80% of its disk", True),
        Resource("backup_store", "Backup store", "bytes", 0.80, "store > 80% of quota", True),
    )
}


@dataclass(frozen=True)
class Trend:
    """A robust line through the samples: the value it gives now and its slope per day."""

    slope_per_day: float
    at_now: float
    points: int

    def value_in(self, days: float) -> float:
        return self.at_now + self.slope_per_day * days


def fit_trend(samples: Samples, now: float) -> Trend | None:
    """Theil-Sen over ``samples`` (None with fewer than 3 finite points or one instant)."""
    pts = [(t, v) for t, v in samples if math.isfinite(t) and math.isfinite(v)]
    if len(pts) < 3 or pts[0][0] == pts[-1][0]:
        return None
    if len(pts) > MAX_POINTS:  # pairwise slopes: n² memory and time; every k-th is as good
        pts = pts[:: math.ceil(len(pts) / MAX_POINTS)]
    days = [(t - now) / DAY_S for t, _ in pts]
    from scipy.stats import theilslopes  # type: ignore[import-untyped]  # slow: on use

    slope, intercept, _, _ = theilslopes([v for _, v in pts], days)
    return Trend(float(slope), float(intercept), len(pts))


def window(samples: Samples, now: float, days: float) -> list[tuple[float, float]]:
    """The samples of the last ``days`` days."""
    since = now - days * DAY_S
    return [(t, v) for t, v in samples if t >= since]


def days_to_cross(trend: Trend, threshold: float, horizon: float = HORIZON_DAYS) -> float | None:
    """Days from now until the trend line reaches ``threshold``: 0 when it is there already;
    None when flat, falling or later than ``horizon``."""
    if trend.at_now >= threshold:
        return 0.0
    if trend.slope_per_day <= abs(threshold) * FLAT_PER_DAY:
        return None
    days = (threshold - trend.at_now) / trend.slope_per_day
    return days if days <= horizon else None


@dataclass(frozen=True)
class Assessment:
    """One row of the capacity report."""

    resource: Resource
    current: float | None
    capacity: float | None
    trend_7d: Trend | None = None
    trend_30d: Trend | None = None
    days: float | None = None  # to the threshold, on the 30-day trend
    advice: str = ""
    missing: str = ""  # why there is no data (the row says so instead of a number)
    graph_url: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def utilization(self) -> float | None:
        if self.current is None or not self.capacity:
            return None
        return self.current / self.capacity

    @property
    def forecast(self) -> str:
        if self.missing:
            return "unknown (no data)"
        if self.trend_30d is None:
            return "unknown (too few samples)"
        if self.resource.limit(self.capacity) is None:
            return "unknown (no capacity given)"
        if self.days is None:
            return f"not within {HORIZON_DAYS} days"
        if self.days == 0:
            return "above the threshold now"
        limit = fmt(self.resource.limit(self.capacity), self.resource.unit)
        return f"crosses {limit} in {self.days:.0f} days"

    def row(self) -> dict[str, str]:
        r = self.resource
        util = self.utilization
        note = self.missing or f"{self.forecast}; {self.advice}"
        return {
            "Resource": r.title,
            "Current": fmt(self.current, r.unit),
            "Capacity": fmt(self.capacity, r.unit),
            "Utilization": "n/a" if util is None else f"{util:.0%} - {level(util)}",
            "note": note,
            "trend 7d": per_day(self.trend_7d, r.unit),
            "trend 30d": per_day(self.trend_30d, r.unit),
            "forecast": self.forecast,
            "graph": self.graph_url,
        }


def level(utilization: float) -> str:
    """The seed's words: Low - plenty of headroom, Medium - watch this, High - act."""
    if utilization >= 0.8:
        return "High - act"
    if utilization >= 0.5:
        return "Medium - watch this"
    return "Low - plenty of headroom"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{value:.0%}"
    if unit == "bytes":
        for size, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.0f} B"
    if unit == "rps":
        return f"{value:.1f} req/s"
    return f"{value:.0f}"


def per_day(trend: Trend | None, unit: str) -> str:
    if trend is None:
        return "n/a"
    if unit == "ratio":
        return f"{trend.slope_per_day * 100:+.2f} pts/day"
    sign = "+" if trend.slope_per_day >= 0 else "-"
    return f"{sign}{fmt(abs(trend.slope_per_day), unit)}/day"


def assess(
    resource: Resource,
    samples: Samples,
    now: float,
    current: float | None,
    capacity: float | None,
    extra: dict[str, float] | None = None,
    graph_url: str = "",
) -> Assessment:
    """Trends over 7 and 30 days, the forecast on the 30-day trend, and the advice."""
    extra = extra or {}
    if current is None and not samples:
        return Assessment(resource, None, capacity, missing="no data", graph_url=graph_url)
    if current is None:
        current = samples[-1][1]
    t7 = fit_trend(window(samples, now, 7), now)
    t30 = fit_trend(window(samples, now, 30), now)
    limit = resource.limit(capacity)
    if limit is None:
        days = None
    else:
        days = days_to_cross(t30, limit) if t30 else None
        days = 0.0 if current >= limit else days
    advice = advise(resource, current, capacity, t30, days, extra)
    return Assessment(resource, current, capacity, t7, t30, days, advice, "", graph_url, extra)
