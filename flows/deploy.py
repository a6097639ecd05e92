"""Runbook "Deployment Process": preflight, staging and smoke tests, the gate, production.

1. Preflight checklist, each item a recorded pass/fail: image reference valid; current
   production revision recorded as the rollback target; pending migrations pass the lint
   gate; the app's alert rules are loaded in Prometheus; stakeholders notified.
2. Staging (under ``change-<staging>``): set the image, wait for the rollout (failing fast on
   crash-looping or unpullable pods), smoke tests with retries for the first seconds.
3. Promotion gate (:func:`decisions.deploy.promotion_gate`): ``auto`` promotes when all
   passed, ``manual`` pauses for a person (typed form; timeout or rejection ends the run,
   production untouched). Anything failed or inconclusive rejects.
4. Production (under ``change-<production>``): set image, wait, bake with probe traffic; a
   failed check rolls back to the recorded revision, an inconclusive bake asks a person
   (see :mod:`flows.operate` and :mod:`procedures.bake_review`).
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

import time
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger
from pydantic import Field

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.approvals import (
    PromotionFacts,
    promotion_description,
)
from decisions.bake_review import validate_probe
from decisions.deploy import (
    Approval,
    Check,
    GateDecision,
    SmokeCheck,
    approval_decision,
    check,
    parse_image,
    promotion_gate,
    require_policy,
    rules_for_app,
    validate_smoke_checks,
)
from decisions.releases import Release
from opsflows import retry
from opsflows.errors import ApprovalTimedOut, ConfigurationError, GateRejected, OpsError
from procedures import approval_gate
from procedures.approval_form import ApprovalForm
from procedures.migration_plan import compute_plan, load_migrations
from procedures.operation import (
    APP_DB,
    current_run,
    load_block,
    operation_log,
    safe_notify,
    try_load_ops_db,
    try_load_routing,
)
from procedures.release import (
    DEFAULT_INCONCLUSIVE_TIMEOUT_S,
    DEFAULT_PROBE_RPS,
    ROLLOUT_TIMEOUT_S,
    change_lock,
    release_to_production,
)
from tasks.metrics import rule_names
from tasks.rollout import current_release, set_image, wait_for_rollout
from tasks.smoke import run_smoke_checks, verify_serving

OPERATION = "staged deploy"


class ApprovalInput(ApprovalForm):
    """The approval form a person fills in to promote a release to production."""

    approve: bool = Field(default=False, description="On to promote; leave off to reject.")


class Checklist:
    """The preflight checklist: items recorded as pass, fail or skipped, shown as a table."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    def record(self, item: str, result: str, detail: str = "") -> None:
        self.rows.append({"item": item, "result": result, "detail": detail})
        get_run_logger().info("preflight: %s: %s %s", item, result, detail)

    def failed(self) -> list[str]:
        return [f"{r['item']}: {r['detail']}" for r in self.rows if r["result"] == "fail"]

    def publish(self) -> None:
        create_table_artifact(
            key="preflight-checklist", table=self.rows, description="Pre-deployment checklist"
        )


@task(name="preflight: image reference is valid", **retry.ONCE)
def preflight_image(image: str) -> str:
    """Validate the image reference (pinned tag or digest); the normalised reference."""
    return str(parse_image(image))


@task(name="preflight: migrations pass the lint gate", **retry.ONCE)
def preflight_migrations(migrations_dir: str, database: PostgresTarget) -> tuple[str, str]:
    """Plan the pending migrations with the migration runbook's planner and lint gate.

    Returns ``(result, detail)``.
    """
    directory, migrations = load_migrations(migrations_dir)
    plan = compute_plan(directory, migrations, database)
    names = [p.migration.name for p in plan.pending]
    if plan.blocked:
        return "fail", "; ".join([*plan.errors, *plan.blocking][:5])
    return "pass", f"{len(names)} pending: {', '.join(names) or 'none'}"


@task(name="preflight: alert rules exist", **retry.NETWORK)
def preflight_alert_rules(prometheus_url: str, app: str) -> tuple[str, ...]:
    """The alert rules Prometheus has loaded for ``app`` (empty when none)."""
    return rules_for_app(rule_names(prometheus_url), app)


@task(name="check served image", **retry.ONCE)
def served_image_check(base_url: str, image: str) -> Check:
    """Whether the environment now answers from ``image`` (whatever its health)."""
    try:
        verify_serving.fn(base_url, image, timeout_s=15.0, consecutive=3, healthy=False)
    except OpsError as exc:
        return check(f"serves {image}", False, exc.message)
    return check(f"serves {image}", True, "3 answers in a row from the new image")


def _item(checklist: Checklist, name: str, fn: Any, *args: Any) -> Any:
    """Run one checklist item; an error is recorded as its failure, then raised."""
    try:
        return fn(*args)
    except OpsError as exc:
        checklist.record(name, "fail", exc.message)
        checklist.publish()
        raise


