"""Merge, strategic merge and JSON patches."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.kubesim.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    apply_patch,
    json_merge_patch,
    json_patch,
    strategic_merge_patch,
)


def deployment() -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}]},
                        {"name": "sidecar", "image": "proxy:1"},
                    ]
                }
            },
        },
    }


def test_merge_patch_merges_maps_deletes_nulls_and_replaces_lists() -> None:
    doc = deployment()
    patched = json_merge_patch(
        doc,
        {
            "metadata": {"labels": {"tier": None, "team": "ops"}},
            "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}},
        },
    )
    assert patched["metadata"]["labels"] == {"app": "web", "team": "ops"}
    assert patched["spec"]["template"]["spec"]["containers"] == [{"name": "only", "image": "x"}]
    assert doc == deployment(), "the input is not modified"


def test_strategic_merge_patch_merges_containers_and_env_by_name() -> None:
    patched = strategic_merge_patch(
        deployment(),
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "web", "image": "web:2", "env": [{"name": "B", "value": "2"}]}
                        ]
                    }
                }
            }
        },
    )
    web, sidecar = patched["spec"]["template"]["spec"]["containers"]
    assert web["image"] == "web:2"
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert sidecar == {"name": "sidecar", "image": "proxy:1"}


def test_strategic_merge_patch_directives() -> None:
    doc = deployment()
    deleted = strategic_merge_patch(
        doc,
        {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}},
    )
    assert [c["name"] for c in deleted["spec"]["template"]["spec"]["containers"]] == ["web"]
    replaced = strategic_merge_patch(
        doc, {"metadata": {"labels": {"$patch": "replace", "only": "x"}}}
    )
    assert replaced["metadata"]["labels"] == {"only": "x"}
    with pytest.raises(PatchError):
        strategic_merge_patch(
            doc, {"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}
        )


def test_json_patch_operations() -> None:
    doc = deployment()
    patched = json_patch(
        doc,
        [
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 5},
            {"op": "add", "path": "/metadata/labels/env", "value": "prod"},
            {"op": "remove", "path": "/metadata/labels/tier"},
            {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "c"}},
            {"op": "copy", "from": "/metadata/name", "path": "/metadata/labels/name"},
            {"op": "move", "from": "/metadata/labels/env", "path": "/metadata/labels/stage"},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "web:3"},
        ],
    )
    assert patched["spec"]["replicas"] == 5
    assert patched["metadata"]["labels"] == {"app": "web", "name": "web", "stage": "prod"}
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "sidecar", "c"]
    assert containers[0]["image"] == "web:3"


def test_json_patch_escapes_pointer_tokens() -> None:
    doc = {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "t0"}}}
    path = "/metadata/annotations/kubectl.kubernetes.io~1restartedAt"
    patched = json_patch(doc, [{"op": "replace", "path": path, "value": "t1"}])
    assert patched["metadata"]["annotations"] == {"kubectl.kubernetes.io/restartedAt": "t1"}


@pytest.mark.parametrize(
    ("ops", "code"),
    [
        ([{"op": "test", "path": "/spec/replicas", "value": 3}], 422),
        ([{"op": "replace", "path": "/spec/missing", "value": 1}], 422),
        ([{"op": "remove", "path": "/spec/template/spec/containers/9"}], 422),
        ([{"op": "jump", "path": "/spec"}], 400),
        ({"op": "add"}, 400),
    ],
)
def test_json_patch_errors_carry_the_http_code(ops: Any, code: int) -> None:
    with pytest.raises(PatchError) as raised:
        json_patch(deployment(), ops)
    assert raised.value.code == code


def test_apply_patch_dispatches_on_content_type() -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:9"}]}}}}
    strategic = apply_patch(STRATEGIC_MERGE_PATCH, deployment(), body)
    merge = apply_patch(f"{MERGE_PATCH}; charset=utf-8", deployment(), body)
    assert len(strategic["spec"]["template"]["spec"]["containers"]) == 2
    assert len(merge["spec"]["template"]["spec"]["containers"]) == 1
    assert apply_patch(JSON_PATCH, deployment(), [])["spec"]["replicas"] == 2
    with pytest.raises(PatchError) as raised:
        apply_patch("application/apply-patch+yaml", deployment(), body)
    assert raised.value.code == 415
