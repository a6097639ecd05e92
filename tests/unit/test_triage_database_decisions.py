"""The database-slow runbook's pure decisions: culprits, the auto-kill policy, the sessions
never touched, the decision and its verification."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from decisions.triage_database import (
    DatabaseFacts,
    Session,
    Statement,
    classify,
    decide_database_slow,
    lock_chains,
    policy,
    untouchable,
)
from decisions.triage_database_checks import database_slow_checks, recovered, recovery_checks
from opsflows.errors import ConfigurationError

START = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
RULES = policy(idle_in_transaction_kill_min=1, long_query_s=30, probe_limit_ms=200)


def session(pid: int, **kw: object) -> Session:
    base = {
        "pid": pid,
        "backend_start": START,
        "role": "app",
        "superuser": False,
        "replication": False,
        "backend_type": "client backend",
        "state": "idle",
        "application": "report-job",
        "xact_age_s": None,
        "query_age_s": 1.0,
        "state_age_s": 1.0,
        "wait": None,
        "query": "SELECT 1",
    }
    base.update(kw)
    return Session(**base)  # type: ignore[arg-type]


def idle_xact(pid: int, idle_s: float, **kw: object) -> Session:
    defaults: dict[str, object] = {
        "state": "idle in transaction",
        "xact_age_s": idle_s + 1,
        "state_age_s": idle_s,
        "query": "UPDATE accounts SET balance = 0",
    }
    defaults.update(kw)
    return session(pid, **defaults)


def waiting(pid: int, on: int, age_s: float = 100.0) -> Session:
    return session(
        pid, state="active", query_age_s=age_s, xact_age_s=age_s, wait="Lock", blocked_by=(on,)
    )


def facts(*sessions: Session, probe_ms: float | None = 2.0) -> DatabaseFacts:
    return DatabaseFacts("staging", "app", tuple(sessions), (), probe_ms)


def test_lock_chains_name_the_head_and_every_waiter_down_the_chain() -> None:
    # 10 blocks 11, 11 blocks 12; 20 blocks 21 and 22
    rows = [
        session(10),
        waiting(11, 10),
        waiting(12, 11),
        session(20),
        waiting(21, 20),
        waiting(22, 20),
    ]
    assert lock_chains(rows) == {10: (11, 12), 20: (21, 22)}
    assert lock_chains([session(1), session(2)]) == {}


def test_idle_in_transaction_past_the_policy_is_killed_without_asking() -> None:
    decision = decide_database_slow(facts(idle_xact(10, 90), waiting(11, 10)), RULES)
    assert decision.action == "terminate"
    assert [t.session.pid for t in decision.auto_kill] == [10]
    assert not decision.ask and not decision.refused
    assert "blocks 1 session(s) (pid 11)" in decision.auto_kill[0].why
    assert "auto-kill policy" in decision.auto_kill[0].rule


def test_idle_in_transaction_past_the_policy_is_killed_even_when_it_blocks_nobody() -> None:
    decision = decide_database_slow(facts(idle_xact(10, 61)), RULES)
    assert [t.session.pid for t in decision.auto_kill] == [10]


def test_a_young_idle_transaction_that_blocks_needs_a_person() -> None:
    decision = decide_database_slow(facts(idle_xact(10, 59), waiting(11, 10)), RULES)
    assert not decision.auto_kill and [t.session.pid for t in decision.ask] == [10]


def test_a_long_active_query_that_blocks_needs_a_person() -> None:
    blocker = session(10, state="active", query_age_s=45, xact_age_s=45, query="SELECT pg_sleep")
    decision = decide_database_slow(facts(blocker, waiting(11, 10)), RULES)
    assert decision.action == "terminate"
    assert [t.session.pid for t in decision.ask] == [10] and not decision.auto_kill
    assert "one statement running for 45 s" in decision.ask[0].why


def test_the_sessions_waiting_on_a_lock_are_victims_not_culprits() -> None:
    targets = classify([session(10, state="idle in transaction"), waiting(11, 10, 500)], RULES)
    assert [t.session.pid for t in targets] == [10]


def test_a_quiet_database_needs_nothing() -> None:
    decision = decide_database_slow(facts(session(10), idle_xact(11, 5)), RULES)
    assert decision.action == "none" and not decision.keys


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"superuser": True, "role": "postgres"}, "superuser"),
        ({"replication": True}, "replication"),
        ({"backend_type": "walsender"}, "replication"),
        ({"backend_type": "autovacuum worker"}, "not a client session"),
        ({"ours": True}, "our own connection"),
        ({"application": "opsflows"}, "opsflows runbook"),
    ],
)
def test_untouchable_sessions_are_refused_even_past_the_auto_kill_policy(
    kw: dict[str, object], why: str
) -> None:
    head = idle_xact(10, 3600, **kw)
    assert why in (untouchable(head) or "")
    decision = decide_database_slow(facts(head, waiting(11, 10)), RULES)
    assert decision.action == "escalate" and not decision.auto_kill and not decision.ask
    assert [t.session.pid for t in decision.refused] == [10]
    assert why in decision.reason
    assert not decision.keys  # never offered for a kill


def test_a_refused_head_does_not_stop_the_kill_of_another_culprit() -> None:
    rows = [idle_xact(10, 3600, superuser=True), waiting(11, 10), idle_xact(20, 120)]
    decision = decide_database_slow(facts(*rows), RULES)
    assert decision.action == "terminate"
    assert [t.session.pid for t in decision.auto_kill] == [20]
    assert [t.session.pid for t in decision.refused] == [10]


def test_slow_without_a_culprit_escalates_and_unreadable_sessions_escalate() -> None:
    assert decide_database_slow(facts(session(1), probe_ms=900), RULES).action == "escalate"
    assert decide_database_slow(facts(session(1), probe_ms=None), RULES).action == "escalate"
    unread = DatabaseFacts("staging", "app", None, None, 1.0, errors=(("sessions", "refused"),))
    decision = decide_database_slow(unread, RULES)
    assert decision.action == "escalate" and "refused" in decision.reason


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((0, 30, 200), "idle_in_transaction_kill_min"),
        ((1, -1, 200), "long_query_s"),
        ((1, 30, 0), "probe_limit_ms"),
    ],
)
def test_the_policy_refuses_bad_limits_naming_them(args: tuple[float, ...], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        policy(*args)


def test_the_checklist_records_the_evidence() -> None:
    rows = (idle_xact(10, 90), waiting(11, 10))
    seen = replace(
        facts(*rows),
        statements=(Statement(3, 40_000.0, 120_000.0, "SELECT slow()"),),
        cpu=0.95,
        memory=0.2,
    )
    decision = decide_database_slow(seen, RULES)
    items = {c.item: c for c in database_slow_checks(seen, RULES, decision)}
    assert items["database host CPU"].result == "fail"
    assert items["database host memory"].result == "pass"
    assert items["slowest statements"].result == "fail"
    assert "SELECT slow()" in items["slowest statements"].evidence
    assert items["lock chains"].result == "fail"
    assert (
        "pid 10" in items["lock chains"].evidence
        and "blocks pid 11" in items["lock chains"].evidence
    )
    assert items["long-running transactions"].result == "fail"
    assert items["probe query"].result == "pass"
    assert "auto-kill" in items["sessions to end"].evidence
    unknown = DatabaseFacts("staging", "app", None, None, None, errors=(("cpu", "no data"),))
    items = {
        c.item: c
        for c in database_slow_checks(unknown, RULES, decide_database_slow(unknown, RULES))
    }
    assert (
        items["database host CPU"].result == "unknown" and items["lock chains"].result == "unknown"
    )


def test_recovery_needs_the_chain_gone_and_the_probe_in_time() -> None:
    ended = [idle_xact(10, 90).key]
    ok = recovery_checks([session(11)], ended, 3.0, RULES, None, 0.5, "no data")
    assert recovered(ok)
    assert {c.item: c.result for c in ok}["p95 latency (Prometheus)"] == "unknown"
    still = recovery_checks([idle_xact(10, 90), waiting(11, 10)], ended, 3.0, RULES, None, 0.5)
    assert not recovered(still)
    assert {c.item: c.result for c in still}["terminated sessions gone"] == "fail"
    assert not recovered(recovery_checks([session(11)], ended, 900.0, RULES, None, 0.5))
    assert not recovered(recovery_checks([session(11)], ended, 3.0, RULES, 2.0, 0.5))
    assert not recovered(recovery_checks(None, ended, 3.0, RULES, None, 0.5))


def test_query_texts_are_shown_without_their_string_literals() -> None:
    leaky = session(10, query="ALTER ROLE app PASSWORD 'hunter2'; SELECT 'it''s'")
    assert "hunter2" not in leaky.describe() and "it''s" not in leaky.describe()
    assert "ALTER ROLE app PASSWORD '?'" in leaky.describe()
    cut = session(11, query="SELECT * FROM t WHERE secret = 'abc")
    assert "abc" not in cut.describe()
