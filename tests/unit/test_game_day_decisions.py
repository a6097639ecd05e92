"""The game day's pure decisions: the request, the outcome of a fault, the result table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from decisions.alert_catalog import rules
from decisions.alert_labels import RUNBOOKS
from decisions.game_day import (
    ASKED,
    FAULTS,
    HANDLED,
    NOT_DETECTED,
    NOT_MITIGATED,
    NOT_TRIAGED,
    FaultResult,
    RunbookOutcome,
    alert_started,
    check_request,
    matching_alert,
    outcome,
    result_rows,
    seconds_after,
    summary,
)
from opsflows.errors import ConfigurationError

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def test_all_means_the_seven_faults_of_the_issue_in_order() -> None:
    plan = check_request("staging", ["all"], "", 600)
    assert plan.faults == tuple(FAULTS)
    assert len(plan.faults) == 7
    assert plan.faults[-1] == "crash-loop"  # the release-replacing fault last


def test_each_fault_names_a_runbook_the_alerts_carry_and_alerts_that_exist() -> None:
    names = {r.alert for r in rules()}
    for fault in FAULTS.values():
        assert fault.runbook in RUNBOOKS, fault
        assert set(fault.alerts) & names, f"{fault.name}: none of {fault.alerts} is a rule"


@pytest.mark.parametrize(
    ("env", "faults", "confirm", "timeout", "needle"),
    [
        ("staging", [], "", 600, "no fault chosen"),
        ("staging", ["disk-full", "meteor"], "", 600, "meteor"),
        ("staging", ["disk-full"], "", 5, "fault_timeout_s"),
        ("staging", ["disk-full"], "", 10_000, "fault_timeout_s"),
        ("", ["disk-full"], "", 600, "environment is empty"),
        ("production", ["disk-full"], "", 600, "typed confirmation"),
        ("production", ["all"], "yes", 600, "typed confirmation"),
    ],
)
def test_bad_requests_are_refused_naming_what_is_wrong(
    env: str, faults: list[str], confirm: str, timeout: float, needle: str
) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        check_request(env, faults, confirm, timeout)


def test_production_runs_only_with_the_word_typed() -> None:
    plan = check_request("production", ["pod-killed"], " production ", 600)
    assert (plan.environment, plan.faults) == ("production", ("pod-killed",))


def test_a_fault_named_twice_runs_once() -> None:
    assert check_request("staging", ["disk-full", "disk-full"], "", 600).faults == ("disk-full",)


def run(runbook: str, status: str | None, changed: bool, asked: bool = False) -> RunbookOutcome:
    return RunbookOutcome(runbook, status, "restart", changed, asked, T0)


def test_outcomes() -> None:
    fault = FAULTS["disk-full"]
    assert outcome(fault, None, [], False) == NOT_DETECTED
    assert outcome(fault, 7, [], False) == NOT_TRIAGED
    assert outcome(fault, 7, [run("service-down", "succeeded", True)], False) == NOT_TRIAGED
    assert outcome(fault, 7, [run("disk-full", "failed", False)], False) == NOT_MITIGATED
    assert outcome(fault, 7, [run("disk-full", "succeeded", False)], False) == NOT_MITIGATED
    assert outcome(fault, 7, [run("disk-full", "failed", False, asked=True)], False) == ASKED
    assert outcome(fault, 7, [run("disk-full", "succeeded", True)], False) == HANDLED
    assert outcome(fault, 7, [run("disk-full", "failed", False)], True) == HANDLED


def test_the_alert_and_when_it_started() -> None:
    alerts = (
        {"labels": {"alertname": "HostCpuHigh"}, "startsAt": "2026-12-01T09:59:00Z"},
        {"labels": {"alertname": "VolumeFull"}, "startsAt": "2026-12-01T10:00:42.5+00:00"},
    )
    assert matching_alert(FAULTS["disk-full"], alerts) == "VolumeFull"
    assert matching_alert(FAULTS["crash-loop"], alerts) is None
    started = alert_started(alerts, "VolumeFull")
    assert seconds_after(T0, started) == 42.5
    assert alert_started(alerts, "ServiceDown") is None
    assert alert_started([{"labels": {"alertname": "X"}, "startsAt": "soon"}], "X") is None
    assert seconds_after(T0, None) is None
    assert seconds_after(T0, T0 + timedelta(seconds=3.14)) == 3.1


def test_result_rows_and_summary() -> None:
    handled = FaultResult(
        "disk-full",
        "staging",
        T0,
        HANDLED,
        7,
        "VolumeFull",
        "disk-full",
        "clear logs",
        False,
        12.0,
        14.5,
        40.0,
        55.0,
        ("volume filled",),
    )
    missed = FaultResult("crash-loop", "staging", T0, NOT_DETECTED, notes=())
    rows = result_rows([handled, missed])
    assert rows[0]["mitigated_s"] == "40" and rows[0]["person asked"] == "no"
    assert rows[1] == {
        "fault": "crash-loop",
        "outcome": NOT_DETECTED,
        "incident": "-",
        "alert": "-",
        "runbook": "-",
        "action": "-",
        "person asked": "no",
        "alert_s": "-",
        "page_s": "-",
        "mitigated_s": "-",
        "resolved_s": "-",
        "notes": "-",
    }
    assert summary([handled, missed]) == "1/2 handled; crash-loop: not detected"
    assert summary([handled]) == "1/1 handled"
