"""Kubernetes RBAC through the official client: ServiceAccounts and every (Cluster)RoleBinding.

Read-only (the access audit never revokes). ``ApiException`` is translated by
:func:`tasks.kube.kube_errors`.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from prefect import task

from blocks.kube import KubeEnvironment
from decisions.access_audit import Binding, KubeRbac, Subject
from opsflows import retry
from tasks.kube import kube_errors


def _binding(item: Any, namespace: str) -> Binding:
    ref = item.role_ref
    return Binding(
        name=str(item.metadata.name),
        namespace=namespace,
        role_ref=f"{ref.kind}/{ref.name}",
        subjects=tuple(
            Subject(str(s.kind), str(s.name), str(s.namespace or "")) for s in (item.subjects or [])
        ),
    )


@task(name="read Kubernetes RBAC", **retry.NETWORK)
def read_rbac(env: KubeEnvironment) -> KubeRbac:
    """Every ServiceAccount, RoleBinding and ClusterRoleBinding of the cluster ``env`` is in."""
    with kube_errors(env, "read RBAC"), env.api_client() as api:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        accounts = core.list_service_account_for_all_namespaces().items or []
        role_bindings = rbac.list_role_binding_for_all_namespaces().items or []
        cluster_bindings = rbac.list_cluster_role_binding().items or []
    return KubeRbac(
        service_accounts=tuple(sorted(_where(a) for a in accounts)),
        bindings=(
            *(_binding(b, _where(b)[0]) for b in role_bindings),
            *(_binding(b, "") for b in cluster_bindings),
        ),
    )


def _where(item: Any) -> tuple[str, str]:
    meta = item.metadata
    return str(meta.namespace or ""), str(meta.name)
