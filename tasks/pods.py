"""What ``kubectl get pods`` and ``kubectl logs --previous`` show, through the official client.

The service-down checklist reads every pod of the Deployment (phase, readiness, restarts, the
waiting reason and the last termination) and, for a crashing container, the tail of its
previous log. A log the API cannot give (no previous container, an API without the log
endpoint) is left empty: it is evidence, never a reason to fail the diagnosis.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from blocks.kube import KubeEnvironment
from decisions.triage import PodFacts
from opsflows import retry
from opsflows.errors import NotFoundError, OpsError, VerificationFailed, scrub
from tasks.kube import core_api, kube_errors
from tasks.rollout import _image_of, _raw, _read, _selector

#: A replaced pod's ReplicaSet must have started its successor within this many seconds.
REPLACE_TIMEOUT_S = 120.0

LOG_LINES = 5


def _terminated(status: dict[str, Any]) -> str | None:
    last = (status.get("lastState") or {}).get("terminated")
    if not last:
        return None
    at = last.get("finishedAt") or last.get("startedAt") or "?"
    return f"{last.get('reason') or 'Terminated'} (exit {last.get('exitCode', '?')}) at {at}"


def pod_facts(env: KubeEnvironment, pod: dict[str, Any], image: str = "") -> PodFacts:
    """One pod's facts from its JSON (``status.containerStatuses`` of the app's container)."""
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    statuses = status.get("containerStatuses") or []
    chosen = next((c for c in statuses if c.get("name") == env.container), None)
    chosen = chosen or (statuses[0] if statuses else {})
    waiting = (chosen.get("state") or {}).get("waiting") or {}
    return PodFacts(
        name=str(pod["metadata"]["name"]),
        phase=str(status.get("phase") or "Unknown"),
        ready=ready,
        image=str(chosen.get("image") or image),
        restarts=int(chosen.get("restartCount") or 0),
        waiting_reason=waiting.get("reason"),
        last_terminated=_terminated(chosen),
    )


def previous_log(env: KubeEnvironment, pod: str, lines: int = LOG_LINES) -> str:
    """The last ``lines`` of the crashed container's previous log ("" when there is none)."""
    try:
        with kube_errors(env, f"read log of {pod}"):
            response: Any = core_api(env).read_namespaced_pod_log(
                pod,
                env.namespace,
                container=env.container,
                previous=True,
                tail_lines=lines,
                _preload_content=False,
            )
            text = response.data.decode(errors="replace")
    except OpsError:
        return ""
    return scrub(" / ".join(line.strip() for line in text.splitlines() if line.strip()))


@task(name="list pods", **retry.NETWORK)
def list_pods(env: KubeEnvironment, with_logs: bool = True) -> tuple[PodFacts, ...]:
    """Every pod of the Deployment (``kubectl get pods -l <selector>``), with the previous
    log tail of each crashed container when ``with_logs``."""
    dep = _read(env)
    image = _image_of(env, dep["spec"]["template"])
    listing = _raw(
        env,
        "list pods",
        core_api(env).list_namespaced_pod,
        env.namespace,
        label_selector=_selector(dep),
    )
    pods = [pod_facts(env, p, image) for p in listing.get("items") or []]
    if with_logs:
        pods = [
            PodFacts(**{**p.as_dict(), "log_tail": previous_log(env, p.name)})
            if p.last_terminated
            else p
            for p in pods
        ]
    return tuple(sorted(pods, key=lambda p: p.name))


@task(name="delete pod", **retry.NETWORK)
def delete_pod(env: KubeEnvironment, name: str) -> str:
    """Delete one pod (``kubectl delete pod``): its ReplicaSet starts a new one in its place.
    A pod already gone counts as deleted (a retried delete whose first answer was lost)."""
    try:
        _raw(env, f"delete pod {name}", core_api(env).delete_namespaced_pod, name, env.namespace)
    except NotFoundError:
        get_run_logger().info("%s: pod %s was already gone", env.environment, name)
        return name
    get_run_logger().info("%s: deleted pod %s", env.environment, name)
    return name


def wait_replaced(
    env: KubeEnvironment, gone: tuple[str, ...], want: int, timeout_s: float = REPLACE_TIMEOUT_S
) -> tuple[PodFacts, ...]:
    """Poll until the pods ``gone`` are gone and ``want`` pods are Ready; the pods then.

    Raises:
        VerificationFailed: not within ``timeout_s`` (the message says what was seen).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        pods = list_pods.fn(env, with_logs=False)
        left = [p.name for p in pods if p.name in gone]
        ready = [p for p in pods if p.ready]
        if not left and len(ready) >= want and len(pods) == len(ready):
            return pods
        if time.monotonic() >= deadline:
            raise VerificationFailed(
                f"{env.environment}: {len(ready)}/{want} pods Ready after {timeout_s:g}s"
                + (f", {', '.join(left)} still there" if left else "")
                + "; "
                + "; ".join(p.describe() for p in pods if not p.ready)
            )
        time.sleep(0.5)
