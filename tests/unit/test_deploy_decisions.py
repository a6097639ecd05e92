"""Deploy decisions: image references, rollout verdicts, smoke, bake, the gate, revisions."""

from __future__ import annotations

import dataclasses

import pytest

from decisions.deploy import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Approval,
    BakeSample,
    BakeThresholds,
    HttpObservation,
    PodState,
    RolloutStatus,
    SmokeCheck,
    approval_decision,
    bake_verdict,
    check,
    check_replicas,
    evaluate_smoke,
    judge,
    judge_sample,
    parse_image,
    promotion_gate,
    require_policy,
    rollout_verdict,
    rules_for_app,
    undo_revision,
    validate_smoke_checks,
    worst,
)
from opsflows.errors import ConfigurationError

DIGEST = "sha256:" + "a" * 64

# -- image references ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "registry", "repository", "tag", "digest"),
    [
        ("registry.local/web-app:1.2.0", "registry.local", "web-app", "1.2.0", None),
        (
            "registry.local:5000/team/web-app:v2-rc.1",
            "registry.local:5000",
            "team/web-app",
            "v2-rc.1",
            None,
        ),  # noqa: E501
        ("web-app:1.0.0", "", "web-app", "1.0.0", None),
        ("localhost/web_app:1", "localhost", "web_app", "1", None),
        (f"registry.local/web-app@{DIGEST}", "registry.local", "web-app", None, DIGEST),
        (f"registry.local/web-app:1.0@{DIGEST}", "registry.local", "web-app", "1.0", DIGEST),
    ],
)
def test_valid_image_references_parse(
    reference: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_image(reference)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert str(ref) == reference


@pytest.mark.parametrize(
    "reference",
    [
        "",
        " registry.local/web-app:1.0",
        "registry.local/Web-App:1.0",
        "registry.local/web-app:",
        "registry.local/web-app:-bad",
        "registry.local//web-app:1",
        "registry.local/web-app:1.0 ; rm -rf /",
        "registry.local/web-app@sha256:short",
        "a" * 300 + ":1",
    ],
)
def test_malformed_image_references_are_configuration_errors(reference: str) -> None:
    with pytest.raises(ConfigurationError, match="not valid"):
        parse_image(reference)


@pytest.mark.parametrize("reference", ["registry.local/web-app", "registry.local/web-app:latest"])
def test_floating_images_are_refused(reference: str) -> None:
    with pytest.raises(ConfigurationError, match="not pinned"):
        parse_image(reference)


def test_policy_must_be_auto_or_manual() -> None:
    assert require_policy("manual") == "manual"
    with pytest.raises(ConfigurationError, match="unknown promotion policy"):
        require_policy("yolo")


# -- rollout verdicts -----------------------------------------------------------------------

DONE = RolloutStatus(
    generation=3, observed_generation=3, desired=2, replicas=2, updated=2, available=2, ready=2
)


def test_complete_rollout_is_done() -> None:
    assert rollout_verdict(DONE).done


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"observed_generation": 2}, "spec update to be observed"),
        ({"updated": 1}, "1 of 2 new replicas have been updated"),
        ({"replicas": 3}, "1 old replicas are pending termination"),
        ({"available": 1}, "1 of 2 updated replicas are available"),
    ],
)
def test_kubectl_waiting_rules(changes: dict[str, int], message: str) -> None:
    verdict = rollout_verdict(dataclasses.replace(DONE, **changes))
    assert verdict.state == "waiting"
    assert message in verdict.message


def test_progress_deadline_fails() -> None:
    status = dataclasses.replace(
        DONE, updated=1, progressing_reason="ProgressDeadlineExceeded", progressing_message="x"
    )
    verdict = rollout_verdict(status)
    assert verdict.failed and verdict.reason == "ProgressDeadlineExceeded"


def test_stale_observed_generation_hides_an_old_deadline() -> None:
    status = dataclasses.replace(
        DONE, observed_generation=2, progressing_reason="ProgressDeadlineExceeded"
    )
    assert rollout_verdict(status).state == "waiting"


@pytest.mark.parametrize(
    "reason", ["CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"]
)
def test_broken_pods_fail_fast_even_before_the_deadline(reason: str) -> None:
    pods = (PodState("web-1", True), PodState("web-2", False, 3, reason, "back-off"))
    status = dataclasses.replace(DONE, updated=1, available=1, pods=pods)
    verdict = rollout_verdict(status)
    assert verdict.failed and verdict.reason == reason
    assert "web-2" in verdict.message
    assert rollout_verdict(status, fail_fast=False).state == "waiting"


def test_pods_still_creating_keep_waiting() -> None:
    pods = (PodState("web-2", False, 0, "ContainerCreating"),)
    assert rollout_verdict(dataclasses.replace(DONE, available=1, pods=pods)).state == "waiting"


# -- smoke checks ---------------------------------------------------------------------------

