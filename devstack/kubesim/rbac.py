"""RBAC and ServiceAccounts: the resource types, their admission, and the seed's baseline.

Served as the apiserver serves them (``rbac.authorization.k8s.io/v1`` Roles, ClusterRoles,
RoleBindings, ClusterRoleBindings; core/v1 ServiceAccounts), so the official client's
``RbacAuthorizationV1Api`` and ``CoreV1Api`` list, create, read, replace, patch and delete
them. Nothing is authorized by them: the simulator enforces no RBAC, it stores what a cluster
would grant, for the access audit to read.

Admission follows the apiserver: a role needs ``rules`` with ``verbs`` (and resources or
non-resource URLs), a binding a ``roleRef`` (``Role`` only in a RoleBinding) that can never
change, and subjects of kind User, Group or ServiceAccount; a ServiceAccount subject of a
RoleBinding without a namespace gets the binding's.
"""

from __future__ import annotations

from typing import Any

from devstack.kubesim.errors import invalid
from devstack.kubesim.kinds import ResourceType

GROUP = "rbac.authorization.k8s.io"
SERVICEACCOUNTS = ResourceType("serviceaccounts", "ServiceAccount")
ROLES = ResourceType("roles", "Role", group=GROUP)
CLUSTERROLES = ResourceType("clusterroles", "ClusterRole", group=GROUP, namespaced=False)
ROLEBINDINGS = ResourceType("rolebindings", "RoleBinding", group=GROUP)
CLUSTERROLEBINDINGS = ResourceType(
    "clusterrolebindings", "ClusterRoleBinding", group=GROUP, namespaced=False
)
RBAC_RESOURCES = (SERVICEACCOUNTS, ROLES, CLUSTERROLES, ROLEBINDINGS, CLUSTERROLEBINDINGS)
_SUBJECT_KINDS = ("User", "Group", "ServiceAccount")

Causes = list[tuple[str, str]]


