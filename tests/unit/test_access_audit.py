"""The access audit's pure comparisons (decisions/access_audit.py, access_expectations.py).

The committed policy and the simulator's seeded RBAC are audited together here: a clean
cluster must produce no finding, so the seed and ``policy/roles.yaml`` cannot drift apart.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from decisions.access import parse_policy
from decisions.access_audit import (
    AccessFacts,
    Binding,
    CredentialBlock,
    KubeRbac,
    PgRole,
    SecretAge,
    Subject,
    audit,
    judge_blocks,
    judge_pg_roles,
    judge_rbac,
    judge_secrets,
    password_ages,
)
from decisions.access_expectations import parse_expectations
from opsflows.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((REPO / "policy" / "roles.yaml").read_text())
POLICY = parse_policy(RAW)
EXPECT = parse_expectations(RAW, POLICY)
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)

#: The stack's own roles as devstack/postgres.py creates them.
STACK_ROLES = (
    PgRole(
        "postgres",
        True,
        frozenset({"superuser", "createrole", "createdb", "replication", "bypassrls"}),
    ),
    PgRole("app", True, grants=("CONNECT", "TEMPORARY", "owns 2 tables")),
    PgRole("opsflows", True),
    PgRole("prefect", True),
    PgRole("opsflows_monitor", True, member_of=("pg_monitor",)),
    PgRole("pg_monitor", False),
    PgRole("pg_read_all_data", False),
)


def seeded_rbac() -> KubeRbac:
    """The RBAC the simulator's default seed creates, read from its registry."""
    from devstack.kubesim import Simulator

    sim = Simulator()
    reg = sim.registry
    from devstack.kubesim.rbac import CLUSTERROLEBINDINGS, ROLEBINDINGS, SERVICEACCOUNTS

    def binding(item: dict[str, Any]) -> Binding:
        ref = item["roleRef"]
        return Binding(
            item["metadata"]["name"],
            item["metadata"].get("namespace", ""),
            f"{ref['kind']}/{ref['name']}",
            tuple(
                Subject(s["kind"], s["name"], s.get("namespace", ""))
                for s in item.get("subjects") or []
            ),
        )

    accounts = reg.list(SERVICEACCOUNTS, None)["items"]
    return KubeRbac(
        tuple((a["metadata"]["namespace"], a["metadata"]["name"]) for a in accounts),
        tuple(
            binding(b)
            for rtype in (ROLEBINDINGS, CLUSTERROLEBINDINGS)
            for b in reg.list(rtype, None)["items"]
        ),
    )


def clean_facts() -> AccessFacts:
    return AccessFacts(
        STACK_ROLES,
        seeded_rbac(),
        (SecretAge("opsflows/app/db", NOW - timedelta(days=3), NOW - timedelta(days=3), None),),
        (
            CredentialBlock("opsflows-postgres-target/app-db", "Postgres Target", ("password",)),
            CredentialBlock("custom-webhook/page", "Custom Webhook", ("secrets.*",)),
        ),
    )


def test_the_seeded_cluster_and_the_stack_roles_match_the_committed_policy() -> None:
    facts = clean_facts()
    assert len(facts.rbac.bindings) >= 9 and ("staging", "deployer") in facts.rbac.service_accounts
    assert audit(facts, EXPECT, POLICY, NOW) == ()


def test_an_extra_superuser_and_an_unknown_login_role_are_drift() -> None:
    roles = (
        *STACK_ROLES,
        PgRole("mallory", True, frozenset({"superuser"})),
        PgRole("intern", True),
        PgRole("reporting", False),  # a NOLOGIN group role is not a login
    )
    found = {(f.subject, f.problem) for f in judge_pg_roles(roles, EXPECT, POLICY)}
    assert ("mallory", "superuser not expected (neither a service role nor a policy member)") in (
        found
    )
    assert ("intern", "login role not expected (neither a service role nor a policy member)") in (
        found
    )
    assert len(found) == 2


