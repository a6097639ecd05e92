"""What the app runs on besides its image: pod faults, the DB pool, its volume, its CPU.

Faults are injected through ``/_sim/faults`` into the pods serving *now*: a pod started
later (a rollout restart, a scale-up, a rollback) runs clean, so a restart really fixes a
fault while a bad image (its tag) needs a rollback. Kinds (``POST /_sim/faults``, body
``{"fault": KIND}``, optionally ``"pods": [names]``, for ``errors`` ``"error_rate"``, for
``leak`` ``"leak_mb_per_s"``):

=================  ==========================================================================
``down``           ``/`` answers 500 and ``/health`` 503 (the health probe fails: service down)
``errors``         a share of ``/`` answers 500 (``error_rate``, 0.3 by default)
``slow``           ~2.5 s per ``/`` request (p95 > 2 s)
``busy``           1500 requests queued and 95% of the CPU limit used (traffic spike)
``pool-exhausted`` every connection of the pod's DB pool taken; half the requests time out (500)
``leak``           the pod's memory grows by ``leak_mb_per_s`` (1 MiB/s by default) from the
                   moment of the injection until its limit (``sampleapp_memory_bytes``)
=================  ==========================================================================

``DELETE /_sim/faults`` clears them all. A fault stays with the pods it was put on, so
``busy`` is a stuck pod rather than load: more pods do not help it. A traffic spike is the
environment's traffic level (``POST /_sim/traffic`` ``{"level": L}``, ``DELETE`` back to 0):
``L`` pods' worth of CPU demand, spread evenly over the Ready pods (:func:`traffic_load`), so
scaling out lowers every pod's CPU and its backlog, as it would in production.

The volume is a directory with a quota the app
enforces (a loop mount would need root and outlive a crashed stack): ``PUT /upload/NAME``
refuses with 507 past the quota, ``POST /_sim/volume`` ``{"bytes": N}`` (or ``{"ratio": R}``)
adds a sparse file of that size under ``logs/`` (for the disk-full runbook to find; ``"dir":
"uploads"`` puts it among the uploads, ``"age_s": S`` dates it S seconds back), and
``DELETE /_sim/volume`` empties the volume. Used space is the sum of file sizes.
``GET /_sim/volume`` lists it (read-only): size, used bytes, bytes and files per top-level
directory, and every file under ``logs/`` with its size and age, as ``du`` and ``ls -l``
would show them. ``POST /_sim/volume/logs/delete`` ``{"names": [...]}`` removes those files
of ``logs/`` and nothing else (a plain file directly in ``logs/``; any other name is refused
with 400 before anything is removed): the runbook decides which, the app keeps it inside
the volume.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.sampleapp.behaviour import (
    BUSY_CPU,
    BUSY_QUEUE,
    POOL_EXHAUSTED_ERROR_RATE,
    SLOW_LATENCY_S,
    Behaviour,
)
from devstack.sampleapp.pods import Pod

POOL_SIZE = 10
"""DB connections in each pod's pool (a request holds one while it is served)."""

FAULT_KINDS = ("down", "errors", "slow", "busy", "pool-exhausted", "leak")
DEFAULT_FAULT_ERROR_RATE = 0.3

MIB = 1024 * 1024
MEMORY_LIMIT_BYTES = 256 * MIB
"""Each pod's memory limit (what ``sampleapp_memory_limit_bytes`` reports)."""
BASE_MEMORY_BYTES = 64 * MIB
"""What a pod uses once started (a quarter of its limit): a restarted pod is back here."""
DEFAULT_LEAK_MB_PER_S = 1.0


def pod_memory(leak_bytes_per_s: float, leaking_for_s: float) -> int:
    """The memory of a pod that has leaked ``leak_bytes_per_s`` for ``leaking_for_s``
    seconds: its base plus the leak, never past its limit."""
    leaked = max(0.0, leak_bytes_per_s) * max(0.0, leaking_for_s)
    return int(min(MEMORY_LIMIT_BYTES, BASE_MEMORY_BYTES + leaked))


class FaultError(ValueError):
    """A ``/_sim/faults`` request the app cannot apply (unknown kind, bad value)."""


