"""The triage checklist and the service-down decision, without services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from decisions.deploy_history import (
    DeployRecord,
    abandoned_revisions,
    oplog_deploy,
    recent_deploys,
    rollback_target,
)
from decisions.releases import RevisionRecord
from decisions.triage import (
    Check,
    PodFacts,
    ServiceDownFacts,
    alert_check,
    artifact_key,
    check_window,
    checklist_markdown,
    checklist_rows,
    decide_service_down,
    escalation_page,
    service_down_checks,
    summary,
    verdict,
)
from opsflows.errors import ConfigurationError

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GOOD, BAD = "registry.local/web-app:1.0.0", "registry.local/web-app:1.1.0-crashloop"


def pod(name: str = "web-1", ready: bool = True, **kw: object) -> PodFacts:
    return PodFacts(name=name, phase="Running", ready=ready, image=GOOD, **kw)  # type: ignore[arg-type]


def rev(n: int, image: str, ago_h: float = 48, earlier: tuple[int, ...] = ()) -> RevisionRecord:
    created = NOW - timedelta(hours=ago_h)
    return RevisionRecord(
        n, image, f"web-app-{n}", 0, created_at=created, earlier_revisions=earlier
    )


def facts(**kw: object) -> ServiceDownFacts:
    base: dict[str, object] = dict(
        environment="staging",
        healthy=False,
        pods=(pod(), pod("web-2")),
        database_up=True,
        current_revision=2,
        current_image=GOOD,
    )
    return ServiceDownFacts(**{**base, **kw})  # type: ignore[arg-type]


# --- checklist ---------------------------------------------------------------------------


def test_checklist_rows_markdown_and_verdict() -> None:
    checks = [
        Check("pods Ready", True, "3/3"),
        Check("database up", False, "refused | down"),
        Check("alerts", None, "Prometheus did not answer"),
    ]
    assert [r["result"] for r in checklist_rows(checks)] == ["pass", "fail", "unknown"]
    table = checklist_markdown("service-down", checks)
    assert "| database up | fail | refused \\| down |" in table
    assert verdict(checks) == "fail"
    assert verdict(checks[::2]) == "unknown"
    assert verdict(checks[:1]) == "pass"
    assert summary(checks).startswith("1/3 pass; database up: refused | down")


def test_artifact_key_is_a_valid_key() -> None:
    assert artifact_key("service-down", "staging") == "triage-service-down-staging"
    assert artifact_key("service-down", "EU West_1") == "triage-service-down-eu-west-1"


@pytest.mark.parametrize("hours", [0, -1, 24 * 7 + 1])
def test_a_deploy_window_outside_bounds_is_refused(hours: float) -> None:
    with pytest.raises(ConfigurationError, match="deploy_window_h"):
        check_window(hours)


def test_alert_check_names_the_environments_firing_alerts_only() -> None:
    alerts = [
        {
            "labels": {"alertname": "ServiceDown", "severity": "P1", "environment": "staging"},
            "state": "firing",
        },
        {"labels": {"alertname": "OnePodDown", "environment": "staging"}, "state": "pending"},
        {"labels": {"alertname": "ServiceDown", "environment": "production"}, "state": "firing"},
    ]
    found = alert_check(alerts, "staging")
    assert found.passed is False and found.evidence == "ServiceDown (P1)"
    assert alert_check(alerts, "qa").passed is True
    assert alert_check(None, "staging").passed is None


# --- recent deploys and the rollback target ---------------------------------------------


def test_oplog_rows_say_which_environment_a_deploy_changed() -> None:
    staged = {
        "operation": "staged deploy",
        "status": "failed",
        "finished_at": NOW,
        "details": {"image": BAD},
    }
    assert oplog_deploy(staged, "staging") is not None
    assert oplog_deploy(staged, "production") is None  # stopped before production
    promoted = {**staged, "details": {"image": BAD, "production_started_at": 1.0}}
    assert oplog_deploy(promoted, "production") is not None
    hotfix = {
        "operation": "hotfix",
        "status": "succeeded",
        "finished_at": NOW,
        "details": {"image": BAD, "rollback_target": {"environment": "production"}},
    }
    assert oplog_deploy(hotfix, "production") is not None
    assert oplog_deploy(hotfix, "staging") is None
    assert oplog_deploy({**hotfix, "operation": "rollback"}, "production") is None
    # Where a failed staged deploy failed: staging, unless its production release started.
    assert oplog_deploy(staged, "staging").failed  # type: ignore[union-attr]
    assert not oplog_deploy({**promoted, "status": "failed"}, "staging").failed  # type: ignore[union-attr]
    assert oplog_deploy({**promoted, "status": "failed"}, "production").failed  # type: ignore[union-attr]
    assert not oplog_deploy(hotfix, "production").failed  # type: ignore[union-attr]


def test_the_rollback_target_skips_revisions_of_the_same_image() -> None:
    # rev 1 good, rev 2 bad, rev 3 a restart of the bad release: undo must go to rev 1.
    history = [rev(1, GOOD), rev(2, BAD), rev(3, BAD)]
    target = rollback_target(history, 3)
    assert target is not None and (target.revision, target.image) == (1, GOOD)
    assert rollback_target([rev(1, GOOD)], 1) is None
    assert rollback_target(history, 9) is None


def test_a_revision_a_rollback_abandoned_is_never_the_target() -> None:
    # rev 1 good, rev 2 bad, rolled back (good is rev 3, was 1), rev 4 another release:
    # undo from 4 must not land on the bad rev 2.
    other = "registry.local/web-app:1.2.0"
    history = [rev(2, BAD), rev(3, GOOD, earlier=(1,)), rev(4, other)]
    assert abandoned_revisions(history) == {2}
    target = rollback_target(history, 4)
    assert target is not None and target.revision == 3
    # From the rolled-back good release there is nothing safe left to go to.
    assert rollback_target(history[:2], 3) is None


def test_an_image_whose_deploy_failed_here_is_never_the_target() -> None:
    # A staged deploy of a broken image failed in staging and was never rolled back there.
    broken = "registry.local/web-app:1.1.0-broken"
    history = [rev(1, GOOD), rev(2, broken), rev(3, "registry.local/web-app:1.2.0")]
    assert rollback_target(history, 3).revision == 2  # type: ignore[union-attr]
    target = rollback_target(history, 3, bad_images={broken})
    assert target is not None and target.image == GOOD


def test_a_deploy_of_the_running_image_in_the_window_is_to_blame() -> None:
    history = [rev(1, GOOD), rev(2, BAD, ago_h=1)]
    oplog = [
        DeployRecord("op log", "staging", BAD, NOW - timedelta(hours=1), "staged deploy"),
        DeployRecord("op log", "staging", "other:2", NOW - timedelta(hours=2), "staged deploy"),
        DeployRecord("op log", "production", BAD, NOW - timedelta(hours=1), "hotfix"),
    ]
    found = recent_deploys("staging", 2, history, oplog, NOW, 6)
    assert [(d.source, d.image) for d in found] == [("op log", BAD), ("rollout history", BAD)]
    # Outside the window: nothing.
    assert recent_deploys("staging", 2, [rev(1, GOOD), rev(2, BAD, 8)], [], NOW, 6) == ()


def test_a_rollback_or_a_restart_is_not_a_deploy() -> None:
    reused = [rev(2, BAD, ago_h=1), rev(3, GOOD, ago_h=1, earlier=(1,))]
    assert recent_deploys("staging", 3, reused, [], NOW, 6) == ()
    restarted = [rev(1, GOOD, 30), rev(2, GOOD, ago_h=0.1)]
    assert recent_deploys("staging", 2, restarted, [], NOW, 6) == ()
    first = [rev(1, GOOD, ago_h=0.1)]  # the first revision ever: nothing to blame
    assert recent_deploys("staging", 1, first, [], NOW, 6) == ()


# --- the decision ------------------------------------------------------------------------


def test_a_recent_deploy_with_a_previous_revision_rolls_back() -> None:
    deploy = DeployRecord("op log", "staging", BAD, NOW, "staged deploy (failed)")
    target = rev(1, GOOD)
    got = decide_service_down(
        facts(
            pods=(pod(ready=False, waiting_reason="CrashLoopBackOff"),),
            deploys=(deploy,),
            rollback_to=target,
            current_image=BAD,
        )
    )
    assert (got.action, got.to_revision, got.to_image) == ("rollback", 1, GOOD)
    assert BAD in got.reason and "within 6 h" in got.reason


def test_no_recent_deploy_restarts() -> None:
    got = decide_service_down(facts(rollback_to=rev(1, "old:1")))
    assert got.action == "restart" and "no deploy" in got.reason


def test_a_recent_deploy_without_an_earlier_image_restarts() -> None:
    deploy = DeployRecord("rollout history", "staging", BAD, NOW, "revision 2")
    got = decide_service_down(facts(deploys=(deploy,), rollback_to=None))
    assert got.action == "restart" and "no earlier revision" in got.reason


def test_healthy_and_ready_is_no_action() -> None:
    got = decide_service_down(facts(healthy=True))
    assert got.action == "none" and not got.changes
    # Healthy answers while a pod is not Ready (a bad release mid-rollout) is not "fine".
    assert decide_service_down(facts(healthy=True, pods=(pod(), pod(ready=False)))).changes


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"pods": None}, "could not be read"),
        ({"pods": ()}, "no pods"),
        ({"database_up": False}, "database is down"),
    ],
)
def test_what_a_restart_cannot_fix_escalates(change: dict[str, object], why: str) -> None:
    got = decide_service_down(facts(**change))
    assert got.action == "escalate" and why in got.reason


def test_the_checklist_records_every_item_with_evidence() -> None:
    crashing = pod(
        "web-9",
        ready=False,
        restarts=4,
        waiting_reason="CrashLoopBackOff",
        last_terminated="Error (exit 1)",
        log_tail="panic: no config",
    )
    f = facts(pods=(pod(), crashing), rollback_to=rev(1, GOOD))
    checks = service_down_checks(f, Check("alerts firing", False, "ServiceDown (P1)"))
    by_item = {c.item: c for c in checks}
    assert by_item["all pods Running and Ready"].passed is False
    assert "web-9 CrashLoopBackOff, 4 restarts" in by_item["all pods Running and Ready"].evidence
    assert "panic: no config" in by_item["recent errors of crashing pods"].evidence
    assert by_item["database up"].passed is True
    assert by_item["service health"].passed is False
    assert by_item["no deploy in the last 6 h"].passed is True
    assert by_item["previous revision available"].evidence == f"revision 1: {GOOD}"


def test_escalation_pages_engineering_for_p1_p2_and_mails_p3() -> None:
    assert escalation_page("P1").channel == "lead"
    assert escalation_page(None).level == "lead"
    assert escalation_page("P3").channel is None
