"""Game-day steps: inject a fault into an environment (what monitoring and the runbooks made
of it, and the results kept: :mod:`tasks.game_day_results`).

Faults go in the way they happen: through the app's ``/_sim`` controls (its pods' behaviour,
its volume), the Kubernetes API (a crash-looping release, a pod that stops being Ready) and
real PostgreSQL sessions (a lock held by an idle transaction with queries waiting behind it).
Each injector returns a :class:`Injected` whose ``clear()`` takes away whatever is left of the
fault once the runbook had its turn (a runbook that fixed it leaves nothing to clear).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from opsflows.errors import ConfigurationError, OpsError, ServiceUnavailable, scrub
from tasks.http import http_errors
from tasks.kube import apps_api, kube_errors
from tasks.pods import delete_pod, list_pods
from tasks.postgres import connect, translate
from tasks.rollout import current_release, scale_deployment, set_image

#: The table the slow-queries fault locks (in the application database; created if missing).
LOCK_TABLE = "opsflows_game_day_lock"
CRASHLOOP_SUFFIX = "-crashloop"


@dataclass
class Injected:
    """A fault in place; ``clear()`` removes what is left of it (never raising twice)."""

    fault: str
    detail: str
    _clear: Callable[[], str] = field(repr=False)
    cleared: str | None = None

    def clear(self) -> str:
        if self.cleared is None:
            try:
                self.cleared = self._clear()
            except Exception as exc:  # noqa: BLE001 - the game day reports it and goes on
                self.cleared = f"could not clear: {scrub(str(exc))}"
        return self.cleared


def _app(env: KubeEnvironment, method: str, path: str, body: Any = None) -> Any:
    url = env.service_url.rstrip("/") + path
    with http_errors(f"game day {method} {path}", url):
        resp = httpx.request(method, url, json=body, timeout=10)
    if resp.status_code >= 400:
        raise ServiceUnavailable(f"the app refused {method} {path}: {resp.status_code} {resp.text}")
    return resp.json() if resp.content else None


def app_fault(env: KubeEnvironment, fault: str, kind: str, **extra: Any) -> Injected:
    """A ``/_sim/faults`` fault in every pod serving now (restarted pods run clean)."""
    found = _app(env, "POST", "/_sim/faults", {"fault": kind, **extra})
    pods = sorted((found or {}).get("faults") or {})

    def clear() -> str:
        _app(env, "DELETE", "/_sim/faults")
        return "app faults cleared"

    return Injected(fault, f"{kind} in {', '.join(pods) or 'the serving pods'}", clear)


#: How old the game day's log files are: past the disk-full runbook's 24 h log policy.
OLD_LOG_AGE_S = 48 * 3600


def volume_filled(env: KubeEnvironment, fault: str, ratio: float) -> Injected:
    """Old log files fill the app's volume to ``ratio`` of its quota: two days old, beside a
    fresh one (the log being written, which the disk-full policy never clears)."""
    _app(env, "POST", "/_sim/volume", {"ratio": ratio - 0.02, "age_s": OLD_LOG_AGE_S})
    _app(env, "POST", "/_sim/volume", {"ratio": ratio})

    def clear() -> str:
        _app(env, "DELETE", "/_sim/volume")
        return "volume emptied"

    return Injected(fault, f"volume filled to {ratio:.0%} with log files", clear)


def crash_loop(env: KubeEnvironment, fault: str) -> Injected:
    """A release whose containers exit at start replaces every pod: the Deployment's
    strategy is set to Recreate (as a release that needs it would) and its image to the
    running one's ``-crashloop`` build, straight through the API (a deploy made outside the
    runbooks). ``clear()`` puts back the strategy, and the image if nobody rolled it back."""
    before = current_release.fn(env)
    dep = _read_deployment(env)
    strategy = dep.spec.strategy.to_dict() if dep.spec.strategy else {"type": "RollingUpdate"}
    _patch_strategy(env, {"type": "Recreate", "rollingUpdate": None})
    bad = before.image + CRASHLOOP_SUFFIX
    set_image.fn(env, bad)

    def clear() -> str:
        done = []
        now = current_release.fn(env)
        if now.image == bad:
            set_image.fn(env, before.image)
            done.append(f"image put back to {before.image}")
        _patch_strategy(env, {k: v for k, v in _camel(strategy).items() if v is not None})
        done.append("strategy put back")
        return ", ".join(done)

    return Injected(fault, f"{bad} deployed with the Recreate strategy", clear)


def _camel(strategy: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": strategy.get("type") or "RollingUpdate"}
    rolling = strategy.get("rolling_update")
    if rolling:
        out["rollingUpdate"] = {
            "maxSurge": rolling.get("max_surge"),
            "maxUnavailable": rolling.get("max_unavailable"),
        }
    return out


def _read_deployment(env: KubeEnvironment) -> Any:
    with kube_errors(env, "read deployment"):
        return apps_api(env).read_namespaced_deployment(env.deployment, env.namespace)


def _patch_strategy(env: KubeEnvironment, strategy: dict[str, Any]) -> None:
    body = {"spec": {"strategy": strategy}}
    with kube_errors(env, "set the rollout strategy"):
        apps_api(env).patch_namespaced_deployment(
            env.deployment,
            env.namespace,
            body,
            _content_type="application/strategic-merge-patch+json",
        )


def _replicas(env: KubeEnvironment) -> int:
    return int(_read_deployment(env).spec.replicas or 0)


def _wait(probe: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"game day: {what} within {timeout_s:g} s")
        time.sleep(0.5)


def _ready_pods(env: KubeEnvironment) -> dict[str, bool]:
    return {p.name: p.ready for p in list_pods.fn(env, with_logs=False)}


def pod_killed(env: KubeEnvironment, fault: str, at_least: int = 3) -> Injected:
    """One Ready pod crash-loops (OOMKilled) from now on while the others serve; the
    Deployment runs ``at_least`` replicas first (with two, one pod down is half the service:
    the one-pod-down runbook rightly escalates that). ``clear()`` deletes the pod if it is
    still there and puts the replica count back."""
    before = _replicas(env)
    if before < at_least:
        scale_deployment.fn(env, at_least)
        _wait(
            lambda: sum(_ready_pods(env).values()) >= at_least,
            120,
            f"{at_least} pods of {env.environment} were not Ready",
        )
    victim = sorted(n for n, ready in _ready_pods(env).items() if ready)[0]
    url = env.api_url.rstrip("/") + "/_sim/pods"
    body = {"namespace": env.namespace, "pod": victim, "reason": "OOMKilled"}
    with http_errors("game day: take a pod down", url):
        resp = httpx.post(url, json=body, timeout=10)
    if resp.status_code >= 400:
        raise ServiceUnavailable(f"the simulator refused to take {victim} down: {resp.text}")

    def clear() -> str:
        done = []
        if victim in _ready_pods(env):
            delete_pod.fn(env, victim)
            done.append(f"{victim} deleted")
        if _replicas(env) != before:
            scale_deployment.fn(env, before)
            done.append(f"back to {before} replicas")
        return ", ".join(done) or "nothing left to clear"

    return Injected(fault, f"{victim} crash-looping (OOMKilled)", clear)


def traffic_spike(env: KubeEnvironment, fault: str, per_pod: float = 0.95) -> Injected:
    """Traffic worth ``per_pod`` of each current pod's CPU (the app's traffic level, spread
    over the Ready pods: more pods lower every pod's share). ``clear()`` takes the traffic
    away and puts the replica count back (the scale-back check would, later)."""
    before = _replicas(env)
    level = round(per_pod * max(before, 1), 2)
    _app(env, "POST", "/_sim/traffic", {"level": level})

    def clear() -> str:
        _app(env, "DELETE", "/_sim/traffic")
        if _replicas(env) != before:
            scale_deployment.fn(env, before)
            return f"traffic level 0, back to {before} replicas"
        return "traffic level 0"

    return Injected(fault, f"traffic level {level:g} on {before} pods", clear)


class _LockHolder:
    """A session idle in transaction holding an exclusive lock, and sessions waiting behind
    it (each a real connection of the application's role)."""

    def __init__(self, target: PostgresTarget, waiters: int) -> None:
        self.target = target
        self.waiters = waiters
        self.holder: psycopg.Connection[Any] | None = None
        self.threads: list[threading.Thread] = []
        self.outcomes: list[str] = []

    def start(self) -> str:
        with connect(self.target) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} (id int)")
        try:
            self.holder = psycopg.connect(
                self.target.conninfo(), autocommit=False, application_name="game-day-blocker"
            )
            self.holder.execute(f"LOCK TABLE {LOCK_TABLE} IN ACCESS EXCLUSIVE MODE")
            pid = self.holder.info.backend_pid
        except psycopg.Error as exc:
            raise translate(exc, self.target, "game day: hold a lock") from exc
        for i in range(self.waiters):
            t = threading.Thread(target=self._wait, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return f"pid {pid} idle in transaction holding {LOCK_TABLE}, {self.waiters} queries waiting"

    def _wait(self, i: int) -> None:
        try:
            with psycopg.connect(
                self.target.conninfo(), application_name=f"game-day-waiter-{i}"
            ) as conn:
                conn.execute(f"SELECT count(*) FROM {LOCK_TABLE}")
            self.outcomes.append("completed")
        except psycopg.Error as exc:
            self.outcomes.append(f"failed: {type(exc).__name__}")

    def clear(self) -> str:
        ended = "the blocker was already gone"
        if self.holder is not None:
            with contextlib.suppress(psycopg.Error):
                if not self.holder.closed:
                    self.holder.rollback()
                    ended = "the blocker rolled back"
            self.holder.close()
        for t in self.threads:
            t.join(timeout=30)
        done = sum(1 for o in self.outcomes if o == "completed")
        return f"{ended}; {done}/{self.waiters} waiting queries completed"


def lock_held(target: PostgresTarget, fault: str, waiters: int = 3) -> Injected:
    """A lock held by a session idle in transaction, with ``waiters`` queries behind it."""
    holder = _LockHolder(target, waiters)
    detail = holder.start()
    return Injected(fault, detail, holder.clear)


def check_injectable(env: KubeEnvironment) -> None:
    """The environment's app answers its ``/_sim`` controls (a real cluster would not: a game
    day needs the devstack's simulator, or fault injection of its own)."""
    try:
        _app(env, "GET", "/_sim/faults")
    except OpsError as exc:
        raise ConfigurationError(
            f"cannot inject faults into {env.environment}: {exc.message}",
            hint="game days drive the devstack's app and simulator (its /_sim controls)",
        ) from exc


def wait(seconds: float) -> None:
    time.sleep(seconds)
