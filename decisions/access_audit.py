"""The quarterly access audit's comparisons: what the systems grant against what may be there.

Facts come in as frozen dataclasses (gathered by ``tasks/access_facts.py``); the expectations
are the roles policy and its ``audit:`` section (:mod:`decisions.access_expectations`). Every
comparison here is pure; :func:`audit` returns the findings, each with its evidence and what
to do. **Nothing is revoked by the audit**: a finding's recommendation is a separate, approved
change (the policy role's ``revoke`` says how).

Drift is:

* PostgreSQL: a login role that is neither a service role nor a policy member; a superuser
  not expected; an expected role holding an attribute (superuser, createrole, createdb,
  replication, bypassrls) or a membership it should not;
* Kubernetes: a RoleBinding/ClusterRoleBinding subject that is a User not in the policy, a
  member bound to a role (or in a namespace) their policy roles do not give, a ServiceAccount
  bound to something else than expected, a person bound cluster-wide, an expected
  ``deployer`` ServiceAccount or binding missing;
* secrets: one not rotated (nor changed) for more than ``max_age_days``;
* Prefect: a block document holding credentials that is not in the expected list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from decisions.access import RolesPolicy, normal
from decisions.access_expectations import AuditExpectations

POSTGRES, KUBERNETES, SECRETS, BLOCKS = "postgres", "kubernetes", "secrets", "blocks"
_DAY = 86400.0


@dataclass(frozen=True)
class PgRole:
    """One role of the PostgreSQL server (``pg_roles`` and ``pg_auth_members``)."""

    name: str
    login: bool
    attributes: frozenset[str] = frozenset()  # of ATTRIBUTES
    member_of: tuple[str, ...] = ()
    valid_until: datetime | None = None
    #: Privileges on the app database (CONNECT, CREATE, TEMPORARY) and its tables
    #: ("SELECT on 3 tables"), as evidence.
    grants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Subject:
    kind: str  # User | Group | ServiceAccount
    name: str
    namespace: str = ""

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace + ':' if self.namespace else ''}{self.name}"


@dataclass(frozen=True)
class Binding:
    """A RoleBinding (``namespace`` set) or ClusterRoleBinding (``namespace`` empty)."""

    name: str
    namespace: str
    role_ref: str  # "ClusterRole/opsflows-viewer" or "Role/deployer"
    subjects: tuple[Subject, ...] = ()

    @property
    def where(self) -> str:
        return (
            f"RoleBinding {self.namespace}/{self.name}"
            if self.namespace
            else f"ClusterRoleBinding {self.name}"
        )


@dataclass(frozen=True)
class KubeRbac:
    service_accounts: tuple[tuple[str, str], ...]  # (namespace, name)
    bindings: tuple[Binding, ...]


@dataclass(frozen=True)
class SecretAge:
    """When a Secrets Manager secret was created, last changed and last rotated."""

    name: str
    created: datetime | None
    last_changed: datetime | None
    last_rotated: datetime | None

    @property
    def renewed(self) -> datetime | None:
        """The latest of rotated and changed (a rotation by its four steps changes the value;
        ``RotateSecret`` sets LastRotatedDate), else the creation."""
        moments = [d for d in (self.last_rotated, self.last_changed) if d is not None]
        return max(moments) if moments else self.created


@dataclass(frozen=True)
class CredentialBlock:
    """A Prefect block document whose schema has secret fields (names only, never values)."""

    ref: str  # slug/name
    block_type: str
    secret_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessFacts:
    pg_roles: tuple[PgRole, ...]
    rbac: KubeRbac
    secrets: tuple[SecretAge, ...]
    blocks: tuple[CredentialBlock, ...]


@dataclass(frozen=True)
class Finding:
    area: str
    subject: str
    problem: str
    evidence: str
    recommendation: str


def age_days(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else (now - when).total_seconds() / _DAY


def judge_pg_roles(
    roles: Sequence[PgRole], expect: AuditExpectations, policy: RolesPolicy
) -> list[Finding]:
    """Login roles not expected, and expected roles holding more than they may."""
    out: list[Finding] = []
    for role in roles:
        if role.name.startswith("pg_"):
            continue  # the server's predefined roles (NOLOGIN); judged through memberships
        allowed = expect.login_role(role.name)
        held = sorted(role.attributes)
        evidence = _pg_evidence(role)
        if allowed is None:
            if role.login or "superuser" in role.attributes:
                what = "superuser" if "superuser" in role.attributes else "login role"
                out.append(
                    Finding(
                        POSTGRES,
                        role.name,
                        f"{what} not expected (neither a service role nor a policy member)",
                        evidence,
                        f"find out who created {role.name}; if unneeded, an approved change "
                        f"revokes it (ALTER ROLE {role.name} NOLOGIN NOSUPERUSER, then DROP)",
                    )
                )
            continue
        extra = [a for a in held if a not in allowed.attributes]
        if extra:
            out.append(
                Finding(
                    POSTGRES,
                    role.name,
                    f"holds {', '.join(extra)} it should not",
                    evidence,
                    f"an approved change: ALTER ROLE {role.name} "
                    + " ".join(f"NO{a.upper()}" for a in extra),
                )
            )
        memberships = [m for m in role.member_of if m not in allowed.member_of]
        if memberships:
            out.append(
                Finding(
                    POSTGRES,
                    role.name,
                    f"member of {', '.join(memberships)}, not expected",
                    evidence,
                    f"an approved change: REVOKE {', '.join(memberships)} FROM {role.name}",
                )
            )
    return out


def _pg_evidence(role: PgRole) -> str:
    parts = ["LOGIN" if role.login else "NOLOGIN", *(a.upper() for a in sorted(role.attributes))]
    if role.member_of:
        parts.append("member of " + ", ".join(role.member_of))
    if role.grants:
        parts.append("app db: " + ", ".join(role.grants))
    return "; ".join(parts)


def judge_rbac(rbac: KubeRbac, expect: AuditExpectations, policy: RolesPolicy) -> list[Finding]:
    """Bindings that grant more than the policy, and the expected baseline that is missing."""
    kube = expect.kube
    out: list[Finding] = []
    for binding in rbac.bindings:
        for subject in binding.subjects:
            problem = _binding_problem(binding, subject, expect, policy)
            if problem:
                out.append(
                    Finding(
                        KUBERNETES,
                        subject.ref,
                        problem,
                        f"{binding.where} -> {binding.role_ref}",
                        f"an approved change removes {subject.ref} from {binding.where} "
                        "(or the policy is updated by a reviewed commit)",
                    )
                )
    accounts = set(rbac.service_accounts)
    for namespace in kube.namespaces:
        for account, role_ref in kube.service_accounts.items():
            if (namespace, account) not in accounts:
                out.append(
                    Finding(
                        KUBERNETES,
                        f"ServiceAccount/{namespace}:{account}",
                        "expected ServiceAccount missing",
                        f"no ServiceAccount {account} in {namespace}",
                        "recreate it from the cluster's baseline manifests",
                    )
                )
            bound = any(
                b.namespace == namespace
                and b.role_ref == role_ref
                and Subject("ServiceAccount", account, namespace) in b.subjects
                for b in rbac.bindings
            )
            if not bound:
                out.append(
                    Finding(
                        KUBERNETES,
                        f"ServiceAccount/{namespace}:{account}",
                        f"not bound to {role_ref}",
                        f"no RoleBinding in {namespace} gives it {role_ref}",
                        "restore the baseline RoleBinding",
                    )
                )
    return out


def _binding_problem(
    binding: Binding, subject: Subject, expect: AuditExpectations, policy: RolesPolicy
) -> str | None:
    kube = expect.kube
    if not binding.namespace:
        allowed = kube.cluster_role_bindings.get(binding.name, frozenset())
        if f"{subject.kind}/{subject.name}" in allowed:
            return None
        if subject.kind == "User" and not policy.roles_of(subject.name):
            return "bound cluster-wide, and not a member of the roles policy"
        return "bound cluster-wide: more than the policy allows anyone"
    if subject.kind == "ServiceAccount":
        want = kube.service_accounts.get(subject.name)
        if (
            want == binding.role_ref
            and subject.namespace == binding.namespace
            and binding.namespace in kube.namespaces
        ):
            return None
        return f"ServiceAccount bound to {binding.role_ref}, not expected"
    if subject.kind != "User":
        return f"{subject.kind} subject not expected in a namespace binding"
    held = policy.roles_of(subject.name)
    if not held:
        return "not a member of the roles policy"
    for role_name in held:
        role = policy.roles[role_name]
        ref = kube.member_roles.get(role_name)
        envs = role.environments
        if ref == binding.role_ref and ("*" in envs or binding.namespace in envs):
            return None
    gives = [
        f"{r}: {kube.member_roles[r]} in {', '.join(policy.roles[r].environments)}"
        for r in held
        if r in kube.member_roles
    ]
    return (
        f"bound to {binding.role_ref} in {binding.namespace}: more than the policy allows "
        f"({normal(subject.name)} holds {'; '.join(gives) or ', '.join(held)})"
    )


def judge_secrets(
    secrets: Iterable[SecretAge], expect: AuditExpectations, now: datetime
) -> list[Finding]:
    """Secrets not rotated (nor changed) within ``max_age_days``."""
    out: list[Finding] = []
    for secret in secrets:
        age = age_days(secret.renewed, now)
        if age is not None and age > expect.max_age_days:
            out.append(
                Finding(
                    SECRETS,
                    secret.name,
                    f"not rotated for {age:.0f} days (over {expect.max_age_days:g})",
                    secret_evidence(secret),
                    "run rotate-credentials for it (or find out why the monthly rotation did not)",
                )
            )
    return out


def secret_evidence(secret: SecretAge) -> str:
    def day(d: datetime | None) -> str:
        return d.date().isoformat() if d else "never"

    return (
        f"LastRotatedDate {day(secret.last_rotated)}, LastChangedDate "
        f"{day(secret.last_changed)}, CreatedDate {day(secret.created)}"
    )


def judge_blocks(blocks: Iterable[CredentialBlock], expect: AuditExpectations) -> list[Finding]:
    """Credential-holding block documents that are not in the expected list."""
    return [
        Finding(
            BLOCKS,
            block.ref,
            "block holding credentials not in the expected list",
            f"{block.block_type}; secret fields: {', '.join(block.secret_fields) or 'nested'}",
            "find its owner; delete it by an approved change, or add it to "
            "audit.credential_blocks by a reviewed commit",
        )
        for block in blocks
        if not expect.block_expected(block.ref)
    ]


def audit(
    facts: AccessFacts, expect: AuditExpectations, policy: RolesPolicy, now: datetime
) -> tuple[Finding, ...]:
    """Every finding of the audit, by area."""
    return (
        *judge_pg_roles(facts.pg_roles, expect, policy),
        *judge_rbac(facts.rbac, expect, policy),
        *judge_secrets(facts.secrets, expect, now),
        *judge_blocks(facts.blocks, expect),
    )


def password_ages(facts: AccessFacts, expect: AuditExpectations, now: datetime) -> dict[str, str]:
    """Each login role's password age as far as it is known (evidence for the report).

    PostgreSQL does not record when a password was set: a role's age is its secret's (the
    ``audit.secrets.passwords`` map), else only its ``VALID UNTIL`` is known.
    """
    by_name = {s.name: s for s in facts.secrets}
    out: dict[str, str] = {}
    for role in facts.pg_roles:
        if not role.login:
            continue
        secret = by_name.get(expect.password_secret(role.name))
        age = age_days(secret.renewed, now) if secret else None
        until = role.valid_until.date().isoformat() if role.valid_until else "no expiry"
        out[role.name] = (
            f"{age:.0f} days (secret {secret.name}); valid until {until}"
            if secret and age is not None
            else f"unknown (PostgreSQL keeps no date); valid until {until}"
        )
    return out
