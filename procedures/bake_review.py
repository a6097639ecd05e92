"""The production bake with synthetic probe traffic, and the review of an inconclusive bake.

Shared by the staged deploy and the hotfix through :func:`flows.operate.release_to_production`:

1. A synthetic probe (:class:`tasks.probe_traffic.TrafficProbe`) sends paced requests to the
   environment's service for the whole bake, so Prometheus always has the release's traffic
   to judge even when nobody else calls production; the probe keeps its own figures.
2. The bake judges health, error rate, p95 latency, readiness and restarts; the bake table
   and the ``bake-traffic-<env>`` markdown show the probe's figures beside the real traffic's.
3. A bake that stays inconclusive (metrics backend unreachable, or no data despite the probe)
   pauses the run for a person: approve keeps the release, reject or no answer in time rolls
   back. A failing bake never waits: it rolls back at once.
"""

# No `from __future__ import annotations`: served runs pickle flow functions by value, and
# this module's RunInput must keep real annotations (see flows/operate.py).

from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.logging import get_run_logger
from pydantic import Field

from blocks.kube import KubeEnvironment
from decisions.bake_review import BakeReview, ProbeSummary, ReviewOutcome, review_outcome
from procedures import approval_gate
from procedures.approval_form import ApprovalForm
from procedures.change_slot import check_slots
from procedures.operation import current_run
from tasks.bake import BakeReport, limits_for, run_bake, wait_for_samples
from tasks.probe_traffic import TrafficProbe

PROBE_WARMUP_S = 8.0
"""Longest wait, after the probe starts, for its traffic to show in Prometheus."""

PROBE_SLACK_S = 60.0
"""The probe stops by itself this long after the bake should have ended."""


class BakeReviewInput(ApprovalForm):
    """The form a person fills in when a production bake could not judge the release."""

    approve: bool = Field(
        default=False,
        description="Keep the release in production. Leave unticked to roll it back.",
    )


def baked(
    env: KubeEnvironment,
    image: str,
    *,
    since: float,
    bake_seconds: float,
    bake_interval_s: float,
    metrics_window_s: float,
    probe_rps: float,
) -> tuple[BakeReport, ProbeSummary | None]:
    """Bake ``image`` in ``env`` with probe traffic (``probe_rps`` 0: none); publish and record.

    The probe starts before the bake, runs for its whole window and is stopped after it (it
    also stops by itself ``PROBE_SLACK_S`` after the bake should have ended).
    """
    logger = get_run_logger()
    rec = current_run().record
    probe: TrafficProbe | None = None
    if probe_rps > 0:
        probe = TrafficProbe(
            env.service_url, probe_rps, PROBE_WARMUP_S + bake_seconds + PROBE_SLACK_S
        )
        probe.start()
        logger.info("%s: probe traffic %g req/s to %s", env.environment, probe_rps, probe.url)
    try:
        if probe is not None:
            waited = wait_for_samples(env, since, metrics_window_s, PROBE_WARMUP_S)
            rec.details["probe_warmup_s"] = waited
        progress: Any = create_progress_artifact(0.0, description=f"Bake of {image}")
        report = run_bake(
            env,
            limits_for(env),
            bake_seconds,
            bake_interval_s,
            since,
            metrics_window_s,
            on_round=lambda done: _round_done(progress, done),
            probe_figures=probe.snapshot if probe is not None else None,
        )
    finally:
        summary = probe.stop() if probe is not None else None
    if summary is not None:
        logger.info("%s probe: %s", env.environment, summary.describe())
    create_table_artifact(
        key=f"bake-{env.environment}",
        table=report.rows(),
        description=f"Bake of {image} in {env.environment}: {report.verdict}",
    )
    create_markdown_artifact(
        key=f"bake-traffic-{env.environment}",
        markdown=traffic_markdown(image, env.environment, report, summary),
        description=f"Real traffic and probe traffic during the bake of {image}",
    )
    rec.details["bake_rounds"] = len(report.rounds)
    rec.details["bake_verdict"] = report.verdict
    rec.details["bake_real_traffic"] = report.real_traffic()
    rec.details["bake_probe"] = summary.as_dict() if summary is not None else None
    return report, summary


