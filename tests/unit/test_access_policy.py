"""The roles policy: who may answer which approval gate (decisions/access.py, policy/roles.yaml)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from decisions.access import judge, parse_policy, still_needed, who_may
from opsflows.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "policy" / "roles.yaml"


def _policy(**gates: Any) -> Any:
    return parse_policy(
        {
            "roles": {
                "on-call": {
                    "runbooks": ["staged-deploy", "database-slow"],
                    "environments": ["staging", "production"],
                    "members": ["Alice", "bob"],
                },
                "devops": {"runbooks": ["*"], "environments": ["*"], "members": ["dave"]},
                "dba": {
                    "runbooks": ["restore-database"],
                    "environments": ["production"],
                    "members": ["dana", "erin"],
                },
            },
            "gates": gates
            or {
                "promote-production": {"roles": ["on-call", "devops"]},
                "replace-live-database": {"roles": ["dba"], "approvers": 2},
            },
        }
    )


def test_a_member_of_a_listed_role_covering_the_runbook_counts() -> None:
    policy = _policy()
    verdict = judge(policy, "promote-production", "staged-deploy", "production", " alice ")
    assert verdict.counts and verdict.role == "on-call"
    assert judge(policy, "promote-production", "hotfix", "production", "dave").role == "devops"


def test_an_outsider_and_a_role_not_listed_are_refused_with_the_reason() -> None:
    policy = _policy()
    outsider = judge(policy, "promote-production", "staged-deploy", "production", "mallory")
    assert not outsider.counts
    assert "mallory is not in the roles policy" in outsider.why
    assert "needs on-call or devops" in outsider.why
    dba = judge(policy, "promote-production", "staged-deploy", "production", "dana")
    assert not dba.counts and "holds dba, which may not answer promote-production" in dba.why


def test_a_role_must_cover_the_runbook_and_the_environment() -> None:
    policy = _policy()
    # on-call may not act on hotfix here (not in its runbooks); the dba only in production.
    assert not judge(policy, "promote-production", "hotfix", "production", "bob").counts
    assert not judge(policy, "replace-live-database", "restore-database", "staging", "dana").counts
    assert judge(policy, "replace-live-database", "restore-database", "production", "dana").counts


def test_two_approvers_must_be_different_people() -> None:
    policy = _policy()
    gate = "replace-live-database"
    assert still_needed(policy, gate, []) == 2
    assert still_needed(policy, gate, ["dana"]) == 1
    again = judge(policy, gate, "restore-database", "production", "DANA", already=["dana"])
    assert not again.counts and "already approved" in again.why
    assert judge(policy, gate, "restore-database", "production", "erin", ["dana"]).counts
    assert still_needed(policy, gate, ["dana", "erin"]) == 0
    assert who_may(policy, gate, "restore-database", "production") == ("dana", "erin")


@pytest.mark.parametrize(
    ("gates", "said"),
    [
        ({"g": {"roles": ["nobody"]}}, "unknown roles"),
        ({"g": {"roles": []}}, "names no roles"),
        ({"g": {"roles": ["devops"], "approvers": 2}}, "could never be approved"),
        ({"g": {"roles": ["dba"], "approvers": 0}}, "whole number"),
    ],
)
def test_a_gate_nobody_could_open_is_refused_when_the_policy_is_read(
    gates: dict[str, Any], said: str
) -> None:
    with pytest.raises(ConfigurationError, match=said):
        _policy(**gates)


def test_a_gate_holds_in_its_environments_only() -> None:
    everywhere = _policy(g={"roles": ["dba"]}).gate("g")
    assert everywhere.applies("staging") and everywhere.applies("migtest-1")
    prod = _policy(g={"roles": ["dba"], "environments": ["Production"]}).gate("g")
    assert prod.applies("production") and not prod.applies("staging")
    with pytest.raises(ConfigurationError, match="gates.g.environments must be a list"):
        _policy(g={"roles": ["dba"], "environments": "production"})


def test_unknown_gate_and_malformed_policy_say_what_to_fix() -> None:
    with pytest.raises(ConfigurationError, match="no gate 'nope'"):
        judge(_policy(), "nope", "staged-deploy", "production", "alice")
    with pytest.raises(ConfigurationError, match="unknown keys"):
        parse_policy({"roles": {"a": {"members": ["x"]}}, "gaets": {}})
    with pytest.raises(ConfigurationError, match="not a valid name"):
        parse_policy({"roles": {"a": {"members": ["x y"]}}})
    with pytest.raises(ConfigurationError, match="list of names"):
        parse_policy({"roles": {"a": {"members": "alice"}}})


def _flow_names() -> set[str]:
    names: set[str] = set()
    for path in [*(REPO / "flows").glob("*.py"), *(REPO / "procedures").glob("*.py")]:
        names.update(re.findall(r'@flow\(\s*name="([a-z0-9-]+)"', path.read_text()))
    return names


def _gates_in_code() -> set[str]:
    found: set[str] = set()
    for folder in ("flows", "procedures"):
        for path in (REPO / folder).glob("*.py"):
            found.update(re.findall(r'\bgate="([a-z0-9-]+)"', path.read_text()))
            found.update(re.findall(r'^GATE = "([a-z0-9-]+)"', path.read_text(), re.MULTILINE))
    return found


def test_the_shipped_policy_names_real_runbooks_and_every_gate_the_code_asks() -> None:
    policy = parse_policy(yaml.safe_load(POLICY.read_text()))
    flows = _flow_names()
    named = {r for role in policy.roles.values() for r in role.runbooks} - {"*"}
    assert named <= flows, f"policy names runbooks that do not exist: {named - flows}"
    asked = _gates_in_code()
    assert asked, "the runbooks ask at least one gate"
    assert asked <= set(policy.gates), (
        f"gates asked but not in the policy: {asked - set(policy.gates)}"
    )
    # The seed's rules: promotion by on-call or DevOps, a live replace by two DBAs.
    assert set(policy.gate("promote-production").roles) == {"on-call", "devops"}
    live = policy.gate("replace-live-database")
    assert (live.roles, live.approvers) == (("dba",), 2)
    # The schema is changed by a DBA, in production; staging migrations are not held.
    schema = policy.gate("change-schema")
    assert schema.roles == ("dba",) and "change-schema" in asked
    assert schema.applies("production") and not schema.applies("staging")


def test_every_runbook_that_replaces_a_live_database_can_be_approved() -> None:
    """Each flow asking the replace-live gate (directly or through procedures/replace_live)
    has enough DBAs covering it: a runbook the policy forgot waits until its timeout."""
    policy = parse_policy(yaml.safe_load(POLICY.read_text()))
    gate = policy.gate("replace-live-database")
    asking = set()
    for path in (REPO / "flows").glob("*.py"):
        text = path.read_text()
        if "await_replace_approval" in text:
            asking.update(re.findall(r'@flow\(\s*name="([a-z0-9-]+)"', text))
    assert {"restore-database", "restore-to-time"} <= asking
    for runbook in sorted(asking):
        allowed = who_may(policy, "replace-live-database", runbook, "production")
        assert len(allowed) >= gate.approvers, f"{runbook}: only {allowed} may approve"
