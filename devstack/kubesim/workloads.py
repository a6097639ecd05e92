"""Deployment admission and the objects the deployment controller derives from it.

Defaults follow the apiserver (``replicas`` 1, RollingUpdate 25%/25%, ``revisionHistoryLimit``
10, ``progressDeadlineSeconds`` 600, pod-spec defaults), so a template read back from a
ReplicaSet compares equal to the one the client wrote, which is what ``rollout undo`` relies on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

from devstack.kubesim.errors import invalid
from devstack.kubesim.kinds import DEPLOYMENTS, Causes
from devstack.kubesim.selectors import SelectorError, label_selector_requirements, matches_labels

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_PERCENT = re.compile(r"^\d+%$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or_percent_ok(value: Any) -> bool:
    return (_is_int(value) and value >= 0) or (
        isinstance(value, str) and bool(_PERCENT.match(value))
    )


def default_pod_template(template: dict[str, Any]) -> None:
    """Apply the apiserver's pod-spec defaults in place."""
    spec = template.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in spec.get("containers") or []:
        if not isinstance(container, dict):
            continue
        image = str(container.get("image", ""))
        last = image.rsplit("/", 1)[-1]
        untagged = ":" not in last and "@" not in last
        pull = "Always" if untagged or last.endswith(":latest") else "IfNotPresent"
        container.setdefault("imagePullPolicy", pull)
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def _validate_template(spec: dict[str, Any], causes: Causes) -> None:
    template = spec.get("template")
    if not isinstance(template, dict):
        causes.append(("spec.template", "Required value"))
        return
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        causes.append(("spec.template.metadata.labels", "Invalid value: must be a map of strings"))
        labels = {}
    try:
        requirements = label_selector_requirements(spec.get("selector"))
    except SelectorError as exc:
        causes.append(("spec.selector", f"Invalid value: {exc}"))
        requirements = ()
    if not requirements:
        causes.append(("spec.selector", "Invalid value: empty selector is invalid for deployment"))
    elif not matches_labels(requirements, labels):
        causes.append(
            (
                "spec.template.metadata.labels",
                "Invalid value: `selector` does not match template `labels`",
            )
        )
    pod_spec = template.get("spec")
    containers = pod_spec.get("containers") if isinstance(pod_spec, dict) else None
    if not isinstance(containers, list) or not containers:
        causes.append(("spec.template.spec.containers", "Required value"))
        return
    seen: set[str] = set()
    for i, container in enumerate(containers):
        where = f"spec.template.spec.containers[{i}]"
        if not isinstance(container, dict):
            causes.append((where, "Invalid value: must be an object"))
            continue
        name = container.get("name")
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            causes.append((f"{where}.name", f"Invalid value: {name!r}: must be a DNS label"))
        elif name in seen:
            causes.append((f"{where}.name", f'Duplicate value: "{name}"'))
        else:
            seen.add(name)
        image = container.get("image")
        if not isinstance(image, str) or not image.strip():
            causes.append((f"{where}.image", "Required value"))


def _validate_strategy(spec: dict[str, Any], causes: Causes) -> None:
    strategy = spec.setdefault("strategy", {})
    if not isinstance(strategy, dict):
        causes.append(("spec.strategy", "Invalid value: must be an object"))
        return
    kind = strategy.setdefault("type", "RollingUpdate")
    if kind == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            causes.append(
                (
                    "spec.strategy.rollingUpdate",
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                )
            )
        return
    if kind != "RollingUpdate":
        causes.append(
            (
                "spec.strategy.type",
                f'Unsupported value: "{kind}": supported values: "Recreate", "RollingUpdate"',
            )
        )
        return
    rolling = strategy.get("rollingUpdate")
    if rolling is None:
        rolling = strategy["rollingUpdate"] = {}
    rolling.setdefault("maxSurge", "25%")
    rolling.setdefault("maxUnavailable", "25%")
    for field in ("maxSurge", "maxUnavailable"):
        if not _int_or_percent_ok(rolling[field]):
            causes.append(
                (f"spec.strategy.rollingUpdate.{field}", f"Invalid value: {rolling[field]!r}")
            )
    if rolling["maxSurge"] in (0, "0%") and rolling["maxUnavailable"] in (0, "0%"):
        causes.append(
            (
                "spec.strategy.rollingUpdate.maxUnavailable",
                "Invalid value: may not be 0 when `maxSurge` is 0",
            )
        )


