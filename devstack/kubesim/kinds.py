"""The resource types the simulator serves, and the checks every write goes through.

``normalize(rtype, obj, old)`` is the apiserver's admission for one write: it validates the
object, applies defaults and returns the object to store (or raises a 422 ``ApiError``).
Deployment rules live in ``workloads``; namespaces and secrets are handled here.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from devstack.kubesim.errors import invalid

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
TLS_SECRET_TYPE = "kubernetes.io/tls"


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: where it lives and what the API lets clients do with it."""

    plural: str
    kind: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True
    writable: bool = True  # create / replace / patch allowed through the API
    generation: bool = False  # metadata.generation tracks spec changes

    @property
    def api_version(self) -> str:
        """``apps/v1`` or ``v1``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps`` or ``pods``, as used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        """``DeploymentList`` etc."""
        return f"{self.kind}List"


NAMESPACES = ResourceType("namespaces", "Namespace", namespaced=False)
SECRETS = ResourceType("secrets", "Secret")
PODS = ResourceType("pods", "Pod", writable=False)
DEPLOYMENTS = ResourceType("deployments", "Deployment", group="apps", generation=True)
REPLICASETS = ResourceType(
    "replicasets", "ReplicaSet", group="apps", writable=False, generation=True
)

RESOURCES: tuple[ResourceType, ...] = (NAMESPACES, SECRETS, PODS, DEPLOYMENTS, REPLICASETS)

Causes = list[tuple[str, str]]


def validate_metadata(rtype: ResourceType, obj: dict[str, Any]) -> Causes:
    """Checks every object's metadata must pass (name, labels, annotations)."""
    causes: Causes = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [("metadata", "Required value")]
    name = meta.get("name")
    pattern = _DNS_LABEL if rtype is NAMESPACES else _DNS_SUBDOMAIN
    limit = 63 if rtype is NAMESPACES else 253
    if not isinstance(name, str) or not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif not pattern.match(name) or len(name) > limit:
        causes.append(
            (
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 name must consist of lower case '
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                "character",
            )
        )
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            causes.append(
                (f"metadata.{field}", "Invalid value: must be a map of strings to strings")
            )
    return causes


def normalize_namespace(obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """Namespaces: the ``kubernetes`` finalizer, phase ``Active`` and the name label."""
    name = obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj["spec"] = {"finalizers": ["kubernetes"]}
    obj["status"] = (old or {}).get("status") or {"phase": "Active"}
    return obj


def normalize_secret(obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """Secrets: ``stringData`` is merged into base64 ``data``; ``type`` defaults to Opaque;
    a ``kubernetes.io/tls`` Secret needs ``tls.crt`` and ``tls.key`` (as the apiserver)."""
    name = obj["metadata"]["name"]
    causes: Causes = []
    data = obj.get("data") or {}
    string_data = obj.pop("stringData", None) or {}
    if not isinstance(data, dict):
        causes.append(("data", "Invalid value: must be a map of keys to base64 strings"))
        data = {}
    if not isinstance(string_data, dict):
        causes.append(("stringData", "Invalid value: must be a map of keys to strings"))
        string_data = {}
    for key, value in string_data.items():
        if not isinstance(value, str):
            causes.append((f"stringData[{key}]", "Invalid value: must be a string"))
        else:
            data[key] = base64.b64encode(value.encode()).decode()
    for key, value in data.items():
        if not isinstance(key, str) or not _SECRET_KEY.match(key):
            causes.append(
                (
                    f"data[{key}]",
                    "Invalid value: a valid config key must consist of alphanumeric "
                    "characters, '-', '_' or '.'",
                )
            )
            continue
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            causes.append((f"data[{key}]", "Invalid value: illegal base64 data"))
    if "type" in obj and not isinstance(obj["type"], str):
        causes.append(("type", "Invalid value: must be a string"))
    obj["type"] = obj.get("type") or "Opaque"
    if obj["type"] == TLS_SECRET_TYPE:
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                causes.append((f"data[{key}]", "Required value"))
    if old is not None and old.get("type") != obj["type"]:
        causes.append(("type", "Invalid value: field is immutable"))
    if old is not None and old.get("immutable") and data != old.get("data"):
        causes.append(("data", "Forbidden: field is immutable when `immutable` is set"))
    if causes:
        raise invalid(SECRETS, name, causes)
    if data:
        obj["data"] = data
    else:
        obj.pop("data", None)
    return obj