def _preflight(
    image: str,
    app: str,
    prd: KubeEnvironment,
    migrations_dir: str | None,
    migrations_database: str,
) -> tuple[Checklist, Release]:
    """Run the read-only checklist items; the checklist and the rollback target.

    Raises:
        ConfigurationError: the image reference is not valid.
        GateRejected: an item failed (no side effect has happened yet).
    """
    rec = current_run().record
    checklist = Checklist()
    rec.details["preflight"] = checklist.rows
    name = "image reference is valid"
    checklist.record(name, "pass", _item(checklist, name, preflight_image, image))
    name = "rollback target recorded"
    target = _item(checklist, name, current_release, prd)
    ok = target.revision > 0
    where = f"{prd.environment} revision {target.revision} ({target.image})"
    checklist.record(name, "pass" if ok else "fail", where)
    rec.details["rollback_target"] = target.as_dict()
    name = "migrations pass the lint gate"
    if migrations_dir:
        database = _item(checklist, name, load_block, PostgresTarget, migrations_database)
        result, detail = _item(checklist, name, preflight_migrations, migrations_dir, database)
        checklist.record(name, result, detail)
    else:
        checklist.record(name, "skipped", "no migrations_dir given")
    name = "alert rules configured"
    rules = _item(checklist, name, preflight_alert_rules, prd.prometheus_url, app)
    detail = ", ".join(rules) or f"no alert rule for {app} in Prometheus"
    checklist.record(name, "pass" if rules else "fail", detail)
    failed = checklist.failed()
    if failed:
        checklist.publish()
        raise GateRejected("preflight checklist failed: " + "; ".join(failed))
    return checklist, target