def normalize_deployment(obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a Deployment and apply the apiserver's defaults (raises 422 ``ApiError``)."""
    name = obj["metadata"]["name"]
    causes: Causes = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise invalid(DEPLOYMENTS, name, [("spec", "Required value")])
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    for field in ("replicas", "revisionHistoryLimit", "progressDeadlineSeconds", "minReadySeconds"):
        value = spec.get(field, 0)
        if not _is_int(value) or value < 0:
            causes.append(
                (f"spec.{field}", f"Invalid value: {value!r}: must be greater than or equal to 0")
            )
    deadline, min_ready = spec["progressDeadlineSeconds"], spec.get("minReadySeconds", 0)
    if _is_int(deadline) and _is_int(min_ready) and deadline <= min_ready:
        causes.append(
            ("spec.progressDeadlineSeconds", "Invalid value: must be greater than minReadySeconds")
        )
    if "paused" in spec and not isinstance(spec["paused"], bool):
        causes.append(("spec.paused", "Invalid value: must be a boolean"))
    _validate_template(spec, causes)
    _validate_strategy(spec, causes)
    if old is not None and spec.get("selector") != old["spec"].get("selector"):
        causes.append(("spec.selector", "Invalid value: field is immutable"))
    if causes:
        raise invalid(DEPLOYMENTS, name, causes)
    default_pod_template(spec["template"])
    return obj


def _canonical(value: Any) -> Any:
    """Drop empty values so ``{}``/``[]``/``null`` and an absent field compare equal."""
    if isinstance(value, dict):
        out = {k: _canonical(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def template_key(template: dict[str, Any]) -> str:
    """A canonical JSON form of a pod template, ignoring the ``pod-template-hash`` label."""
    canonical = _canonical(template)
    labels = (canonical.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return json.dumps(_canonical(canonical), sort_keys=True, separators=(",", ":"))


_KEY_CACHE: dict[int, tuple[dict[str, Any], str]] = {}
_KEY_CACHE_SIZE = 4096


def cached_template_key(template: dict[str, Any]) -> str:
    """``template_key`` memoised by object identity.

    Only for templates that are never mutated in place, which holds for stored objects: every
    write replaces them.  The cache keeps a reference, so an id cannot be reused meanwhile.
    """
    hit = _KEY_CACHE.get(id(template))
    if hit is not None and hit[0] is template:
        return hit[1]
    key = template_key(template)
    if len(_KEY_CACHE) >= _KEY_CACHE_SIZE:
        _KEY_CACHE.clear()
    _KEY_CACHE[id(template)] = (template, key)
    return key


def templates_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The controller's ``EqualIgnoreHash``."""
    return template_key(a) == template_key(b)


def pod_template_hash(template: dict[str, Any], collision_count: int = 0) -> str:
    """A stable hash in the alphabet Kubernetes uses (``5d8f7b6c9d``-like)."""
    digest = hashlib.sha256(f"{template_key(template)}#{collision_count}".encode()).digest()
    number = int.from_bytes(digest[:4], "big")
    return "".join(_SAFE_ALPHABET[ord(ch) % len(_SAFE_ALPHABET)] for ch in str(number))


def revision_of(obj: dict[str, Any]) -> int:
    """The ``deployment.kubernetes.io/revision`` annotation as an int (0 when absent)."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, "0")
    try:
        return int(raw)
    except ValueError:
        return 0


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """A controller ``ownerReference`` pointing at ``owner``."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    """Whether ``obj`` has a controller reference to the object with ``owner_uid``."""
    refs = obj["metadata"].get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in refs)


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of ``obj``'s controlling owner, if any."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def build_replicaset(deployment: dict[str, Any], revision: int) -> dict[str, Any]:
    """The ReplicaSet a Deployment's current template gets (without uid/timestamps)."""
    meta = deployment["metadata"]
    spec = deployment["spec"]
    template = copy.deepcopy(spec["template"])
    template_hash = pod_template_hash(template)
    template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = template_hash
    selector = copy.deepcopy(spec["selector"])
    selector.setdefault("matchLabels", {})[HASH_LABEL] = template_hash
    rs_spec: dict[str, Any] = {"replicas": 0, "selector": selector, "template": template}
    if spec.get("minReadySeconds"):
        rs_spec["minReadySeconds"] = spec["minReadySeconds"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{template_hash}",
            "namespace": meta["namespace"],
            "labels": dict(template["metadata"]["labels"]),
            "annotations": {
                REVISION: str(revision),
                DESIRED_REPLICAS: str(spec["replicas"]),
            },
            "ownerReferences": [owner_reference(deployment)],
        },
        "spec": rs_spec,
        "status": {"replicas": 0},
    }
