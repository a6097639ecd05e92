"""The three patch formats the apiserver accepts for built-in types.

* JSON merge patch (RFC 7386, ``application/merge-patch+json``): maps merge, ``null`` deletes,
  everything else (lists included) replaces.
* Strategic merge patch (``application/strategic-merge-patch+json``): like merge patch, but
  lists with a known merge key (``containers`` by ``name``, ``env`` by ``name``...) merge element
  by element, and the ``$patch``, ``$retainKeys`` and ``$deleteFromPrimitiveList`` directives work.
* JSON patch (RFC 6902, ``application/json-patch+json``): a list of operations.

All functions are pure: they return a new document and never modify their arguments.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# Field name -> merge key, as declared by `patchMergeKey` in the Kubernetes API types we serve.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "containerStatuses": "name",
}
# Lists of scalars declared `patchStrategy: merge` (union instead of replace).
PRIMITIVE_MERGE: frozenset[str] = frozenset({"finalizers"})

_DELETE = object()


class PatchError(ValueError):
    """A patch that cannot be decoded (``code`` 400) or applied (``code`` 422)."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def json_merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch using the merge keys of the built-in types."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object", code=400)
    merged = _merge_map(target if isinstance(target, dict) else {}, patch)
    return {} if merged is _DELETE else merged


def _merge_map(target: dict[str, Any], patch: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive is not None and directive != "merge":
        raise PatchError(f"unknown patch directive {directive!r}")
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            remove = value if isinstance(value, list) else [value]
            if isinstance(result.get(field), list):
                result[field] = [item for item in result[field] if item not in remove]
            continue
        if key.startswith("$"):
            continue  # $setElementOrder/... and friends only affect ordering
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            merged = _merge_map(result[key], value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, dict):
            merged = _merge_map({}, value)
            if merged is not _DELETE:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    existing: list[Any] = copy.deepcopy(current) if isinstance(current, list) else []
    if field in PRIMITIVE_MERGE:
        return existing + [copy.deepcopy(item) for item in patch if item not in existing]
    merge_key = MERGE_KEYS.get(field)
    if merge_key is None or not all(isinstance(item, dict) for item in patch):
        return [copy.deepcopy(item) for item in patch if not _is_directive(item)]
    for item in patch:
        if merge_key not in item:
            raise PatchError(f"map in list {field!r} does not contain merge key {merge_key!r}")
        index = next(
            (
                i
                for i, old in enumerate(existing)
                if isinstance(old, dict) and old.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del existing[index]
            continue
        if index is None:
            existing.append({k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("$")})
        else:
            merged = _merge_map(existing[index], item)
            existing[index] = merged
    return existing


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and "$patch" in item


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}", code=400)
    if path == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if allow_end and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of range")
    return index


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    current = doc
    for token in parts[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise PatchError(f"doc is missing path: {path}")
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, allow_end=False)]
        else:
            raise PatchError(f"doc is missing path: {path}")
    return current


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"doc is missing path: {path}")
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, allow_end=False)]
    raise PatchError(f"doc is missing path: {path}")


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path)
    token = parts[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, allow_end=True), value)
    else:
        raise PatchError(f"doc is missing path: {path}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, parts, path)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"unable to remove nonexistent key: {token}: missing value")
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, token, allow_end=False))
    raise PatchError(f"doc is missing path: {path}")


def _from(op: dict[str, Any]) -> str:
    source = op.get("from")
    if not isinstance(source, str):
        raise PatchError(f"JSON patch operation {op['op']!r} needs a 'from' pointer", code=400)
    return source


def json_patch(document: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a JSON array of operations", code=400)
    doc = copy.deepcopy(document)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation {op!r}", code=400)
        name, path = op["op"], op["path"]
        if name in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"JSON patch operation {name!r} needs a value", code=400)
        if name == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif name == "remove":
            doc, _ = _remove(doc, path)
        elif name == "replace":
            _get(doc, path)  # must exist
            if _pointer(path):
                doc, _ = _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif name == "move":
            doc, value = _remove(doc, _from(op))
            doc = _add(doc, path, value)
        elif name == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, _from(op))))
        elif name == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"unexpected JSON patch operation {name!r}", code=400)
    return doc


def apply_patch(content_type: str, document: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply ``patch`` to ``document`` according to the request's Content-Type."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == JSON_PATCH:
        result = json_patch(document, patch)
    elif kind == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise PatchError("a merge patch must be a JSON object", code=400)
        result = json_merge_patch(document, patch)
    elif kind == STRATEGIC_MERGE_PATCH:
        result = strategic_merge_patch(document, patch)
    else:
        raise PatchError(f"the media type {kind!r} is not supported for patches", code=415)
    if not isinstance(result, dict):
        raise PatchError("the patched object is not a JSON object")
    return result
