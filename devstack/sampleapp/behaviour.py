"""How a release behaves, decided by its image tag (pure: no I/O, no randomness).

See the package docstring for the table of tags. ``behaviour_for`` is the only rule the
app applies; the app turns ``error_rate`` and ``latency_s`` into real 500s and real
(asynchronous) delays.
"""

from __future__ import annotations

from dataclasses import dataclass

FAST_LATENCY_S = 0.004
"""Mean service time of a healthy release: a few milliseconds."""

SLOW_LATENCY_S = 2.5
"""Mean service time of a slow release: p95 well above the 2 s gate."""

LATENCY_JITTER = 0.1
"""A request takes the latency times a uniform factor in 1 ± this (slow stays > 2 s)."""

FLAKY_ERROR_RATE = 0.05
PRODBROKEN_ERROR_RATE = 0.30

BUSY_QUEUE = 1500
"""Requests a busy release keeps waiting (the runbook's request-queue alert is at 1000)."""

BUSY_CPU = 0.95
"""Share of its CPU limit a busy pod uses (the CPU alert is at 80%)."""

POOL_EXHAUSTED_ERROR_RATE = 0.5
"""Share of ``/`` requests that time out waiting for a DB connection from an exhausted pool."""
PRODUCTION_ENVS = frozenset({"production", "prod"})


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What a pod running one image does with the traffic it serves.

    Attributes:
        error_rate: Share of ``/`` requests answered with HTTP 500 (0.0 to 1.0).
        latency_s: Mean time spent serving one ``/`` request, in seconds.
        healthy: Whether ``/health`` answers 200 (otherwise 503).
        queue: Requests waiting beyond those in flight (a backlog the pod cannot serve).
        cpu: Share of its CPU limit the pod uses; None means measure the process.
        pool_exhausted: Every connection of the pod's DB pool is taken (and never returned).
        leak_bytes_per_s: Memory the pod gains every second and never frees (a leak).
    """

    error_rate: float = 0.0
    latency_s: float = FAST_LATENCY_S
    healthy: bool = True
    queue: int = 0
    cpu: float | None = None
    pool_exhausted: bool = False
    leak_bytes_per_s: float = 0.0

    def worst(self, other: Behaviour) -> Behaviour:
        """Both misbehaviours at once (a fault on a pod running an already bad image)."""
        cpus = [c for c in (self.cpu, other.cpu) if c is not None]
        return Behaviour(
            error_rate=max(self.error_rate, other.error_rate),
            latency_s=max(self.latency_s, other.latency_s),
            healthy=self.healthy and other.healthy,
            queue=max(self.queue, other.queue),
            cpu=max(cpus) if cpus else None,
            pool_exhausted=self.pool_exhausted or other.pool_exhausted,
            leak_bytes_per_s=max(self.leak_bytes_per_s, other.leak_bytes_per_s),
        )


HEALTHY = Behaviour()


def image_tag(image: str) -> str:
    """The tag of an image reference (``"latest"`` when it has none).

    >>> image_tag("registry.local:5000/web-app:1.2.0-slow")
    '1.2.0-slow'
    """
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def behaviour_for(image: str, env: str) -> Behaviour:
    """Decide how ``image`` behaves when it runs in environment ``env``.

    Markers are matched as substrings of the lower-cased tag, the production-only ones
    first (so ``prodbroken`` is not also read as ``broken``); several markers combine,
    keeping the worst error rate and the slowest latency.
    """
    rest = image_tag(image).lower()
    in_production = env.lower() in PRODUCTION_ENVS
    error_rate, latency_s, healthy = 0.0, FAST_LATENCY_S, True
    busy, pool_exhausted = False, False
    for marker in ("prodbroken", "prodslow", "broken", "slow", "flaky", "busy", "poolexhaust"):
        if marker not in rest:
            continue
        rest = rest.replace(marker, "/")
        if marker == "busy":
            busy = True
        elif marker == "poolexhaust":
            pool_exhausted = True
            error_rate = max(error_rate, POOL_EXHAUSTED_ERROR_RATE)
        elif marker == "broken":
            error_rate, healthy = 1.0, False
        elif marker == "slow" or (marker == "prodslow" and in_production):
            latency_s = max(latency_s, SLOW_LATENCY_S)
        elif marker == "prodbroken" and in_production:
            error_rate = max(error_rate, PRODBROKEN_ERROR_RATE)
        elif marker == "flaky":
            error_rate = max(error_rate, FLAKY_ERROR_RATE)
    return Behaviour(
        error_rate=error_rate,
        latency_s=latency_s,
        healthy=healthy,
        queue=BUSY_QUEUE if busy else 0,
        cpu=BUSY_CPU if busy else None,
        pool_exhausted=pool_exhausted,
    )