def _normalize_rules(rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> Any:
    rules = obj.get("rules")
    causes: Causes = []
    if rules is None:
        rules = []
    if not isinstance(rules, list):
        causes.append(("rules", "Invalid value: must be a list of PolicyRules"))
        rules = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            causes.append((f"rules[{i}]", "Invalid value: must be a PolicyRule object"))
            continue
        if not rule.get("verbs"):
            causes.append((f"rules[{i}].verbs", "Required value: verbs must contain at least one"))
        if not rule.get("resources") and not rule.get("nonResourceURLs"):
            causes.append(
                (f"rules[{i}].resources", "Required value: resource rules must supply resources")
            )
    if causes:
        raise invalid(rtype, obj["metadata"]["name"], causes)
    obj["rules"] = rules
    return obj


def normalize_role(obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    result: dict[str, Any] = _normalize_rules(ROLES, obj, old)
    return result


def normalize_cluster_role(obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    result: dict[str, Any] = _normalize_rules(CLUSTERROLES, obj, old)
    return result


def _normalize_binding(
    rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    namespace = obj["metadata"].get("namespace", "")
    causes: Causes = []
    ref = obj.get("roleRef")
    kinds = ("Role", "ClusterRole") if rtype.namespaced else ("ClusterRole",)
    if not isinstance(ref, dict):
        causes.append(("roleRef", "Required value"))
    else:
        if ref.get("apiGroup") not in (None, "", GROUP):
            causes.append(("roleRef.apiGroup", f"Unsupported value: supported values: {GROUP}"))
        if ref.get("kind") not in kinds:
            causes.append(("roleRef.kind", f"Unsupported value: supported values: {kinds}"))
        if not ref.get("name"):
            causes.append(("roleRef.name", "Required value"))
        ref["apiGroup"] = GROUP
        if old is not None and old.get("roleRef") != ref:
            causes.append(("roleRef", "Invalid value: cannot change roleRef"))
    subjects = obj.get("subjects") or []
    if not isinstance(subjects, list):
        causes.append(("subjects", "Invalid value: must be a list of subjects"))
        subjects = []
    for i, subject in enumerate(subjects):
        if not isinstance(subject, dict):
            causes.append((f"subjects[{i}]", "Invalid value: must be a Subject object"))
            continue
        kind = subject.get("kind")
        if kind not in _SUBJECT_KINDS:
            causes.append(
                (f"subjects[{i}].kind", f"Unsupported value: supported values: {_SUBJECT_KINDS}")
            )
        if not subject.get("name"):
            causes.append((f"subjects[{i}].name", "Required value"))
        if kind == "ServiceAccount":
            subject["apiGroup"] = ""
            if not subject.get("namespace"):
                if rtype.namespaced:
                    subject["namespace"] = namespace
                else:
                    causes.append((f"subjects[{i}].namespace", "Required value"))
        elif kind in ("User", "Group"):
            subject.setdefault("apiGroup", GROUP)
    if causes:
        raise invalid(rtype, name, causes)
    if subjects:
        obj["subjects"] = subjects
    return obj


def normalize_role_binding(obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    return _normalize_binding(ROLEBINDINGS, obj, old)


def normalize_cluster_role_binding(
    obj: dict[str, Any], old: dict[str, Any] | None
) -> dict[str, Any]:
    return _normalize_binding(CLUSTERROLEBINDINGS, obj, old)


NORMALIZERS = {
    ROLES.plural: normalize_role,
    CLUSTERROLES.plural: normalize_cluster_role,
    ROLEBINDINGS.plural: normalize_role_binding,
    CLUSTERROLEBINDINGS.plural: normalize_cluster_role_binding,
}

# -- the seed's baseline ------------------------------------------------------------------

#: ClusterRoles the seed defines: what the policy's roles get in their namespaces.
CLUSTER_ROLES: dict[str, list[dict[str, Any]]] = {
    "cluster-admin": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    "opsflows-admin": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    "opsflows-operator": [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "deployments/scale", "replicasets"],
            "verbs": ["get", "list", "watch", "patch", "update"],
        },
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "delete"]},
    ],
    "opsflows-viewer": [
        {
            "apiGroups": ["", "apps"],
            "resources": ["pods", "pods/log", "deployments", "replicasets"],
            "verbs": ["get", "list", "watch"],
        }
    ],
}
#: The Role the ``deployer`` ServiceAccount (CI's rollouts) holds in each namespace.
DEPLOYER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "deployments/scale"],
        "verbs": ["get", "list", "patch", "update"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "patch", "update"]},
]
#: The people of ``policy/roles.yaml`` bound in each namespace: binding (the policy role's
#: name) -> (ClusterRole, members). ``tests/unit/test_access_audit.py`` audits this seed
#: against the policy file, so the two cannot drift apart silently.
MEMBER_BINDINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "on-call": ("opsflows-operator", ("alice", "bob", "carol")),
    "devops": ("opsflows-admin", ("dave", "frank")),
    "dba": ("opsflows-viewer", ("dana", "erin")),
}


def role_ref(kind: str, name: str) -> dict[str, str]:
    return {"apiGroup": GROUP, "kind": kind, "name": name}


def user(name: str) -> dict[str, str]:
    return {"apiGroup": GROUP, "kind": "User", "name": name}


def baseline(namespaces: tuple[str, ...]) -> list[tuple[ResourceType, str, dict[str, Any]]]:
    """The RBAC objects of a clean cluster: (type, namespace, body) in creation order."""
    out: list[tuple[ResourceType, str, dict[str, Any]]] = [
        (CLUSTERROLES, "", {"metadata": {"name": name}, "rules": rules})
        for name, rules in CLUSTER_ROLES.items()
    ]
    out.append(
        (
            CLUSTERROLEBINDINGS,
            "",
            {
                "metadata": {"name": "cluster-admin"},
                "roleRef": role_ref("ClusterRole", "cluster-admin"),
                "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": "system:masters"}],
            },
        )
    )
    for ns in namespaces:
        out += [
            (SERVICEACCOUNTS, ns, {"metadata": {"name": "deployer"}}),
            (ROLES, ns, {"metadata": {"name": "deployer"}, "rules": DEPLOYER_RULES}),
            (
                ROLEBINDINGS,
                ns,
                {
                    "metadata": {"name": "deployer"},
                    "roleRef": role_ref("Role", "deployer"),
                    "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}],
                },
            ),
        ]
        for binding, (cluster_role, members) in MEMBER_BINDINGS.items():
            out.append(
                (
                    ROLEBINDINGS,
                    ns,
                    {
                        "metadata": {"name": binding},
                        "roleRef": role_ref("ClusterRole", cluster_role),
                        "subjects": [user(m) for m in members],
                    },
                )
            )
    return out
