"""The rotation state machine, role choice, grant parity and recovery plan (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from decisions import rotation as r
from opsflows.errors import ConfigurationError

TOKEN = "11111111-2222-4333-8444-555555555555"
OLD = "00000000-0000-4000-8000-000000000000"
STRAY = "99999999-9999-4999-8999-999999999999"


def labels(**versions: tuple[str, ...]) -> r.Labels:
    names = {"mine": TOKEN, "old": OLD, "stray": STRAY}
    return r.Labels.of({names[k]: v for k, v in versions.items()})


def decide(lab: r.Labels, **seen: bool | None) -> r.Decision:
    return r.next_step(r.Observed(lab, TOKEN, **seen))


def test_a_fresh_rotation_walks_the_protocol_in_order() -> None:
    start = labels(old=(r.CURRENT,))
    assert decide(start).step is r.Step.CREATE_PENDING
    pending = labels(old=(r.CURRENT,), mine=(r.PENDING,))
    assert decide(pending).step is r.Step.SET_PASSWORD
    assert decide(pending, password_set=False).step is r.Step.SET_PASSWORD
    assert decide(pending, password_set=True).step is r.Step.TEST
    tested = {"password_set": True, "login_ok": True}
    assert decide(pending, **tested).step is r.Step.SWITCH_CONSUMERS
    assert decide(pending, **tested, consumers_switched=False).step is r.Step.SWITCH_CONSUMERS
    assert decide(pending, **tested, consumers_switched=True).step is r.Step.FINISH
    finished = labels(old=(r.PREVIOUS,), mine=(r.CURRENT,))
    assert decide(finished).step is r.Step.DONE


def test_a_crash_between_the_two_label_moves_resumes_at_finish() -> None:
    half = labels(old=(r.PREVIOUS,), mine=(r.CURRENT, r.PENDING))
    assert decide(half).step is r.Step.FINISH


def test_a_failed_login_test_aborts() -> None:
    pending = labels(old=(r.CURRENT,), mine=(r.PENDING,))
    decision = decide(pending, password_set=True, login_ok=False)
    assert decision.step is r.Step.ABORT
    assert "login" in decision.reason


def test_a_stray_pending_of_another_rotation_is_superseded_not_fatal() -> None:
    decision = decide(labels(old=(r.CURRENT,), stray=(r.PENDING,)))
    assert decision.step is r.Step.CREATE_PENDING
    assert decision.superseded == STRAY


@pytest.mark.parametrize(("left", "why"), [((r.PREVIOUS,), "later rotation"), ((), "superseded")])
def test_an_old_rotation_that_is_no_longer_pending_is_done(left: tuple[str, ...], why: str) -> None:
    decision = decide(labels(old=(r.CURRENT,), mine=left))
    assert decision.step is r.Step.DONE
    assert why in decision.reason


def test_a_secret_without_awscurrent_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no AWSCURRENT"):
        decide(labels(mine=(r.PENDING,)))


def test_labels_lookups() -> None:
    lab = labels(old=(r.PREVIOUS,), mine=(r.CURRENT,), stray=(r.PENDING,))
    assert (lab.current, lab.previous, lab.pending) == (TOKEN, OLD, STRAY)
    assert lab.labels_of("nope") is None
    assert r.Labels().current is None


def test_values_are_frozen() -> None:
    obs = r.Observed(labels(old=(r.CURRENT,)), TOKEN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        obs.token = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("strategy", "current", "target"),
    [
        (r.Strategy.SINGLE_USER, "app", "app"),
        (r.Strategy.SINGLE_USER, "app_clone", "app_clone"),
        (r.Strategy.ALTERNATING_USERS, "app", "app_clone"),
        (r.Strategy.ALTERNATING_USERS, "app_clone", "app"),
    ],
)
def test_the_new_password_goes_to_the_role_not_in_use_when_alternating(
    strategy: r.Strategy, current: str, target: str
) -> None:
    assert r.target_role(strategy, current) == target


@pytest.mark.parametrize("bad", ["App", "x; DROP ROLE app", "", "a" * 60])
def test_role_names_that_cannot_be_rotated_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        r.target_role(r.Strategy.ALTERNATING_USERS, bad)


def test_strategy_names_are_checked() -> None:
    assert r.parse_strategy("alternating_users") is r.Strategy.ALTERNATING_USERS
    with pytest.raises(ConfigurationError, match="single_user, alternating_users"):
        r.parse_strategy("dual")


def test_the_token_is_stable_per_rotation_and_differs_between_rotations() -> None:
    a = r.rotation_token("opsflows/app/db", "2025-11")
    assert a == r.rotation_token("opsflows/app/db", "2025-11")
    assert a != r.rotation_token("opsflows/app/db", "2025-12")
    assert a != r.rotation_token("other", "2025-11")
    assert r.check_token(a) == a
    with pytest.raises(ConfigurationError):
        r.check_token("short")
    with pytest.raises(ConfigurationError):
        r.rotation_token("opsflows/app/db", " ")


def test_grant_parity_names_what_each_side_lacks() -> None:
    same = [("table", "public.t", "SELECT"), ("member", "readers", "")]
    assert r.grant_parity("app", same, "app_clone", same).equal
    parity = r.grant_parity(
        "app", [*same, ("table", "public.t", "INSERT")], "app_clone", [*same, ("schema", "x", "")]
    )
    assert not parity.equal
    assert parity.only_role == {("table", "public.t", "INSERT")}
    assert "only app has table:public.t:INSERT" in parity.summary()
    assert "only app_clone has schema:x" in parity.summary()


def test_the_clone_links_to_its_role_are_not_differences() -> None:
    same = [("table", "public.t", "SELECT")]
    links = [("member", "app", ""), ("setting", "role=app", "")]
    assert r.clone_is_linked("app", [*same, *links])
    assert not r.clone_is_linked("app", [*same, ("member", "app", "")])  # no SET ROLE
    assert not r.clone_is_linked("app", [*same, ("setting", "role=other", ""), links[0]])
    assert r.grant_parity("app", same, "app_clone", [*same, *links]).equal
    # the same links on the role's side are differences (the role is no member of itself)
    assert not r.grant_parity("app", [*same, *links], "app_clone", same).equal


def test_the_summary_is_bounded() -> None:
    many = [("table", f"public.t{i}", "SELECT") for i in range(20)]
    assert "(+12 more)" in r.grant_parity("a", many, "a_clone", []).summary()


@pytest.mark.parametrize(
    ("strategy", "failed", "moved", "password", "consumers"),
    [
        (r.Strategy.SINGLE_USER, r.Step.CREATE_PENDING, False, False, False),
        (r.Strategy.SINGLE_USER, r.Step.SET_PASSWORD, False, True, False),
        (r.Strategy.SINGLE_USER, r.Step.TEST, False, True, False),
        (r.Strategy.SINGLE_USER, r.Step.SWITCH_CONSUMERS, False, True, True),
        (r.Strategy.SINGLE_USER, r.Step.FINISH, False, True, True),
        (r.Strategy.SINGLE_USER, r.Step.FINISH, True, False, False),
        (r.Strategy.SINGLE_USER, r.Step.FINISH, None, False, False),
        (r.Strategy.ALTERNATING_USERS, r.Step.SET_PASSWORD, False, False, False),
        (r.Strategy.ALTERNATING_USERS, r.Step.SWITCH_CONSUMERS, False, False, True),
        (r.Strategy.ALTERNATING_USERS, r.Step.FINISH, False, False, True),
    ],
)
def test_recovery_restores_what_would_leave_awscurrent_broken(
    strategy: r.Strategy, failed: r.Step, moved: bool | None, password: bool, consumers: bool
) -> None:
    plan = r.recovery(strategy, failed, moved)
    assert (plan.restore_password, plan.restore_consumers) == (password, consumers)
    assert plan.reason


def test_an_unknown_finish_outcome_asks_for_a_rerun_instead_of_guessing() -> None:
    assert "rerun" in r.recovery(r.Strategy.SINGLE_USER, r.Step.FINISH, None).reason