def fault_behaviour(
    kind: str, error_rate: float | None = None, leak_mb_per_s: float | None = None
) -> Behaviour:
    """The behaviour a fault of ``kind`` adds to a pod."""
    if kind == "down":
        return Behaviour(error_rate=1.0, healthy=False)
    if kind == "errors":
        rate = DEFAULT_FAULT_ERROR_RATE if error_rate is None else float(error_rate)
        if not 0 <= rate <= 1:
            raise FaultError(f"error_rate must be within 0..1, got {rate}")
        return Behaviour(error_rate=rate)
    if kind == "slow":
        return Behaviour(latency_s=SLOW_LATENCY_S)
    if kind == "busy":
        return Behaviour(queue=BUSY_QUEUE, cpu=BUSY_CPU)
    if kind == "pool-exhausted":
        return Behaviour(pool_exhausted=True, error_rate=POOL_EXHAUSTED_ERROR_RATE)
    if kind == "leak":
        rate = DEFAULT_LEAK_MB_PER_S if leak_mb_per_s is None else float(leak_mb_per_s)
        if not 0 < rate <= 1024:
            raise FaultError(f"leak_mb_per_s must be within (0, 1024], got {rate}")
        return Behaviour(leak_bytes_per_s=rate * MIB)
    raise FaultError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")


class PodFaults:
    """Faults by pod name; a pod that is gone takes its fault with it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_pod: dict[str, tuple[str, Behaviour]] = {}
        self._since: dict[str, float] = {}
        self._clock = clock

    def inject(self, pods: Iterable[str], kind: str, behaviour: Behaviour) -> list[str]:
        names = sorted(set(pods))
        now = self._clock()
        for name in names:
            self._by_pod[name] = (kind, behaviour)
            self._since[name] = now
        return names

    def memory(self, pod: Pod, behaviour: Behaviour) -> int:
        """The pod's memory now: its base, plus what it leaked since its fault was injected."""
        since = self._since.get(pod.name)
        elapsed = 0.0 if since is None else self._clock() - since
        return pod_memory(behaviour.leak_bytes_per_s, elapsed)

    def clear(self) -> int:
        count = len(self._by_pod)
        self._by_pod.clear()
        self._since.clear()
        return count

    def of(self, pod: Pod) -> Behaviour | None:
        found = self._by_pod.get(pod.name)
        return found[1] if found else None

    def keep_only(self, pods: Iterable[Pod]) -> None:
        """Forget the faults of pods that no longer exist (restarted pods come back clean)."""
        alive = {pod.name for pod in pods}
        for name in [n for n in self._by_pod if n not in alive]:
            del self._by_pod[name]
            self._since.pop(name, None)

    def describe(self) -> dict[str, str]:
        return {name: kind for name, (kind, _) in sorted(self._by_pod.items())}


VOLUME_DIRS = ("logs", "uploads")


SATURATION = 0.8
"""CPU share of a pod above which its requests start to queue (the CPU alert's 80%)."""

QUEUE_PER_OVERLOAD = 10_000
"""Queued requests per unit of CPU demand above :data:`SATURATION` (a pod asked for 95% of
its CPU queues 1500, as the ``busy`` fault does; the queue alert at 1000 fires from 90%)."""

MAX_TRAFFIC_LEVEL = 100.0


def check_level(level: object) -> float:
    """A traffic level as the app takes it: a number in 0..:data:`MAX_TRAFFIC_LEVEL`."""
    if isinstance(level, bool) or not isinstance(level, int | float):
        raise FaultError(f"level must be a number of pods' worth of CPU, got {level!r}")
    if not 0 <= level <= MAX_TRAFFIC_LEVEL:
        raise FaultError(f"level must be within 0..{MAX_TRAFFIC_LEVEL:g}, got {level}")
    return float(level)


def traffic_load(level: float, ready_pods: int) -> tuple[float, int]:
    """Each Ready pod's CPU share and request backlog when ``level`` pods' worth of CPU
    demand is spread over ``ready_pods`` (0 pods: nothing to measure)."""
    if ready_pods <= 0 or level <= 0:
        return 0.0, 0
    demand = level / ready_pods
    return min(1.0, demand), round(QUEUE_PER_OVERLOAD * max(0.0, demand - SATURATION))


class VolumeFull(OSError):
    """A write would take the volume past its quota."""