def ask_for_approval(summary: str, timeout_s: int, environment: str) -> Approval | None:
    """Pause the run for the approval form; None when nobody allowed answered in time.

    Only the roles of the ``promote-production`` gate may approve (policy/roles.yaml); any
    other approver is refused and recorded, and the form waits on.
    """
    poll = max(1, min(5, timeout_s // 20))
    answer = approval_gate.ask(
        ApprovalInput,
        summary,
        gate="promote-production",
        environment=environment,
        timeout_s=timeout_s,
        poll_s=poll,
        key="approve-promotion",
    )
    if answer is None:
        return None
    return Approval(answer.approve, answer.approver, answer.reason)


def _validate(
    policy: str,
    smoke_checks: list[SmokeCheck] | None,
    numbers: dict[str, float],
) -> tuple[SmokeCheck, ...]:
    require_policy(policy)
    checks = validate_smoke_checks(smoke_checks)
    bad = [f"{k}={v}" for k, v in numbers.items() if v < 0 or (k.endswith("interval_s") and v <= 0)]
    if bad or numbers["metrics_window_s"] < 5:
        raise ConfigurationError(f"invalid timings: {', '.join(bad) or 'metrics_window_s < 5'}")
    return checks


@flow(name="staged-deploy")
def staged_deploy(
    image: str,
    app: str = "web-app",
    commit: str | None = None,
    policy: str = "auto",
    smoke_checks: list[SmokeCheck] | None = None,
    bake_seconds: float = 60,
    bake_interval_s: float = 5,
    approval_timeout_s: int = 3600,
    migrations_dir: str | None = None,
    staging: str = "staging",
    production: str = "production",
    smoke_retry_s: float = 10,
    metrics_window_s: float = 30,
    lock_timeout_s: float = 900,
    migrations_database: str = APP_DB,
    probe_rps: float = DEFAULT_PROBE_RPS,
    inconclusive_timeout_s: int = DEFAULT_INCONCLUSIVE_TIMEOUT_S,
) -> dict[str, Any]:
    """Ship a release through staging to production, gated, baked, rolled back on failure.

    Args:
        image: Image to deploy (pinned tag or digest), e.g. registry.local/web-app:1.2.0.
        app: Application name (alert rules and notifications).
        commit: The commit being shipped (recorded in the operation log).
        policy: ``auto`` promotes when staging passed; ``manual`` asks a person.
        smoke_checks: HTTP checks against staging (default: /health and /).
        bake_seconds: How long production is watched after the rollout.
        bake_interval_s: Seconds between bake measurements.
        approval_timeout_s: How long a manual approval may take before the run ends.
        migrations_dir: Migrations shipped with this release (planned and linted first).
        staging: KubeEnvironment block of staging.
        production: KubeEnvironment block of production.
        smoke_retry_s: How long after the staging rollout failing smoke checks are retried.
        metrics_window_s: Longest PromQL range the bake judges (never before the release).
        lock_timeout_s: How long to wait for another change of an environment to finish.
        migrations_database: PostgresTarget block the migrations are planned against.
        probe_rps: Synthetic requests per second sent to production during the bake (0: none).
        inconclusive_timeout_s: How long an inconclusive bake waits for a person to keep the
            release; no answer rolls back.
    """
    reason = f"deploy {image} ({app})" + (f" at {commit}" if commit else "")
    with operation_log(OPERATION, reason, try_load_ops_db(), try_load_routing()) as rec:
        logger = get_run_logger()
        rec.details.update(image=image, app=app, commit=commit, policy=policy)
        numbers = {
            "bake_seconds": bake_seconds,
            "bake_interval_s": bake_interval_s,
            "approval_timeout_s": approval_timeout_s,
            "smoke_retry_s": smoke_retry_s,
            "metrics_window_s": metrics_window_s,
            "lock_timeout_s": lock_timeout_s,
        }
        checks = _validate(policy, smoke_checks, numbers)
        validate_probe(probe_rps, inconclusive_timeout_s)
        stg = load_block(KubeEnvironment, staging)
        prd = load_block(KubeEnvironment, production)
        checklist, preflight_target = _preflight(
            image, app, prd, migrations_dir, migrations_database
        )
        delivered = safe_notify("P3", f"deploy of {image} started", f"{reason}; policy {policy}")
        checklist.record(
            "stakeholders notified", "pass" if delivered else "fail", f"{delivered} channel(s)"
        )
        checklist.publish()

        with change_lock(stg, lock_timeout_s):
            try:
                set_image(stg, image)
                rollout = wait_for_rollout(stg, timeout_s=ROLLOUT_TIMEOUT_S)
            except OpsError as exc:
                rec.impact = (
                    f"{stg.environment} runs {image} (rollout failed); production untouched"
                )
                rec.follow_up.append(f"fix or roll back {stg.environment}")
                safe_notify("P3", f"deploy of {image} failed in staging", exc.message)
                raise
            # The rollout can finish before the service stops routing to the old pods: wait
            # until it answers from the new image, so the smoke tests judge the new release.
            serving = served_image_check(stg.service_url, image)
            smoke = run_smoke_checks(stg.service_url, checks, smoke_retry_s)
            verification = [
                check("staging rollout", True, f"{rollout.message} in {rollout.seconds}s"),
                serving,
            ]
        create_table_artifact(
            key="staging-smoke",
            table=[
                {"check": r.name, "verdict": r.verdict, "expected": r.expected, "seen": r.measured}
                for r in smoke
            ],
            description=f"Smoke tests of {image} in {stg.environment}",
        )
        decision = promotion_gate(smoke, verification, policy)
        if decision.action == "ask":
            summary = promotion_description(
                PromotionFacts(
                    image=image,
                    staging=stg.environment,
                    production=prd.environment,
                    production_image=preflight_target.image,
                    production_revision=preflight_target.revision,
                    smoke=smoke,
                    verification=verification,
                    bake_seconds=bake_seconds,
                    timeout_s=approval_timeout_s,
                )
            )
            create_markdown_artifact(key="approval-request", markdown=summary)
            approval = ask_for_approval(summary, approval_timeout_s, prd.environment)
            if approval is not None:
                rec.details.update(approver=approval.approver, approval_reason=approval.reason)
                rec.details["approved"] = approval.approve
            decision = approval_decision(approval)
        _enforce(decision, image)

        with change_lock(prd, lock_timeout_s):
            target = current_release(prd)
            if target.revision != preflight_target.revision:
                logger.warning(
                    "%s changed since preflight; rollback target is now %s", prd.environment, target
                )
            rec.details["rollback_target"] = target.as_dict()
            started = time.time()
            result = release_to_production(
                prd,
                image,
                target,
                bake_seconds=bake_seconds,
                bake_interval_s=bake_interval_s,
                metrics_window_s=metrics_window_s,
                probe_rps=probe_rps,
                inconclusive_timeout_s=inconclusive_timeout_s,
            )
            finished = time.time()
        rec.impact = f"{prd.environment}: {target.image} -> {image}"
        safe_notify("P3", f"{image} deployed to {prd.environment}", rec.impact)
        return {
            "image": image,
            "previous": target.as_dict(),
            "gate": decision.reasons,
            "production": {"started_at": started, "finished_at": finished, **result},
        }


def _enforce(decision: GateDecision, image: str) -> None:
    """Record the gate's decision; stop the run (production untouched) unless it promotes."""
    rec = current_run().record
    gate = f"{decision.action}: " + "; ".join(decision.reasons)
    rec.details["gate"] = gate
    get_run_logger().info("promotion gate: %s", gate)
    if decision.action == "promote":
        return
    safe_notify("P3", f"deploy of {image} stopped", "; ".join(decision.reasons))
    rec.impact = f"staging runs {image}; production untouched"
    rec.follow_up.append("production was not touched; staging runs the rejected image")
    stop = ApprovalTimedOut if decision.timed_out else GateRejected
    raise stop(
        f"{image} not promoted: " + "; ".join(decision.reasons),
        hint="production was not touched",
    )