HEALTH = SmokeCheck("/health", 200, '"ok"', 1.0)


def test_smoke_passes_on_status_body_and_latency() -> None:
    result = evaluate_smoke(HEALTH, HttpObservation(200, 0.05, '{"status":"ok"}'))
    assert result.passed and "status 200" in result.measured and "200" in result.expected


@pytest.mark.parametrize(
    ("seen", "why"),
    [
        (HttpObservation(503, 0.05, '{"status":"error"}'), "status 503"),
        (HttpObservation(200, 0.05, '{"status":"degraded"}'), "body lacks"),
        (HttpObservation(200, 1.5, '{"status":"ok"}'), "latency 1.500s"),
        (HttpObservation(None, None, "", "connection refused"), "no answer: connection refused"),
    ],
)
def test_smoke_fails_with_what_was_seen(seen: HttpObservation, why: str) -> None:
    result = evaluate_smoke(HEALTH, seen, attempts=4)
    assert result.verdict == FAIL and why in result.measured and result.attempts == 4


def test_smoke_checks_default_and_validation() -> None:
    assert [c.path for c in validate_smoke_checks(None)] == ["/health", "/"]
    with pytest.raises(ConfigurationError, match="start with '/'"):
        validate_smoke_checks([SmokeCheck("health")])
    with pytest.raises(ConfigurationError, match="max_latency_s"):
        validate_smoke_checks([SmokeCheck("/", max_latency_s=0)])
    with pytest.raises(ConfigurationError, match="status"):
        validate_smoke_checks([SmokeCheck("/", expect_status=42)])


# -- bake measurements ----------------------------------------------------------------------

LIMITS = BakeThresholds(error_rate=0.005, p95_latency_s=2.0)
GOOD = BakeSample(200, 0.0, 0.02, 2, 2, 0)


def by_name(sample: BakeSample) -> dict[str, tuple[str, float]]:
    return {m.name: (m.verdict, m.threshold) for m in judge_sample(sample, LIMITS)}


def test_healthy_sample_passes_with_every_threshold_recorded() -> None:
    assert by_name(GOOD) == {
        "health": (PASS, 200),
        "error_rate": (PASS, 0.005),
        "p95_latency_s": (PASS, 2.0),
        "ready_replicas": (PASS, 2),
        "restarts": (PASS, 0),
    }


@pytest.mark.parametrize(
    ("changes", "name", "verdict"),
    [
        ({"error_rate": 0.006}, "error_rate", FAIL),
        ({"error_rate": 0.005}, "error_rate", PASS),
        ({"p95_latency_s": 2.5}, "p95_latency_s", FAIL),
        ({"ready": 1}, "ready_replicas", FAIL),
        ({"restarts": 1}, "restarts", FAIL),
        ({"health_status": 503}, "health", FAIL),
        ({"health_status": None}, "health", FAIL),
        ({"error_rate": None}, "error_rate", INCONCLUSIVE),
        ({"p95_latency_s": None}, "p95_latency_s", INCONCLUSIVE),
        ({"ready": None, "restarts": None}, "restarts", INCONCLUSIVE),
    ],
)
def test_each_measurement_judged(changes: dict[str, object], name: str, verdict: str) -> None:
    assert by_name(dataclasses.replace(GOOD, **changes))[name][0] == verdict  # type: ignore[arg-type]


def test_missing_data_is_inconclusive_and_notes_say_why() -> None:
    sample = dataclasses.replace(GOOD, error_rate=None, notes=(("error_rate", "query failed"),))
    measured = judge_sample(sample, LIMITS)
    rate = next(m for m in measured if m.name == "error_rate")
    assert rate.verdict == INCONCLUSIVE and rate.detail == "query failed"
    assert "no data" in rate.describe() and "<= 0.005" in rate.describe()


def test_bake_verdict_fail_beats_inconclusive_beats_pass() -> None:
    good = judge_sample(GOOD, LIMITS)
    unknown = judge_sample(dataclasses.replace(GOOD, p95_latency_s=None), LIMITS)
    bad = judge_sample(dataclasses.replace(GOOD, error_rate=0.3), LIMITS)
    assert bake_verdict([good, good]) == PASS
    assert bake_verdict([good, unknown]) == INCONCLUSIVE
    assert bake_verdict([unknown, bad]) == FAIL
    assert bake_verdict([]) == INCONCLUSIVE
    assert worst([]) == INCONCLUSIVE


def test_judge_comparisons() -> None:
    assert judge("x", 3, 2, ">=").verdict == PASS
    assert judge("x", 1, 2, ">=").verdict == FAIL
    assert judge("x", 2, 2, "==").verdict == PASS
    assert judge("x", None, 2).verdict == INCONCLUSIVE


# -- the promotion gate ---------------------------------------------------------------------

SMOKE_OK = evaluate_smoke(HEALTH, HttpObservation(200, 0.01, '"ok"'))
SMOKE_BAD = evaluate_smoke(HEALTH, HttpObservation(500, 0.01, ""))
ROLLED_OUT = check("staging rollout", True)