@dataclass
class Volume:
    """A directory with a quota (the app's disk): ``logs/`` and ``uploads/`` live in it."""

    root: Path
    size_bytes: int

    def __post_init__(self) -> None:
        if self.size_bytes <= 0:
            raise ValueError("a volume needs a positive size")
        for sub in VOLUME_DIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def used_bytes(self) -> int:
        total = 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    continue  # removed while we walked (a cleanup running)
        return total

    def _room_for(self, nbytes: int) -> None:
        used = self.used_bytes()
        if used + nbytes > self.size_bytes:
            raise VolumeFull(
                f"volume {self.root} has {self.size_bytes - used} of {self.size_bytes} bytes "
                f"free; {nbytes} asked"
            )

    def write_upload(self, name: str, data: bytes) -> Path:
        """Store an upload (refused with :class:`VolumeFull` past the quota)."""
        safe = Path(name).name
        if not safe or safe in (".", ".."):
            raise ValueError(f"bad upload name {name!r}")
        self._room_for(len(data))
        path = self.root / "uploads" / safe
        path.write_bytes(data)
        return path

    def fill(self, nbytes: int, folder: str = "logs", age_s: float = 0.0) -> Path:
        """Add a (sparse) file of ``nbytes`` under ``folder`` (``logs`` or ``uploads``),
        last modified ``age_s`` ago: disk use without writing the bytes."""
        if nbytes <= 0:
            raise ValueError("fill needs a positive number of bytes")
        if folder not in VOLUME_DIRS:
            raise ValueError(f"fill goes into one of {', '.join(VOLUME_DIRS)}, not {folder!r}")
        if age_s < 0:
            raise ValueError(f"age_s must be >= 0, got {age_s}")
        self._room_for(nbytes)
        suffix = "log" if folder == "logs" else "bin"
        path = self.root / folder / f"app-{time.time_ns()}.{suffix}"
        with path.open("wb") as handle:
            handle.truncate(nbytes)
        if age_s:
            then = time.time() - age_s
            os.utime(path, (then, then))
        return path

    def listing(self, now: float | None = None) -> dict[str, Any]:
        """What is in the volume (read-only): bytes and files per top-level directory (files
        directly at the root count under ``.``), and each file of ``logs/`` with its size
        and age in seconds, newest first."""
        now = time.time() if now is None else now
        dirs: dict[str, dict[str, int]] = {}
        for folder, _, files in os.walk(self.root):
            rel = Path(folder).relative_to(self.root)
            top = rel.parts[0] if rel.parts else "."
            entry = dirs.setdefault(top, {"bytes": 0, "files": 0})
            for name in files:
                try:
                    entry["bytes"] += os.lstat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    continue
                entry["files"] += 1
        logs: list[dict[str, Any]] = []
        for path in (self.root / "logs").iterdir():
            try:
                stat = path.lstat()
            except FileNotFoundError:
                continue
            if path.is_file() and not path.is_symlink():
                age = max(0.0, now - stat.st_mtime)
                logs.append({"name": path.name, "bytes": stat.st_size, "age_s": round(age, 1)})
        logs.sort(key=lambda f: f["age_s"])
        return {
            "path": str(self.root),
            "size_bytes": self.size_bytes,
            "used_bytes": self.used_bytes(),
            "dirs": dict(sorted(dirs.items())),
            "logs": logs,
        }

    def delete_logs(self, names: Iterable[str]) -> list[str]:
        """Remove these files of ``logs/``; any name that is not a plain file directly in
        ``logs/`` (a path, a directory, a symlink) refuses them all before anything goes."""
        logs = self.root / "logs"
        chosen: list[Path] = []
        for name in names:
            path = logs / name
            if not name or Path(name).name != name or name in (".", ".."):
                raise ValueError(f"{name!r} is not a file name in logs/")
            if path.is_symlink() or not path.is_file():
                raise ValueError(f"logs/{name} is not a plain file of the volume")
            chosen.append(path)
        for path in chosen:
            path.unlink(missing_ok=True)
        return sorted(p.name for p in chosen)

    def empty(self) -> None:
        for sub in VOLUME_DIRS:
            shutil.rmtree(self.root / sub, ignore_errors=True)
            (self.root / sub).mkdir(parents=True, exist_ok=True)


class CpuMeter:
    """The process's CPU use as a share of one core (its limit), between two readings."""

    def __init__(self) -> None:
        self._wall = time.monotonic()
        self._cpu = time.process_time()
        self.ratio = 0.0

    def read(self) -> float:
        wall, cpu = time.monotonic(), time.process_time()
        if wall - self._wall >= 0.5:
            self.ratio = max(0.0, (cpu - self._cpu) / (wall - self._wall))
            self._wall, self._cpu = wall, cpu
        return self.ratio
