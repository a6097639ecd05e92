"""API semantics on top of the store: get, list, create, replace, patch, delete, scale.

This is what the apiserver's REST handlers do, minus HTTP: optimistic concurrency on
``resourceVersion``, server-owned metadata, ``generation`` bumps on spec changes, the status
a client may not overwrite, admission (``kinds``/``workloads``) and the ``Status`` errors.
Every method returns a deep copy, so callers never hold live store objects.
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Callable
from typing import Any

from devstack.kubesim.clock import rfc3339
from devstack.kubesim.errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    method_not_allowed,
    not_found,
)
from devstack.kubesim.kinds import (
    DEPLOYMENTS,
    NAMESPACES,
    SECRETS,
    ResourceType,
    normalize_namespace,
    normalize_secret,
    validate_metadata,
)
from devstack.kubesim.patch import PatchError, apply_patch
from devstack.kubesim.rbac import NORMALIZERS as RBAC_NORMALIZERS
from devstack.kubesim.selectors import (
    SelectorError,
    format_selector,
    matches_fields,
    matches_labels,
    parse_field_selector,
    parse_label_selector,
)
from devstack.kubesim.store import Store
from devstack.kubesim.workloads import normalize_deployment

Normalizer = Callable[[dict[str, Any], dict[str, Any] | None], dict[str, Any]]
_NORMALIZERS: dict[str, Normalizer] = {
    NAMESPACES.plural: normalize_namespace,
    SECRETS.plural: normalize_secret,
    DEPLOYMENTS.plural: normalize_deployment,
    **RBAC_NORMALIZERS,
}
_KEEP_STATUS = frozenset({"deployments", "replicasets", "namespaces", "pods"})
_SERVER_META = ("uid", "creationTimestamp", "generation", "namespace", "deletionTimestamp")


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(obj)


class Registry:
    """REST semantics for every resource type, over one ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reads ---------------------------------------------------------------------------

    def require(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        """The live object, or a 404 ``ApiError``."""
        obj = self.store.get(rtype.plural, namespace if rtype.namespaced else "", name)
        if obj is None:
            raise not_found(rtype, name)
        return obj

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        """GET one object."""
        return _public(self.require(rtype, namespace, name))

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        """GET a collection, filtered by selectors, optionally paged with limit/continue."""
        try:
            labels = parse_label_selector(label_selector)
            fields = parse_field_selector(field_selector)
        except SelectorError as exc:
            raise bad_request(str(exc)) from exc
        items = [
            obj
            for obj in self.store.list(rtype.plural, namespace if rtype.namespaced else None)
            if matches_labels(labels, obj["metadata"].get("labels")) and matches_fields(fields, obj)
        ]
        offset = 0
        if continue_token:
            try:
                offset = int(base64.urlsafe_b64decode(continue_token.encode()).decode())
            except (binascii.Error, ValueError) as exc:
                raise ApiError(
                    410, "the provided continue parameter is too old or malformed", reason="Expired"
                ) from exc
        meta: dict[str, Any] = {"resourceVersion": self.store.resource_version}
        page = items[offset:]
        if limit and limit > 0 and len(page) > limit:
            page = page[:limit]
            meta["continue"] = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
            meta["remainingItemCount"] = len(items) - offset - limit
        out = []
        for obj in page:
            item = _public(obj)
            item.pop("kind", None)  # like the apiserver, list items carry no kind/apiVersion
            item.pop("apiVersion", None)
            out.append(item)
        return {
            "kind": rtype.list_kind,
            "apiVersion": rtype.api_version,
            "metadata": meta,
            "items": out,
        }

    # -- writes --------------------------------------------------------------------------

    def _check_body(self, rtype: ResourceType, namespace: str, body: Any) -> dict[str, Any]:
        if not rtype.writable:
            raise method_not_allowed(
                f"{rtype.qualified} are managed by their controller and are read-only here"
            )
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request must be a {rtype.kind} object")
        obj: dict[str, Any] = copy.deepcopy(body)
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind not in (None, rtype.kind) or api_version not in (None, rtype.api_version):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rtype.api_version}) or kind ({kind}) is not {rtype.kind}"
            )
        obj["kind"], obj["apiVersion"] = rtype.kind, rtype.api_version
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise invalid(rtype, "", [("metadata", "Invalid value: must be an object")])
        if rtype.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def _require_namespace(self, rtype: ResourceType, namespace: str) -> None:
        if rtype.namespaced and self.store.get("namespaces", "", namespace) is None:
            raise not_found(NAMESPACES, namespace)

    def _admit(
        self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        causes = validate_metadata(rtype, obj)
        if causes:
            raise invalid(rtype, str(obj["metadata"].get("name") or ""), causes)
        normalizer = _NORMALIZERS.get(rtype.plural)
        return normalizer(obj, old) if normalizer else obj

    def create(self, rtype: ResourceType, namespace: str, body: Any) -> dict[str, Any]:
        """POST a new object."""
        obj = self._check_body(rtype, namespace, body)
        self._require_namespace(rtype, namespace)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(100):
                meta["name"] = f"{meta['generateName']}{self.store.random_suffix()}"
                if self.store.get(rtype.plural, namespace, meta["name"]) is None:
                    break
        obj.pop("status", None)
        obj = self._admit(rtype, obj, None)
        if self.store.get(rtype.plural, meta.get("namespace", ""), meta["name"]) is not None:
            raise already_exists(rtype, meta["name"])
        self.store.stamp_new(obj, generation=rtype.generation)
        return _public(self.store.save(rtype.plural, obj))

    def update(self, rtype: ResourceType, namespace: str, name: str, body: Any) -> dict[str, Any]:
        """PUT (replace) an object, honouring ``metadata.resourceVersion`` if given."""
        obj = self._check_body(rtype, namespace, body)
        return self._write(rtype, namespace, name, obj)

    def _write(
        self, rtype: ResourceType, namespace: str, name: str, obj: dict[str, Any]
    ) -> dict[str, Any]:
        old = self.require(rtype, namespace, name)
        meta = obj["metadata"]
        if meta.get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name "
                f"on the URL ({name})"
            )
        meta["name"] = name
        old_meta = old["metadata"]
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and rv != old_meta["resourceVersion"]:
            raise conflict(rtype, name)
        if meta.get("uid") not in (None, "", old_meta["uid"]):
            raise conflict(
                rtype,
                name,
                f"Precondition failed: UID in precondition: {meta.get('uid')}, "
                f"UID in object meta: {old_meta['uid']}",
            )
        for field in _SERVER_META:
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta.pop("resourceVersion", None)
        if rtype.plural in _KEEP_STATUS:
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            else:
                obj.pop("status", None)
        obj = self._admit(rtype, obj, old)
        if rtype.generation and obj.get("spec") != old.get("spec"):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        return _public(self.store.save(rtype.plural, obj))

    def patch(
        self, rtype: ResourceType, namespace: str, name: str, content_type: str, patch: Any
    ) -> dict[str, Any]:
        """PATCH an object with a JSON, merge or strategic merge patch."""
        if not rtype.writable:
            raise method_not_allowed(
                f"{rtype.qualified} are managed by their controller and are read-only here"
            )
        current = self.get(rtype, namespace, name)
        patched = self._patched(rtype, name, content_type, current, patch)
        obj = self._check_body(rtype, namespace, patched)
        return self._write(rtype, namespace, name, obj)

    def _patched(
        self, rtype: ResourceType, name: str, content_type: str, current: dict[str, Any], patch: Any
    ) -> dict[str, Any]:
        try:
            return apply_patch(content_type, current, patch)
        except PatchError as exc:
            if exc.code == 422:
                raise invalid(rtype, name, [("patch", str(exc))]) from exc
            raise ApiError(exc.code, str(exc)) from exc

    def delete(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """DELETE an object; dependents go with it unless ``propagation`` is ``Orphan``."""
        obj = self.require(rtype, namespace, name)
        meta = obj["metadata"]
        pre = preconditions or {}
        if pre.get("resourceVersion") not in (None, meta["resourceVersion"]):
            raise conflict(rtype, name, "Precondition failed: resourceVersion does not match")
        if pre.get("uid") not in (None, meta["uid"]):
            raise conflict(rtype, name, "Precondition failed: UID does not match")
        if propagation == "Orphan":
            for plural in ("replicasets", "pods"):
                for dependent in self.store.list(plural, namespace):
                    refs = dependent["metadata"].get("ownerReferences") or []
                    kept = [r for r in refs if r.get("uid") != meta["uid"]]
                    if len(kept) != len(refs):
                        updated = copy.deepcopy(dependent)
                        updated["metadata"]["ownerReferences"] = kept
                        self.store.save(plural, updated)
        gone = _public(obj)
        self.store.remove(rtype.plural, namespace if rtype.namespaced else "", name)
        if rtype is NAMESPACES:
            self.store.remove_namespace_contents(name)
        if rtype.plural in ("pods", "namespaces"):
            # Pods and namespaces answer with the object, now terminating.
            gone["metadata"]["deletionTimestamp"] = rfc3339(self.store.time)
            if rtype is NAMESPACES:
                gone["status"] = {"phase": "Terminating"}
            return gone
        details: dict[str, Any] = {"name": name, "kind": rtype.plural, "uid": meta["uid"]}
        if rtype.group:
            details["group"] = rtype.group
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    # -- the scale subresource -----------------------------------------------------------

    def get_scale(self, namespace: str, name: str) -> dict[str, Any]:
        """GET ``deployments/{name}/scale`` as an ``autoscaling/v1`` Scale."""
        d = self.require(DEPLOYMENTS, namespace, name)
        meta = d["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                key: meta[key]
                for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if key in meta
            },
            "spec": {"replicas": d["spec"].get("replicas", 1)},
            "status": {
                "replicas": (d.get("status") or {}).get("replicas", 0),
                "selector": format_selector(d["spec"].get("selector")),
            },
        }

    def update_scale(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        """PUT ``deployments/{name}/scale``."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a Scale object")
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid(
                DEPLOYMENTS,
                name,
                [
                    (
                        "spec.replicas",
                        f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                    )
                ],
            )
        d = self.get(DEPLOYMENTS, namespace, name)
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "") and rv != d["metadata"]["resourceVersion"]:
            raise conflict(DEPLOYMENTS, name)
        d["spec"]["replicas"] = replicas
        self._write(DEPLOYMENTS, namespace, name, d)
        return self.get_scale(namespace, name)

    def patch_scale(
        self, namespace: str, name: str, content_type: str, patch: Any
    ) -> dict[str, Any]:
        """PATCH ``deployments/{name}/scale``."""
        scale = self.get_scale(namespace, name)
        return self.update_scale(
            namespace, name, self._patched(DEPLOYMENTS, name, content_type, scale, patch)
        )