def test_gate_auto_promotes_when_everything_passed() -> None:
    decision = promotion_gate([SMOKE_OK], [ROLLED_OUT], "auto")
    assert decision.action == "promote"


def test_gate_manual_asks_a_person() -> None:
    assert promotion_gate([SMOKE_OK], [ROLLED_OUT], "manual").action == "ask"


@pytest.mark.parametrize("policy", ["auto", "manual"])
def test_gate_rejects_failures_and_inconclusive_whatever_the_policy(policy: str) -> None:
    failed = promotion_gate([SMOKE_OK, SMOKE_BAD], [ROLLED_OUT], policy)
    assert failed.action == "reject" and "GET /health: fail" in failed.reasons
    unknown = judge("error_rate", None, 0.005)
    assert promotion_gate([SMOKE_OK], [unknown], policy).action == "reject"
    assert promotion_gate([], [ROLLED_OUT], policy).action == "reject"


def test_gate_refuses_unknown_policy() -> None:
    with pytest.raises(ConfigurationError):
        promotion_gate([SMOKE_OK], [], "sometimes")


def test_approval_answers() -> None:
    assert approval_decision(Approval(True, "alice", "ok")).action == "promote"
    assert "approved by alice: ok" in approval_decision(Approval(True, "alice", "ok")).reasons
    rejected = approval_decision(Approval(False, "bob", "not today"))
    assert rejected.action == "reject" and "rejected by bob: not today" in rejected.reasons
    assert approval_decision(Approval(True, "  ", "")).action == "reject"
    assert approval_decision(None).reasons == ("approval timed out",)


# -- revisions, replicas, alert rules -------------------------------------------------------


def test_undo_goes_to_the_previous_or_the_named_revision() -> None:
    assert undo_revision([1, 2, 4, 5], current=5, wanted=None) == 4
    assert undo_revision([1, 2, 4, 5], current=5, wanted=2) == 2
    with pytest.raises(ConfigurationError, match="not in the rollout history"):
        undo_revision([1, 2, 4, 5], current=5, wanted=3)
    with pytest.raises(ConfigurationError, match="nothing to roll back to"):
        undo_revision([5], current=5, wanted=None)


def test_replicas_are_bounded_by_policy() -> None:
    assert check_replicas(4, 10) == 4
    for bad in (0, -1, True):
        with pytest.raises(ConfigurationError):
            check_replicas(bad, 10)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="above the policy maximum of 10"):
        check_replicas(11, 10)


def test_alert_rules_are_matched_to_the_app() -> None:
    names = ["WebAppDown", "WebAppHighErrorRate", "DiskFull", "web_app_latency"]
    assert rules_for_app(names, "web-app") == (
        "WebAppDown",
        "WebAppHighErrorRate",
        "web_app_latency",
    )
    assert rules_for_app(names, "billing") == ()
    # As Prometheus lists them (tasks.metrics.rule_names): the group names the app.
    listed = ["web-app/ServiceDown", "web-app/HighErrorRate", "machine/HostDiskFull"]
    assert rules_for_app(listed, "web-app") == ("web-app/ServiceDown", "web-app/HighErrorRate")


def test_bake_window_stays_inside_the_release() -> None:
    from tasks.bake import window_for

    assert window_for(since=100.0, now=101.0, max_window_s=30) == "5s"
    assert window_for(since=100.0, now=112.4, max_window_s=30) == "12s"
    assert window_for(since=100.0, now=500.0, max_window_s=30) == "30s"


def test_bake_loop_stops_at_the_first_round_that_does_not_pass() -> None:
    from blocks.kube import KubeEnvironment
    from tasks.bake import run_bake

    nowhere = "http://127.0.0.1:9"
    env = KubeEnvironment(
        environment="unit",
        api_url=nowhere,
        namespace="unit",
        service_url=nowhere,
        prometheus_url=nowhere,
    )
    good = judge_sample(GOOD, LIMITS)
    bad = judge_sample(dataclasses.replace(GOOD, error_rate=0.3), LIMITS)
    rounds = iter([good, good, bad, good])
    progress: list[float] = []
    report = run_bake(
        env,
        LIMITS,
        duration_s=10,
        interval_s=0.01,
        since=0.0,
        measure_fn=lambda *args: list(next(rounds)),
        on_round=progress.append,
    )
    assert report.verdict == FAIL and len(report.rounds) == 3
    assert report.first_bad is report.rounds[2]
    assert any("error_rate = 0.3" in reason for reason in report.reasons())
    assert len(progress) == 2 and all(0 <= p <= 1 for p in progress)
    rows = report.rows()
    assert {r["measurement"] for r in rows} >= {"error_rate", "p95_latency_s", "health"}
    assert all("threshold" in r and "epoch" in r for r in rows)