def test_an_expected_role_with_more_than_it_may_hold_is_drift() -> None:
    roles = (
        PgRole("app", True, frozenset({"createrole", "superuser"})),
        PgRole("dana", True),  # a policy member's own login role
        PgRole("erin", True, frozenset({"createdb"})),
        PgRole("opsflows", True, member_of=("pg_write_server_files",)),
    )
    found = judge_pg_roles(roles, EXPECT, POLICY)
    problems = {f.subject: f.problem for f in found}
    assert problems == {
        "app": "holds createrole, superuser it should not",
        "erin": "holds createdb it should not",
        "opsflows": "member of pg_write_server_files, not expected",
    }
    app = next(f for f in found if f.subject == "app")
    assert "NOCREATEROLE NOSUPERUSER" in app.recommendation and "SUPERUSER" in app.evidence


def test_the_clone_of_a_service_role_is_its_rotation_pair_not_drift() -> None:
    """After an alternating rotation ``app_clone`` logs in as a member of ``app``; a clone of
    someone else, or a clone holding more than its role, is still drift."""
    roles = (
        *STACK_ROLES,
        PgRole("app_clone", True, member_of=("app",)),
        PgRole("intern_clone", True),
        PgRole("opsflows_clone", True, frozenset({"createrole"}), member_of=("opsflows",)),
    )
    problems = {(f.subject, f.problem) for f in judge_pg_roles(roles, EXPECT, POLICY)}
    assert problems == {
        ("intern_clone", "login role not expected (neither a service role nor a policy member)"),
        ("opsflows_clone", "holds createrole it should not"),
    }
    facts = AccessFacts(
        (PgRole("app_clone", True),), KubeRbac((), ()),
        (SecretAge("opsflows/app/db", None, NOW - timedelta(days=3), None),), (),
    )  # fmt: skip
    assert password_ages(facts, EXPECT, NOW)["app_clone"].startswith("3 days (secret opsflows")


def _with(rbac: KubeRbac, *bindings: Binding) -> KubeRbac:
    return KubeRbac(rbac.service_accounts, (*rbac.bindings, *bindings))


def test_a_binding_to_an_unknown_user_is_drift() -> None:
    rbac = _with(
        seeded_rbac(),
        Binding("debug", "production", "ClusterRole/opsflows-admin", (Subject("User", "eve"),)),
    )
    found = judge_rbac(rbac, EXPECT, POLICY)
    assert [(f.subject, f.problem) for f in found] == [
        ("User/eve", "not a member of the roles policy")
    ]
    assert "RoleBinding production/debug -> ClusterRole/opsflows-admin" == found[0].evidence


def test_a_member_bound_to_more_than_the_policy_gives_is_drift() -> None:
    rbac = _with(
        seeded_rbac(),
        Binding("dba-admin", "staging", "ClusterRole/opsflows-admin", (Subject("User", "dana"),)),
        Binding("cluster-dave", "", "ClusterRole/cluster-admin", (Subject("User", "dave"),)),
        Binding("other", "staging", "Role/deployer", (Subject("ServiceAccount", "ci", "staging"),)),
    )
    found = {f.subject: f.problem for f in judge_rbac(rbac, EXPECT, POLICY)}
    assert found["User/dana"].startswith("bound to ClusterRole/opsflows-admin in staging: more")
    assert "ClusterRole/opsflows-viewer" in found["User/dana"]
    assert found["User/dave"] == "bound cluster-wide: more than the policy allows anyone"
    assert found["ServiceAccount/staging:ci"] == (
        "ServiceAccount bound to Role/deployer, not expected"
    )


