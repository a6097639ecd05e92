"""Who may approve what: the ``roles`` policy (RUNBOOK.md "Access Control") as typed values.

The policy file (``policy/roles.yaml``, versioned with the code) names roles in the seed's
shape, role -> runbooks and environments it may act on -> members, and the approval gates the
runbooks pause at, each with the roles that may answer it and how many different people must
approve::

    roles:
      dba:
        description: Database Admin - restore backups, modify schema
        runbooks: [restore-database, migrate-database]
        environments: [staging, production]
        members: [dana, erin]
    gates:
      replace-live-database: {roles: [dba], approvers: 2}

An approval counts when its approver is a member of a role the gate lists *and* that role
covers the run's runbook and environment. A rejection by anyone who names themselves stops
the change (stopping is always safe); an approval by anyone else is refused, recorded, and
the run keeps waiting until its timeout. Names compare case-insensitively, trimmed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opsflows.errors import ConfigurationError

ANY = "*"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.@+-]*$")


@dataclass(frozen=True)
class Role:
    """One role: what it may act on and who holds it."""

    name: str
    runbooks: tuple[str, ...]
    environments: tuple[str, ...]
    members: tuple[str, ...]
    description: str = ""
    revoke: str = ""

    def covers(self, runbook: str, environment: str) -> bool:
        """Whether this role may act on ``runbook`` in ``environment``."""
        return (ANY in self.runbooks or runbook in self.runbooks) and (
            ANY in self.environments or environment in self.environments
        )

    def has(self, person: str) -> bool:
        return normal(person) in self.members


@dataclass(frozen=True)
class Gate:
    """An approval a runbook pauses for: which roles may answer it, how many people."""

    name: str
    roles: tuple[str, ...]
    approvers: int = 1
    environments: tuple[str, ...] = (ANY,)  # where the gate holds; elsewhere it is open

    def applies(self, environment: str) -> bool:
        """Whether a run in ``environment`` must pass this gate."""
        return ANY in self.environments or environment in self.environments


@dataclass(frozen=True)
class RolesPolicy:
    """The whole policy, validated: every gate names existing roles and can be satisfied."""

    roles: Mapping[str, Role]
    gates: Mapping[str, Gate]
    version: str = ""

    def gate(self, name: str) -> Gate:
        try:
            return self.gates[name]
        except KeyError:
            raise ConfigurationError(
                f"the roles policy has no gate {name!r}",
                hint=f"add `gates: {name}: {{roles: [...], approvers: 1}}` to the policy file",
            ) from None

    def roles_of(self, person: str) -> tuple[str, ...]:
        """Every role ``person`` holds (sorted)."""
        return tuple(sorted(r.name for r in self.roles.values() if r.has(person)))


@dataclass(frozen=True)
class Verdict:
    """Whether one answer counts toward a gate, and why (said in the op log and the form)."""

    counts: bool
    approver: str
    role: str | None
    why: str


def normal(person: str) -> str:
    """A person's name as the policy compares it: trimmed, lower case."""
    return person.strip().lower()


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigurationError(
            f"{where} must be a list of names", hint=f"write {where}: [name, ...]"
        )
    out: list[str] = []
    for item in value:
        name = normal(str(item))
        if name != ANY and not _NAME.match(name):
            raise ConfigurationError(
                f"{where}: {item!r} is not a valid name",
                hint="use lower-case letters, digits and . _ @ + -",
            )
        out.append(name)
    return tuple(out)


