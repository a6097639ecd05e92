"""The object store: every object as a JSON-shaped dict, plus the global resourceVersion.

The store is deliberately dumb (no validation, no HTTP): ``registry`` applies API semantics
on top of it and ``controller`` drives it forward in time.  It is not thread-safe by itself;
the ``Simulator`` serialises access with one lock.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from devstack.kubesim.clock import rfc3339
from devstack.kubesim.pods import PodRuntime

Key = tuple[str, str, str]  # (plural, namespace or "", name)
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def key_of(plural: str, obj: dict[str, Any]) -> Key:
    """The store key for ``obj``."""
    meta = obj["metadata"]
    return (plural, meta.get("namespace") or "", meta["name"])


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


class Store:
    """Objects keyed by ``(plural, namespace, name)``, with simulator-private side tables."""

    def __init__(self, *, now: float, rng_seed: int | None = None) -> None:
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.revision = 0
        self.time = now
        self.rng = random.Random(rng_seed)
        self.pods: dict[str, PodRuntime] = {}  # pod uid -> kubelet decisions
        self.progress: dict[str, float] = {}  # deployment uid -> last progress time
        self._ip_counter = 0

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        return str(self.revision)

    def new_uid(self) -> str:
        """A random (but seedable) UUID4."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def random_suffix(self, length: int = 5) -> str:
        """The 5-character suffix Kubernetes appends to generated names."""
        return "".join(self.rng.choice(_SUFFIX_ALPHABET) for _ in range(length))

    def next_pod_ip(self) -> str:
        """A fresh pod IP from 10.244.0.0/16."""
        self._ip_counter += 1
        return f"10.244.{self._ip_counter // 250}.{self._ip_counter % 250 + 2}"

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live stored object (callers copy before handing it out)."""
        return self.objects.get(plural, {}).get((namespace, name))

    def list(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Live objects of one resource, sorted by namespace then name."""
        found = [
            (key, obj)
            for key, obj in self.objects.get(plural, {}).items()
            if namespace is None or key[0] == namespace
        ]
        found.sort(key=lambda item: item[0])
        return [obj for _, obj in found]

    def stamp_new(self, obj: dict[str, Any], *, generation: bool) -> dict[str, Any]:
        """Fill the server-owned metadata of an object about to be created."""
        meta = obj["metadata"]
        meta["uid"] = self.new_uid()
        meta["creationTimestamp"] = rfc3339(self.time)
        if generation:
            meta["generation"] = 1
        for field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            meta.pop(field, None)
        return obj

    def save(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj``; the resourceVersion moves only if something really changed."""
        _, namespace, name = key_of(plural, obj)
        table = self.objects.setdefault(plural, {})
        old = table.get((namespace, name))
        if old is not None and _without_rv(old) == _without_rv(obj):
            return old
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        table[(namespace, name)] = obj
        return obj

    def remove(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Delete an object and its side-table entries; returns what was removed."""
        obj = self.objects.get(plural, {}).pop((namespace, name), None)
        if obj is not None:
            self.revision += 1
            uid = obj["metadata"].get("uid", "")
            self.pods.pop(uid, None)
            self.progress.pop(uid, None)
        return obj

    def remove_namespace_contents(self, namespace: str) -> None:
        """Delete every object that lives in ``namespace``."""
        for plural, table in self.objects.items():
            for ns, name in [key for key in table if key[0] == namespace]:
                self.remove(plural, ns, name)