def test_a_namespace_outside_the_members_environments_is_drift() -> None:
    policy_raw = copy.deepcopy(RAW)
    policy_raw["roles"]["dba"]["environments"] = ["production"]
    policy = parse_policy(policy_raw)
    found = judge_rbac(seeded_rbac(), parse_expectations(policy_raw, policy), policy)
    assert {(f.subject, f.evidence) for f in found} == {
        ("User/dana", "RoleBinding staging/dba -> ClusterRole/opsflows-viewer"),
        ("User/erin", "RoleBinding staging/dba -> ClusterRole/opsflows-viewer"),
    }


def test_a_missing_deployer_account_or_binding_is_drift() -> None:
    rbac = seeded_rbac()
    stripped = KubeRbac(
        tuple(a for a in rbac.service_accounts if a != ("staging", "deployer")),
        tuple(b for b in rbac.bindings if (b.namespace, b.name) != ("production", "deployer")),
    )
    found = {(f.subject, f.problem) for f in judge_rbac(stripped, EXPECT, POLICY)}
    assert found == {
        ("ServiceAccount/staging:deployer", "expected ServiceAccount missing"),
        ("ServiceAccount/production:deployer", "not bound to Role/deployer"),
    }


def test_a_secret_not_rotated_for_40_days_is_overdue() -> None:
    old = NOW - timedelta(days=40)
    secrets = (
        SecretAge("stale", old - timedelta(days=100), old, old),
        SecretAge("rotated", old, old, NOW - timedelta(days=30)),  # RotateSecret: recent
        SecretAge("changed", old, NOW - timedelta(days=2), old),  # the four steps changed it
        SecretAge("new", NOW - timedelta(days=1), None, None),
        SecretAge("created-long-ago", old, None, None),
    )
    found = judge_secrets(secrets, EXPECT, NOW)
    assert [(f.subject, f.problem) for f in found] == [
        ("stale", "not rotated for 40 days (over 35)"),
        ("created-long-ago", "not rotated for 40 days (over 35)"),
    ]
    assert "LastRotatedDate 2026-10-23" in found[0].evidence


def test_a_credential_block_not_expected_is_drift() -> None:
    blocks = (
        CredentialBlock("secret/webhook-secret", "Secret", ("value",)),
        CredentialBlock("custom-webhook/anything", "Custom Webhook", ("secrets.*",)),
        CredentialBlock("secret/leftover-token", "Secret", ("value",)),
    )
    found = judge_blocks(blocks, EXPECT)
    assert [f.subject for f in found] == ["secret/leftover-token"]
    assert "value" in found[0].evidence


def test_password_age_comes_from_the_secret_or_is_unknown() -> None:
    facts = AccessFacts(
        (
            PgRole("app", True),
            PgRole("opsflows", True, valid_until=datetime(2027, 1, 1, tzinfo=UTC)),
        ),
        KubeRbac((), ()),
        (SecretAge("opsflows/app/db", None, NOW - timedelta(days=12), None),),
        (),
    )
    ages = password_ages(facts, EXPECT, NOW)
    assert ages["app"] == "12 days (secret opsflows/app/db); valid until no expiry"
    assert ages["opsflows"].startswith("unknown (PostgreSQL keeps no date); valid until 2027-01-01")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("postgres", "service_roles", "app", "attributes"), ["god"], "unknown ['god']"),
        (("kubernetes", "member_roles"), {"auditors": "ClusterRole/x"}, "roles the policy lacks"),
        (("kubernetes", "service_accounts"), {"ci": "deployer"}, "is not Role/<name>"),
        (("secrets", "max_age_days"), 0, "positive number"),
        (("credential_blocks",), "secret/x", "must be a list"),
    ],
)
def test_a_malformed_audit_section_says_what_is_wrong(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    raw = copy.deepcopy(RAW)
    node = raw["audit"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_expectations(raw, POLICY)


def test_a_policy_without_an_audit_section_is_refused() -> None:
    raw = {k: v for k, v in RAW.items() if k != "audit"}
    with pytest.raises(ConfigurationError, match="no audit: section"):
        parse_expectations(raw, parse_policy(raw))
