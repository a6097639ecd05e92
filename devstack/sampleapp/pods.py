"""Which pods serve traffic: the Ready pods of the Deployment, polled from the simulator.

The app asks the Kubernetes API (the devstack simulator) for the Deployment's pods every
poll interval, exactly like a Service's endpoints follow readiness. When the API cannot be
reached the last known pods keep serving, and the outage is logged once (and its end once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, order=True)
class Pod:
    """A Ready pod and the image of its first container."""

    name: str
    image: str


def ready_pods(pod_list: Mapping[str, Any]) -> tuple[Pod, ...]:
    """The Ready, non-terminating pods of a ``PodList`` body, sorted by name.

    A pod counts when its ``Ready`` condition is ``"True"``, it has no
    ``metadata.deletionTimestamp`` and ``spec.containers[0].image`` is set.
    """
    pods: list[Pod] = []
    items = pod_list.get("items")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        metadata = item.get("metadata") or {}
        spec = item.get("spec") or {}
        status = item.get("status") or {}
        if metadata.get("deletionTimestamp"):
            continue
        conditions = status.get("conditions") or []
        if not any(
            isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
            for c in conditions
        ):
            continue
        containers = spec.get("containers") or []
        image = (
            containers[0].get("image")
            if containers and isinstance(containers[0], Mapping)
            else None
        )
        if isinstance(image, str) and image:
            pods.append(Pod(name=str(metadata.get("name", "?")), image=image))
    return tuple(sorted(pods))


def unready_count(pod_list: Mapping[str, Any]) -> int:
    """Pods of a ``PodList`` body that are neither Ready nor terminating (crashing, starting)."""
    items = pod_list.get("items")
    listed = [
        item
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, Mapping) and not (item.get("metadata") or {}).get("deletionTimestamp")
    ]
    return len(listed) - len(ready_pods(pod_list))


class PodWatcher:
    """Keeps ``pods`` up to date by polling ``GET /api/v1/namespaces/{ns}/pods``.

    Use as an async context manager (it owns an ``httpx.AsyncClient``), call ``refresh()``
    once to prime it, then run ``run()`` as a background task.

    Args:
        kube_url: Base URL of the Kubernetes API (the simulator).
        namespace: Namespace of the Deployment.
        selector: Label selector of its pods, e.g. ``app=web-app``.
        poll_interval: Seconds between polls.
        transport: Optional httpx transport (tests pass ``httpx.MockTransport``).
        on_update: Called with the pods after every successful poll.
    """

    def __init__(
        self,
        kube_url: str,
        namespace: str,
        selector: str,
        *,
        poll_interval: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
        on_update: Callable[[tuple[Pod, ...]], None] | None = None,
    ) -> None:
        self.url = f"{kube_url.rstrip('/')}/api/v1/namespaces/{namespace}/pods"
        self.selector = selector
        self.poll_interval = poll_interval
        self.pods: tuple[Pod, ...] = ()
        #: Listed pods that are not Ready (and not terminating): the one-pod-down signal.
        self.unready = 0
        self._transport = transport
        self._on_update = on_update
        self._client: httpx.AsyncClient | None = None
        self._failing = False

    async def __aenter__(self) -> Self:
        timeout = httpx.Timeout(max(1.0, 2 * self.poll_interval))
        self._client = httpx.AsyncClient(transport=self._transport, timeout=timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def refresh(self) -> bool:
        """Poll once; on success replace ``pods`` and return True, else keep them."""
        if self._client is None:
            raise RuntimeError("PodWatcher.refresh() outside `async with PodWatcher(...)`")
        try:
            response = await self._client.get(self.url, params={"labelSelector": self.selector})
            response.raise_for_status()
            body = response.json()
            if not isinstance(body, Mapping):
                raise TypeError(f"expected a PodList object, got {type(body).__name__}")
        except (httpx.HTTPError, ValueError, TypeError) as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "cannot list pods at %s (%s); keeping the last %d known pod(s)",
                    self.url,
                    exc,
                    len(self.pods),
                )
            return False
        if self._failing:
            self._failing = False
            log.info("pod list at %s is reachable again", self.url)
        self.pods = ready_pods(body)
        self.unready = unready_count(body)
        if self._on_update is not None:
            self._on_update(self.pods)
        return True

    async def run(self) -> None:
        """Poll forever (cancel the task to stop)."""
        while True:
            await asyncio.sleep(self.poll_interval)
            await self.refresh()