def parse_policy(raw: Mapping[str, Any]) -> RolesPolicy:
    """The policy from its parsed YAML; ConfigurationError naming the first problem."""
    if not isinstance(raw, Mapping):
        raise ConfigurationError("the roles policy must be a mapping with roles: and gates:")
    unknown = set(raw) - {"version", "roles", "gates", "audit"}
    if unknown:
        raise ConfigurationError(
            f"the roles policy has unknown keys {sorted(unknown)}",
            hint="allowed: version, roles, gates, audit (read by decisions.access_audit)",
        )
    roles_raw = raw.get("roles") or {}
    if not isinstance(roles_raw, Mapping) or not roles_raw:
        raise ConfigurationError("the roles policy names no roles", hint="add roles: {name: ...}")
    roles: dict[str, Role] = {}
    for name, body in roles_raw.items():
        if not isinstance(body, Mapping):
            raise ConfigurationError(f"role {name!r} must be a mapping")
        extra = set(body) - {"description", "runbooks", "environments", "members", "revoke"}
        if extra:
            raise ConfigurationError(f"role {name!r} has unknown keys {sorted(extra)}")
        roles[str(name)] = Role(
            name=str(name),
            runbooks=_names(body.get("runbooks"), f"roles.{name}.runbooks"),
            environments=_names(body.get("environments"), f"roles.{name}.environments"),
            members=_names(body.get("members"), f"roles.{name}.members"),
            description=str(body.get("description") or ""),
            revoke=str(body.get("revoke") or ""),
        )
    gates: dict[str, Gate] = {}
    gates_raw = raw.get("gates") or {}
    if not isinstance(gates_raw, Mapping):
        raise ConfigurationError("gates must be a mapping of gate name -> {roles, approvers}")
    for name, body in gates_raw.items():
        if not isinstance(body, Mapping):
            raise ConfigurationError(f"gate {name!r} must be a mapping with roles: and approvers:")
        gate_roles = tuple(str(r) for r in body.get("roles") or ())
        missing = [r for r in gate_roles if r not in roles]
        if not gate_roles or missing:
            raise ConfigurationError(
                f"gate {name!r} names unknown roles {missing}"
                if missing
                else f"gate {name!r} names no roles",
                hint=f"roles defined: {sorted(roles)}",
            )
        count = body.get("approvers", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigurationError(f"gate {name!r}: approvers must be a whole number >= 1")
        people = {m for r in gate_roles for m in roles[r].members}
        if len(people) < count:
            raise ConfigurationError(
                f"gate {name!r} needs {count} different approvers but its roles "
                f"{list(gate_roles)} have {len(people)} member(s): it could never be approved",
                hint="add members to those roles or lower approvers",
            )
        where = _names(body.get("environments", [ANY]), f"gates.{name}.environments")
        gates[str(name)] = Gate(str(name), gate_roles, count, where or (ANY,))
    return RolesPolicy(roles, gates, str(raw.get("version") or ""))


def judge(
    policy: RolesPolicy,
    gate: str,
    runbook: str,
    environment: str,
    approver: str,
    already: Sequence[str] = (),
) -> Verdict:
    """Whether ``approver``'s approval counts toward ``gate`` for this runbook and environment.

    ``already`` are the people whose approvals were counted before: the same person twice
    does not make two approvers.
    """
    the_gate = policy.gate(gate)
    who = normal(approver)
    if not who:
        return Verdict(False, approver, None, "the form names no approver")
    if who in {normal(a) for a in already}:
        return Verdict(
            False, approver, None, f"{approver} already approved: {gate} needs a different person"
        )
    for role_name in the_gate.roles:
        role = policy.roles[role_name]
        if role.has(who) and role.covers(runbook, environment):
            return Verdict(True, approver, role_name, f"{approver} approves as {role_name}")
    held = policy.roles_of(who)
    why = (
        f"{approver} is not in the roles policy"
        if not held
        else f"{approver} holds {', '.join(held)}, which may not answer {gate}"
    )
    allowed = " or ".join(the_gate.roles)
    return Verdict(
        False,
        approver,
        None,
        f"{why}: {gate} of {runbook} in {environment} needs {allowed}",
    )


def still_needed(policy: RolesPolicy, gate: str, counted: Sequence[str]) -> int:
    """How many more different approvers ``gate`` needs after ``counted``."""
    return max(0, policy.gate(gate).approvers - len({normal(c) for c in counted}))


def who_may(policy: RolesPolicy, gate: str, runbook: str, environment: str) -> tuple[str, ...]:
    """The members whose approval would count (for the form's description), sorted."""
    the_gate = policy.gate(gate)
    return tuple(
        sorted(
            {
                m
                for r in the_gate.roles
                if policy.roles[r].covers(runbook, environment)
                for m in policy.roles[r].members
            }
        )
    )
