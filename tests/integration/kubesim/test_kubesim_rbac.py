"""RBAC and ServiceAccounts in the simulator, through the official client's
``RbacAuthorizationV1Api`` and ``CoreV1Api``: the seeded baseline, create/read/list/delete,
and the apiserver's admission rules."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kubesim_support import status_body


@pytest.fixture
def rbac(api_client: client.ApiClient) -> client.RbacAuthorizationV1Api:
    return client.RbacAuthorizationV1Api(api_client)


def _ref(kind: str, name: str) -> client.V1RoleRef:
    return client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind=kind, name=name)


def _user(name: str) -> client.RbacV1Subject:
    return client.RbacV1Subject(kind="User", name=name, api_group="rbac.authorization.k8s.io")


def test_the_seed_has_a_deployer_and_the_policy_members_bound_in_each_environment(
    rbac: client.RbacAuthorizationV1Api, core: client.CoreV1Api
) -> None:
    accounts = core.list_service_account_for_all_namespaces().items
    assert {("staging", "deployer"), ("production", "deployer")} <= {
        (a.metadata.namespace, a.metadata.name) for a in accounts
    }
    bindings = rbac.list_namespaced_role_binding("production").items
    by_name = {b.metadata.name: b for b in bindings}
    assert set(by_name) == {"deployer", "on-call", "devops", "dba"}
    assert by_name["deployer"].role_ref.kind == "Role"
    assert by_name["deployer"].subjects[0].namespace == "production"
    assert [s.name for s in by_name["dba"].subjects] == ["dana", "erin"]
    assert by_name["dba"].role_ref.name == "opsflows-viewer"
    cluster = rbac.list_cluster_role_binding().items
    assert [(b.metadata.name, [s.name for s in b.subjects]) for b in cluster] == [
        ("cluster-admin", ["system:masters"])
    ]
    assert rbac.read_cluster_role("opsflows-operator").rules[0].api_groups == ["apps"]
    assert rbac.read_namespaced_role("deployer", "staging").rules


def test_roles_and_bindings_are_created_read_listed_and_deleted(
    rbac: client.RbacAuthorizationV1Api, core: client.CoreV1Api, ns: str
) -> None:
    core.create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="ci"))
    )
    rbac.create_namespaced_role(
        ns,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get"])],
        ),
    )
    created = rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="ci-reader"),
            role_ref=_ref("Role", "reader"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="ci"), _user("eve")],
        ),
    )
    assert created.subjects[0].namespace == ns, "a RoleBinding's ServiceAccount gets its namespace"
    assert rbac.read_namespaced_role_binding("ci-reader", ns).role_ref.name == "reader"
    everywhere = rbac.list_role_binding_for_all_namespaces().items
    assert (ns, "ci-reader") in {(b.metadata.namespace, b.metadata.name) for b in everywhere}
    assert core.read_namespaced_service_account("ci", ns).metadata.name == "ci"

    rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name=f"{ns}-all"),
            rules=[client.V1PolicyRule(api_groups=["*"], resources=["*"], verbs=["*"])],
        )
    )
    rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=f"{ns}-eve"),
            role_ref=_ref("ClusterRole", f"{ns}-all"),
            subjects=[_user("eve")],
        )
    )
    names = {b.metadata.name for b in rbac.list_cluster_role_binding().items}
    assert f"{ns}-eve" in names

    rbac.delete_cluster_role_binding(f"{ns}-eve")
    rbac.delete_cluster_role(f"{ns}-all")
    rbac.delete_namespaced_role_binding("ci-reader", ns)
    core.delete_namespaced_service_account("ci", ns)
    with pytest.raises(ApiException) as raised:
        rbac.read_cluster_role_binding(f"{ns}-eve")
    assert raised.value.status == 404
    assert status_body(raised.value)["details"]["group"] == "rbac.authorization.k8s.io"
    assert rbac.list_namespaced_role_binding(ns).items == []


def test_admission_refuses_what_the_apiserver_refuses(
    rbac: client.RbacAuthorizationV1Api, ns: str
) -> None:
    binding = client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="b"),
        role_ref=_ref("Role", "reader"),
        subjects=[client.RbacV1Subject(kind="Robot", name="r2")],
    )
    with pytest.raises(ApiException) as raised:
        rbac.create_namespaced_role_binding(ns, binding)
    assert raised.value.status == 422 and "subjects[0].kind" in status_body(raised.value)["message"]

    with pytest.raises(ApiException) as raised:  # a ClusterRoleBinding cannot refer to a Role
        rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=f"{ns}-x"),
                role_ref=_ref("Role", "reader"),
                subjects=[_user("eve")],
            )
        )
    assert raised.value.status == 422

    binding.subjects = [_user("eve")]
    rbac.create_namespaced_role_binding(ns, binding)
    with pytest.raises(ApiException) as raised:  # roleRef is immutable
        rbac.patch_namespaced_role_binding("b", ns, {"roleRef": {"name": "writer"}})
    assert raised.value.status == 422 and "cannot change roleRef" in raised.value.body

    with pytest.raises(ApiException) as raised:
        rbac.create_namespaced_role(
            ns,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="empty"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=[])],
            ),
        )
    assert raised.value.status == 422
