"""What the access audit expects of the real systems: the ``audit:`` section of the roles policy.

``policy/roles.yaml`` names who holds which role (:mod:`decisions.access`); its ``audit:``
section names what else is legitimately there: the stack's own PostgreSQL service roles (and
what each may hold), how old a secret may get, the Kubernetes ServiceAccounts and the roles
the policy's members are bound to, and the Prefect blocks allowed to hold credentials::

    audit:
      postgres:
        service_roles:
          app: {databases: [app]}
          postgres: {attributes: [superuser, createrole], databases: ["*"]}
        members: {attributes: [], member_of: [], databases: ["*"]}
      secrets: {max_age_days: 35, passwords: {app: opsflows/app/db}}
      kubernetes:
        namespaces: [staging, production]
        service_accounts: {deployer: Role/deployer}
        member_roles: {dba: ClusterRole/opsflows-viewer}
        cluster_role_bindings: {cluster-admin: [Group/system:masters]}
      credential_blocks: [aws-credentials/opsflows, custom-webhook/*]

The expected PostgreSQL login roles are the service roles plus every member of the policy
(a person's own role is named as in the policy).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from decisions.access import ANY, RolesPolicy
from decisions.rotation import base_role as pair_base
from opsflows.errors import ConfigurationError

#: The role attributes the audit judges (``pg_roles`` columns without the ``rol`` prefix).
ATTRIBUTES = ("superuser", "createrole", "createdb", "replication", "bypassrls")
DEFAULT_MAX_AGE_DAYS = 35


@dataclass(frozen=True)
class RoleAllowance:
    """What one expected login role may hold and where it may log in."""

    attributes: frozenset[str] = frozenset()
    member_of: frozenset[str] = frozenset()
    databases: frozenset[str] = frozenset({ANY})

    def may_use(self, database: str) -> bool:
        return ANY in self.databases or database in self.databases


@dataclass(frozen=True)
class KubeExpectations:
    """The RBAC the clusters should have (see the module docstring)."""

    namespaces: tuple[str, ...] = ()
    service_accounts: Mapping[str, str] = field(default_factory=dict)
    member_roles: Mapping[str, str] = field(default_factory=dict)
    cluster_role_bindings: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditExpectations:
    """Everything the audit compares the systems against."""

    service_roles: Mapping[str, RoleAllowance]
    members: Mapping[str, RoleAllowance]
    max_age_days: float = DEFAULT_MAX_AGE_DAYS
    password_secrets: Mapping[str, str] = field(default_factory=dict)
    kube: KubeExpectations = field(default_factory=KubeExpectations)
    credential_blocks: tuple[str, ...] = ()

    def login_role(self, name: str) -> RoleAllowance | None:
        """What login role ``name`` may hold; None when it should not exist.

        ``<role>_clone`` of a service role is the other half of its alternating-users pair
        (``decisions.rotation``): it may hold what the role holds and be a member of it.
        """
        found = self.service_roles.get(name) or self.members.get(name)
        base = pair_base(name)
        if found is None and base in self.service_roles:
            allowed = self.service_roles[base]
            return replace(allowed, member_of=allowed.member_of | {base})
        return found

    def password_secret(self, name: str) -> str:
        """The secret holding ``name``'s password ('' when none is named); a pair shares one."""
        return self.password_secrets.get(name) or self.password_secrets.get(pair_base(name), "")

    def block_expected(self, ref: str) -> bool:
        """Whether the block document ``slug/name`` may hold credentials."""
        return any(fnmatch.fnmatchcase(ref, pattern) for pattern in self.credential_blocks)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigurationError(f"{where} must be a list", hint=f"write {where}: [a, b]")
    return tuple(str(v) for v in value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{where} must be a mapping", hint=f"write {where}: {{k: v}}")
    return value


def _allowance(body: Any, where: str) -> RoleAllowance:
    body = _mapping(body, where)
    extra = set(body) - {"attributes", "member_of", "databases"}
    if extra:
        raise ConfigurationError(
            f"{where} has unknown keys {sorted(extra)}",
            hint="allowed: attributes, member_of, databases",
        )
    attributes = _strings(body.get("attributes"), f"{where}.attributes")
    wrong = [a for a in attributes if a not in ATTRIBUTES]
    if wrong:
        raise ConfigurationError(
            f"{where}.attributes: unknown {wrong}", hint=f"use any of {', '.join(ATTRIBUTES)}"
        )
    databases = body.get("databases")
    return RoleAllowance(
        attributes=frozenset(attributes),
        member_of=frozenset(_strings(body.get("member_of"), f"{where}.member_of")),
        databases=frozenset(_strings(databases, f"{where}.databases"))
        if databases is not None
        else frozenset({ANY}),
    )


def _role_ref(value: Any, where: str) -> str:
    text = str(value)
    kind, _, name = text.partition("/")
    if kind not in ("Role", "ClusterRole") or not name:
        raise ConfigurationError(
            f"{where}: {text!r} is not Role/<name> or ClusterRole/<name>",
            hint="name the role a binding refers to, e.g. ClusterRole/opsflows-viewer",
        )
    return text


def parse_expectations(raw: Mapping[str, Any], policy: RolesPolicy) -> AuditExpectations:
    """The ``audit:`` section of the policy file (``raw`` is the whole parsed file)."""
    audit = _mapping(raw.get("audit"), "audit")
    if not audit:
        raise ConfigurationError(
            "the roles policy has no audit: section",
            hint="add audit: {postgres: ..., secrets: ..., kubernetes: ..., credential_blocks: []}",
        )
    extra = set(audit) - {"postgres", "secrets", "kubernetes", "credential_blocks"}
    if extra:
        raise ConfigurationError(f"audit has unknown keys {sorted(extra)}")
    pg = _mapping(audit.get("postgres"), "audit.postgres")
    service = {
        str(name): _allowance(body, f"audit.postgres.service_roles.{name}")
        for name, body in _mapping(pg.get("service_roles"), "audit.postgres.service_roles").items()
    }
    member = _allowance(pg.get("members"), "audit.postgres.members")
    people = sorted({m for role in policy.roles.values() for m in role.members})
    clash = [p for p in people if p in service]
    if clash:
        raise ConfigurationError(
            f"policy members {clash} share a name with a service role",
            hint="a person's login role must not be a service's",
        )
    secrets = _mapping(audit.get("secrets"), "audit.secrets")
    max_age = secrets.get("max_age_days", DEFAULT_MAX_AGE_DAYS)
    if isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age <= 0:
        raise ConfigurationError("audit.secrets.max_age_days must be a positive number of days")
    kube = _mapping(audit.get("kubernetes"), "audit.kubernetes")
    member_roles = {
        str(k): _role_ref(v, f"audit.kubernetes.member_roles.{k}")
        for k, v in _mapping(kube.get("member_roles"), "audit.kubernetes.member_roles").items()
    }
    unknown_roles = sorted(set(member_roles) - set(policy.roles))
    if unknown_roles:
        raise ConfigurationError(
            f"audit.kubernetes.member_roles names roles the policy lacks: {unknown_roles}",
            hint=f"roles defined: {sorted(policy.roles)}",
        )
    crbs = _mapping(kube.get("cluster_role_bindings"), "audit.kubernetes.cluster_role_bindings")
    return AuditExpectations(
        service_roles=service,
        members=dict.fromkeys(people, member),
        max_age_days=float(max_age),
        password_secrets={
            str(k): str(v)
            for k, v in _mapping(secrets.get("passwords"), "audit.secrets.passwords").items()
        },
        kube=KubeExpectations(
            namespaces=_strings(kube.get("namespaces"), "audit.kubernetes.namespaces"),
            service_accounts={
                str(k): _role_ref(v, f"audit.kubernetes.service_accounts.{k}")
                for k, v in _mapping(
                    kube.get("service_accounts"), "audit.kubernetes.service_accounts"
                ).items()
            },
            member_roles=member_roles,
            cluster_role_bindings={
                str(k): frozenset(_strings(v, f"audit.kubernetes.cluster_role_bindings.{k}"))
                for k, v in crbs.items()
            },
        ),
        credential_blocks=_strings(audit.get("credential_blocks"), "audit.credential_blocks"),
    )
