"""Pods: what a kubelet would report for a container image at a given moment.

A pod's status is a pure function of its spec, when it was created, when its containers can
start and the current time, so the same inputs always give the same answer:

* ordinary images: ``ContainerCreating`` until ``start_at``, then Running and Ready;
* a tag containing ``crashloop``: after ``start_at`` the container keeps failing
  (``waiting.reason=CrashLoopBackOff``, ``restartCount`` climbing every
  ``crashloop_restart_seconds``) and is never Ready;
* a tag containing ``badpull`` or the registry ``nonexistent.invalid``: ``ErrImagePull`` for
  ``image_pull_backoff_seconds`` after ``start_at``, then ``ImagePullBackOff``; the pod stays
  Pending.

One pod can also be taken down on its own (``POST /_sim/pods``, ``Simulator.take_down``): from
``down_at`` its container keeps failing as a crash loop would, with the termination reason
given (``OOMKilled`` exits 137, anything else 1), and is never Ready again. The pod that the
ReplicaSet creates in its place (after a delete) starts clean.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from devstack.kubesim.clock import rfc3339
from devstack.kubesim.workloads import owner_reference

Behavior = Literal["ok", "crashloop", "badpull"]
NODE_NAME = "kubesim-node"
HOST_IP = "10.0.0.10"


@dataclass(frozen=True)
class PodRuntime:
    """What the simulated kubelet decided for one pod when it was created."""

    created: float
    start_at: float
    crashloop_restart_seconds: float
    image_pull_backoff_seconds: float
    pod_ip: str
    #: When this one pod went down on its own (``/_sim/pods``), and the termination reason.
    down_at: float | None = None
    down_reason: str = "Error"

    def is_down(self, now: float) -> bool:
        """Whether the pod was taken down by ``now``."""
        return self.down_at is not None and now >= self.down_at


DOWN_REASONS = ("Error", "OOMKilled")


def exit_code(reason: str) -> int:
    """The exit code a termination ``reason`` comes with (137: killed, as by the OOM killer)."""
    return 137 if reason == "OOMKilled" else 1


def split_image(image: str) -> tuple[str, str, str]:
    """Split an image reference into ``(registry, repository, tag)`` (``tag`` may be empty)."""
    ref = image.split("@", 1)[0]
    registry = ""
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, ref = first, rest
    repository, _, tag = ref.partition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    return registry, repository, tag


def image_behavior(image: str) -> Behavior:
    """How the simulated kubelet treats an image (see the module docstring)."""
    registry, _, tag = split_image(image)
    if "badpull" in tag or registry.split(":")[0] == "nonexistent.invalid":
        return "badpull"
    if "crashloop" in tag:
        return "crashloop"
    return "ok"


def ready_at(pod_spec: dict[str, Any], timing: PodRuntime) -> float | None:
    """When the pod becomes Ready, or ``None`` if it never will."""
    containers = pod_spec.get("containers") or []
    if any(image_behavior(str(c.get("image", ""))) != "ok" for c in containers):
        return None
    return timing.start_at


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def container_status(container: dict[str, Any], timing: PodRuntime, now: float) -> dict[str, Any]:
    """The ``containerStatuses`` entry for one container at ``now``."""
    image = str(container.get("image", ""))
    name = str(container.get("name", ""))
    status: dict[str, Any] = {
        "name": name,
        "image": image,
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "lastState": {},
    }
    if now < timing.start_at:
        status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        return status
    behavior = image_behavior(image)
    if behavior == "badpull":
        in_backoff = now - timing.start_at >= timing.image_pull_backoff_seconds
        status["state"] = {
            "waiting": {
                "reason": "ImagePullBackOff" if in_backoff else "ErrImagePull",
                "message": (
                    f'Back-off pulling image "{image}"'
                    if in_backoff
                    else f'failed to pull and unpack image "{image}": not found'
                ),
            }
        }
        return status
    repository = split_image(image)[1]
    status["imageID"] = f"{repository}@sha256:{_digest(image)}"
    container_id = f"containerd://{_digest(f'{name}/{timing.created}')}"
    crashing_since = timing.start_at if behavior == "crashloop" else None
    reason, code = "Error", 1
    if timing.down_at is not None and timing.is_down(now) and crashing_since is None:
        crashing_since = max(timing.down_at, timing.start_at)
        reason, code = timing.down_reason, exit_code(timing.down_reason)
    if crashing_since is not None:
        period = max(timing.crashloop_restart_seconds, 1e-3)
        restarts = 1 + int((now - crashing_since) // period)
        last_start = crashing_since + (restarts - 1) * period
        status["restartCount"] = restarts
        status["containerID"] = container_id
        status["state"] = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off restarting failed container={name}",
            }
        }
        status["lastState"] = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": rfc3339(last_start),
                "finishedAt": rfc3339(last_start),
                "containerID": container_id,
            }
        }
        return status
    status.update(
        ready=True,
        started=True,
        containerID=container_id,
        state={"running": {"startedAt": rfc3339(timing.start_at)}},
    )
    return status


def _condition(kind: str, ok: bool, since: float, reason: str | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": rfc3339(since),
    }
    if not ok and reason:
        condition["reason"] = reason
    return condition


def pod_status(pod: dict[str, Any], timing: PodRuntime, now: float) -> dict[str, Any]:
    """The full ``status`` of a pod at ``now``."""
    spec = pod.get("spec") or {}
    statuses = [container_status(c, timing, now) for c in spec.get("containers") or []]
    ready = bool(statuses) and all(s["ready"] for s in statuses)
    started = bool(statuses) and all(s["state"].get("running") or s["lastState"] for s in statuses)
    ready_since = timing.start_at if ready else timing.created
    not_ready = "ContainersNotReady"
    status: dict[str, Any] = {
        "phase": "Running" if started else "Pending",
        "conditions": [
            _condition("PodReadyToStartContainers", now >= timing.start_at, timing.start_at),
            _condition("Initialized", True, timing.created),
            _condition("Ready", ready, ready_since, not_ready),
            _condition("ContainersReady", ready, ready_since, not_ready),
            _condition("PodScheduled", True, timing.created),
        ],
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "startTime": rfc3339(timing.created),
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    }
    if now >= timing.start_at:
        status["podIP"] = timing.pod_ip
        status["podIPs"] = [{"ip": timing.pod_ip}]
    return status


def build_pod(replicaset: dict[str, Any], name: str) -> dict[str, Any]:
    """A pod for ``replicaset`` (without uid/timestamps/status, which the store fills)."""
    template = copy.deepcopy(replicaset["spec"]["template"])
    template_meta = template.get("metadata") or {}
    annotations = dict(template_meta.get("annotations") or {})
    spec = template.get("spec") or {}
    spec["nodeName"] = NODE_NAME
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "generateName": f"{replicaset['metadata']['name']}-",
            "namespace": replicaset["metadata"]["namespace"],
            "labels": dict(template_meta.get("labels") or {}),
            "ownerReferences": [owner_reference(replicaset)],
        },
        "spec": spec,
    }
    if annotations:
        pod["metadata"]["annotations"] = annotations
    return pod


class NoPreviousContainer(ValueError):
    """``previous=true`` for a container that never terminated (the apiserver answers 400)."""


def container_log(
    pod: dict[str, Any], container: str | None, previous: bool, tail_lines: int | None = None
) -> str:
    """What ``kubectl logs [--previous]`` shows for one container, from its status.

    A running container logs its start; a crash-looping one's previous run logs why it
    exited (the same reason and exit code ``lastState.terminated`` reports).

    Raises:
        KeyError: no such container in the pod.
        NoPreviousContainer: ``previous`` for a container that never terminated.
    """
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    names = [s.get("name") for s in statuses]
    name = container or (names[0] if len(names) == 1 else None)
    found = next((s for s in statuses if s.get("name") == name), None)
    if found is None:
        raise KeyError(f"container {container!r} is not valid for pod {pod['metadata']['name']}")
    image = str(found.get("image", ""))
    if previous:
        last = (found.get("lastState") or {}).get("terminated")
        if not last:
            raise NoPreviousContainer(
                f'previous terminated container "{name}" in pod '
                f'"{pod["metadata"]["name"]}" not found'
            )
        at = last.get("startedAt", "")
        why = (
            "fatal: out of memory (the container exceeded its memory limit)"
            if last.get("reason") == "OOMKilled"
            else f"fatal: {image} crashed during startup (panic: the release cannot start)"
        )
        lines = [
            f"{at} starting {image}",
            f"{at} loading configuration",
            f"{at} {why}",
            f"{at} exiting with code {last.get('exitCode', 1)}",
        ]
    else:
        running = (found.get("state") or {}).get("running")
        if not running:
            return ""
        at = running.get("startedAt", "")
        lines = [f"{at} starting {image}", f"{at} listening on :8080"]
    if tail_lines is not None:
        lines = lines[-tail_lines:] if tail_lines > 0 else []
    return "".join(line + "\n" for line in lines)