def _round_done(progress: Any, done: float) -> None:
    """After each bake round: a safe point (a lost change slot stops the bake), then progress."""
    check_slots()
    update_progress_artifact(progress, round(done * 100, 1))


def _shown(value: float | None) -> str:
    return "no data" if value is None else f"{value:.6g}"


def traffic_markdown(
    image: str, environment: str, report: BakeReport, probe: ProbeSummary | None
) -> str:
    """The bake's figures: the real traffic (Prometheus) beside the probe (client side)."""
    real = report.real_traffic()
    lines = [
        f"## Bake of `{image}` in {environment}: {report.verdict}",
        "",
        "| figure | real traffic (Prometheus, last round) | synthetic probe (client side) |",
        "|---|---|---|",
    ]
    if probe is None:
        lines += [
            f"| error rate | {_shown(real.get('error_rate'))} | no probe |",
            f"| p95 latency (s) | {_shown(real.get('p95_latency_s'))} | no probe |",
        ]
    else:
        lines += [
            f"| requests | | {probe.requests} in {probe.duration_s:.1f}s at {probe.rps:g}/s |",
            f"| errors (5xx or no answer) | | {probe.errors} |",
            f"| error rate | {_shown(real.get('error_rate'))} | {_shown(probe.error_rate)} |",
            f"| p95 latency (s) | {_shown(real.get('p95_latency_s'))} | "
            f"{_shown(probe.p95_latency_s)} |",
        ]
        if probe.last_error:
            lines += ["", f"Last probe error: `{probe.last_error}`"]
    reasons = report.reasons()
    if reasons:
        lines += ["", "Not passing:", "", *[f"- {r}" for r in reasons]]
    return "\n".join(lines)


def review_description(
    image: str, environment: str, report: BakeReport, probe: ProbeSummary | None, timeout_s: int
) -> str:
    """What the person deciding reads: what is inconclusive, what was seen, what each does."""
    lines = [
        f"## The bake of `{image}` in {environment} is inconclusive",
        "",
        "The release is serving, but the bake could not judge it:",
        "",
        *[f"- {r}" for r in report.reasons()],
        "",
        traffic_markdown(image, environment, report, probe),
        "",
        f"- **Approve** keeps `{image}` in {environment}; your name and reason go into the "
        "operation log.",
        "- **Reject** (leave approve unticked) rolls back to the recorded previous revision.",
        f"- No answer within {timeout_s} s rolls back as well.",
    ]
    return "\n".join(lines)


def review_inconclusive(
    env: KubeEnvironment,
    image: str,
    report: BakeReport,
    probe: ProbeSummary | None,
    timeout_s: int,
) -> ReviewOutcome:
    """Pause the run for a person to keep or roll back a release the bake could not judge."""
    logger = get_run_logger()
    description = review_description(image, env.environment, report, probe, timeout_s)
    create_markdown_artifact(key=f"bake-review-{env.environment}", markdown=description)
    logger.warning(
        "%s: bake of %s inconclusive; waiting up to %d s for a person",
        env.environment,
        image,
        timeout_s,
    )
    poll = max(1, min(5, timeout_s // 20))
    answer = approval_gate.ask(
        BakeReviewInput,
        description,
        gate="promote-production",
        environment=env.environment,
        timeout_s=timeout_s,
        poll_s=poll,
        key=f"bake-review-{env.environment}",
    )
    review = None if answer is None else BakeReview(answer.approve, answer.approver, answer.reason)
    outcome = review_outcome(review, timeout_s)
    current_run().record.details["bake_review"] = {
        "approved": review.approve if review else None,
        "approver": review.approver if review else None,
        "reason": review.reason if review else None,
        "kept": outcome.keep,
        "why": outcome.why,
    }
    logger.info("%s: %s", env.environment, outcome.why)
    return outcome
