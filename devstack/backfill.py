"""Synthetic history for the demo stack's Prometheus, so a capacity report right after
``make up`` shows trends, not three minutes of samples.

The series have the real ones' names and ``job``/``env`` labels (so the capacity report and
the Prometheus UI read them without special cases) and ``instance="backfill"`` (so any query
can leave them out: ``{instance!="backfill"}``). They end :data:`HEAD_GAP_S` before now:
Prometheus refuses samples inside its head block's range, and the live series take over from
there (at the join the live values differ: the trends are Theil-Sen, which a few hours of
other values hardly move).

How: :func:`render_openmetrics` writes the samples as OpenMetrics text,
``promtool tsdb create-blocks-from openmetrics`` turns them into TSDB blocks, the blocks move
into the stack's Prometheus data directory and Prometheus is restarted to load them.
A second backfill within a day is skipped (``force`` writes again).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DAY_S = 86400.0
HEAD_GAP_S = 3 * 3600.0
INSTANCE = "backfill"
MARKER = "backfill.json"
GIB = 2**30


@dataclass(frozen=True)
class Profile:
    """The synthetic trend of each resource: its value now (extrapolated: the samples end
    3 hours earlier) and its growth per day; a daily swing for CPU and requests."""

    cpu_now: float = 0.35
    cpu_per_day: float = 0.004  # 23% a month ago: crosses 80% in ~112 days
    memory_now: float = 0.60
    memory_per_day: float = 0.002
    disk_now: float = 0.60
    disk_per_day: float = 0.01  # the example: crosses 80% in 20 days
    volume_bytes: float = 1 * GIB
    connections_now: float = 120
    connections_per_day: float = 1.0  # crosses 150 in 30 days
    max_connections: float = 200
    rps_now: float = 20.0
    rps_per_day: float = 0.2
    db_bytes_now: float = 2 * GIB
    db_bytes_per_day: float = 30 * 2**20
    replicas: int = 3
    memory_limit_bytes: float = 512 * 2**20


def _days(t: float, now: float) -> float:
    return (t - now) / DAY_S


def render_openmetrics(
    profile: Profile, env: str, now: float, days: float, step_s: float = 300.0, seed: int = 1
) -> str:
    """OpenMetrics text of ``days`` of history ending :data:`HEAD_GAP_S` before ``now``."""
    rng = random.Random(seed)
    end = math.floor((now - HEAD_GAP_S) / step_s) * step_s
    times = [end - i * step_s for i in range(int(days * DAY_S / step_s), -1, -1)]
    app = f'job="web-app",env="{env}",instance="{INSTANCE}"'
    pg = f'job="postgres",env="{env}",instance="{INSTANCE}"'
    p = profile

    def daily(t: float) -> float:
        return math.sin(2 * math.pi * ((t % DAY_S) / DAY_S))

    families: list[tuple[str, str, list[tuple[str, str, list[tuple[float, float]]]]]] = []

    def gauge(name: str, labels: str, values: list[tuple[float, float]]) -> None:
        families.append((name, "gauge", [(name, labels, values)]))

    pods = [f"web-app-backfill-{i}" for i in range(p.replicas)]
    cpu = [
        (
            f'{app},pod="{pod}"',
            [
                (
                    t,
                    max(
                        0.0,
                        p.cpu_now
                        + p.cpu_per_day * _days(t, now)
                        + 0.05 * daily(t)
                        + rng.gauss(0, 0.01),
                    ),
                )
                for t in times
            ],
        )
        for pod in pods
    ]
    families.append(
        (
            "sampleapp_cpu_utilization_ratio",
            "gauge",
            [("sampleapp_cpu_utilization_ratio", lab, v) for lab, v in cpu],
        )
    )
    mem = [(t, p.memory_now + p.memory_per_day * _days(t, now)) for t in times]
    families.append(
        (
            "sampleapp_memory_bytes",
            "gauge",
            [
                (
                    "sampleapp_memory_bytes",
                    f'{app},pod="{pod}"',
                    [(t, v * p.memory_limit_bytes) for t, v in mem],
                )
                for pod in pods
            ],
        )
    )
    families.append(
        (
            "sampleapp_memory_limit_bytes",
            "gauge",
            [
                (
                    "sampleapp_memory_limit_bytes",
                    f'{app},pod="{pod}"',
                    [(t, p.memory_limit_bytes) for t in times],
                )
                for pod in pods
            ],
        )
    )
    gauge("sampleapp_ready_pods", f'{app},image="backfill"', [(t, p.replicas) for t in times])
    gauge("sampleapp_volume_size_bytes", app, [(t, p.volume_bytes) for t in times])
    gauge(
        "sampleapp_volume_used_bytes",
        app,
        [(t, p.volume_bytes * (p.disk_now + p.disk_per_day * _days(t, now))) for t in times],
    )
    gauge(
        "pg_stat_database_numbackends",
        f'{pg},datname="app"',
        [
            (t, round(p.connections_now + p.connections_per_day * _days(t, now) + rng.gauss(0, 2)))
            for t in times
        ],
    )
    gauge("pg_settings_max_connections", pg, [(t, p.max_connections) for t in times])
    gauge(
        "pg_database_size_bytes",
        f'{pg},datname="app"',
        [(t, p.db_bytes_now + p.db_bytes_per_day * _days(t, now)) for t in times],
    )
    total, counter = 0.0, list[tuple[float, float]]()
    for t in times:
        rate = max(0.0, p.rps_now + p.rps_per_day * _days(t, now)) * (1 + 0.2 * daily(t))
        total += rate * step_s
        counter.append((t, float(round(total))))
    families.append(
        (
            "http_requests",
            "counter",
            [("http_requests_total", f'{app},path="/",status="200"', counter)],
        )
    )
    lines: list[str] = []
    for family, kind, series in families:
        lines.append(f"# TYPE {family} {kind}")
        for name, labels, values in series:
            lines += [f"{name}{{{labels}}} {v:.6g} {t:.0f}" for t, v in values]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(
    prom_dir: Path,
    env: str,
    days: float,
    profile: Profile | None = None,
    now: float | None = None,
    force: bool = False,
    promtool: str | None = None,
) -> dict[str, object] | None:
    """Write the history as blocks into ``prom_dir/data``; the marker's record, or None when
    a backfill of the last day is there already (and not ``force``). Prometheus must then
    be restarted (or left a minute) to load the blocks."""
    now = time.time() if now is None else now
    marker = prom_dir / MARKER
    if marker.exists() and not force:
        try:
            done = json.loads(marker.read_text())
            if now - float(done["at"]) < DAY_S and float(done["days"]) >= days:
                return None
        except (ValueError, KeyError, TypeError):
            pass
    binary = promtool or shutil.which("promtool")
    if binary is None:
        raise FileNotFoundError(
            "promtool is not installed (Debian's prometheus package): run `make deps`"
        )
    work = prom_dir / "backfill-tmp"
    shutil.rmtree(work, ignore_errors=True)
    (work / "blocks").mkdir(parents=True)
    try:
        source = work / "history.om"
        source.write_text(render_openmetrics(profile or Profile(), env, now, days))
        subprocess.run(
            # 2h blocks by default: 360 of them take promtool minutes; 3-day blocks, seconds
            # (a hidden flag of promtool 2.42)
            [
                binary,
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "--max-block-duration=72h",
                "-q",
                str(source),
                str(work / "blocks"),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        data = prom_dir / "data"
        blocks = sorted(p for p in (work / "blocks").iterdir() if p.is_dir())
        for block in blocks:
            shutil.move(str(block), str(data / block.name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record: dict[str, object] = {"at": now, "days": days, "env": env, "blocks": len(blocks)}
    record["profile"] = asdict(profile or Profile())
    marker.write_text(json.dumps(record))
    return record


def backfill_stack(
    days: float = 30, force: bool = False, env: str = "production", restart: bool = True
) -> str:
    """Backfill the recorded stack's Prometheus; what was done, in a line.

    ``restart``: restart Prometheus so the blocks are queryable at once; without it Prometheus
    finds them itself within about a minute (its periodic block reload), and whatever else
    uses it meanwhile is not interrupted (a shared test stack).
    """
    from devstack import postgres, procs, stack
    from devstack.services import stack_services
    from opsflows.settings import Settings

    settings = Settings()
    info = stack.load(settings)
    if info is None:
        raise procs.StartError("no stack recorded; run `opsflows devstack up` first")
    prom_dir = info.service_root / "prometheus"
    done = backfill(prom_dir, env, days, force=force)
    if done is None:
        return f"history already backfilled in the last day ({prom_dir / MARKER}); --force to redo"
    postgres.chown_tree(prom_dir, settings.os_user)
    what = f"backfilled {days:g} days of {env} history ({done['blocks']} blocks)"
    if not restart:
        return what + "; Prometheus loads them within a minute"
    state = Path(info.state_dir)
    service = stack_services(info, settings, stack.stack_secrets(state))["prometheus"]
    procs.stop(state, "prometheus")
    procs.start(state, service)
    return what + "; Prometheus restarted"
