"""Deploy-side runbooks started through the REST API: staged deploy (auto, approved, rejected
through the UI's approval call), hotfix then rollback, scale and restart.

Cases run in file order and build on each other (the rollback undoes the hotfix).
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.deploy_support import new_image
from tests.served_support import (
    FAST_DEPLOY,
    SERVE_ONLY,
    RunPath,
    assert_completed,
    describe,
    kube_deployment,
    kube_image,
    served_image,
)
from tests.support import oplog_row


def test_staged_deploy_auto_ships_to_production(runpath: RunPath) -> None:
    image = new_image()
    before = kube_image("production")
    run = runpath.api.finish("staged-deploy/staged-deploy", image=image, **FAST_DEPLOY)
    assert_completed(run, runpath.log)
    assert run["parameters"]["policy"] == "auto"  # the deployment's default, as the UI sends it
    assert kube_image("production") == image and kube_image("staging") == image
    assert served_image(runpath.stack, "production") == image
    row = oplog_row(runpath.stack, run["id"])
    assert (row["operation"], row["status"]) == ("staged deploy", "succeeded")
    assert row["impact"] == f"production: {before} -> {image}"
    assert row["details"]["bake_verdict"] == "pass"


def _paused_deploy(runpath: RunPath) -> tuple[str, str, str]:
    """A manual staged deploy waiting at its gate: (run id, image, production before)."""
    image = new_image()
    before = kube_image("production")
    run_id = runpath.api.start(
        "staged-deploy/staged-deploy", image=image, policy="manual", **FAST_DEPLOY
    )
    paused = runpath.api.wait(run_id, until=("PAUSED",), timeout=180)
    assert paused["state"]["name"] == "Suspended" or paused["state"]["type"] == "PAUSED"
    assert kube_image("staging") == image and kube_image("production") == before
    return run_id, image, before


def test_staged_deploy_manual_approved_through_the_form(runpath: RunPath) -> None:
    run_id, image, before = _paused_deploy(runpath)
    # Someone outside the roles policy (and a DBA, whose role may not promote) approves: the
    # run asks again and production keeps its image.
    for outsider in ("mallory", "dana"):
        runpath.api.refused(run_id, {"approve": True, "approver": outsider, "reason": "go"})
        assert kube_image("production") == before, f"{outsider} promoted"
    approver = "alice"
    runpath.api.resume(
        run_id, {"approve": True, "approver": approver, "reason": "staging looks good"}
    )
    run = runpath.api.wait(run_id)
    assert_completed(run, runpath.log)
    assert kube_image("production") == image
    assert served_image(runpath.stack, "production") == image
    row = oplog_row(runpath.stack, run_id)
    assert row["status"] == "succeeded" and row["details"]["approver"] == approver
    assert row["details"]["approval_reason"] == "staging looks good"
    assert row["details"]["approved"] is True and before != image
    refusals = row["details"]["approval_refusals"]
    assert [r["approver"] for r in refusals] == ["mallory", "dana"], refusals
    assert "holds dba, which may not answer promote-production" in refusals[1]["why"]


@SERVE_ONLY
def test_staged_deploy_manual_rejected_through_the_form(runpath: RunPath) -> None:
    run_id, image, before = _paused_deploy(runpath)
    approver = f"bob-{uuid.uuid4().hex[:6]}"
    reason = "p95 in staging too close to the limit"
    runpath.api.resume(run_id, {"approve": False, "approver": approver, "reason": reason})
    run = runpath.api.wait(run_id)
    assert run["state"]["type"] == "FAILED", describe(run)
    assert "not promoted" in (run["state"]["message"] or ""), describe(run)
    assert kube_image("production") == before
    assert served_image(runpath.stack, "production") == before
    row = oplog_row(runpath.stack, run_id)
    assert row["status"] == "rejected" and "production untouched" in row["impact"]
    assert row["details"]["approver"] == approver
    assert row["details"]["approval_reason"] == reason
    assert row["details"]["approved"] is False


def test_hotfix_then_rollback_returns_to_the_previous_image(
    runpath: RunPath, shared: dict[str, Any]
) -> None:
    before = kube_image("production")
    image = new_image("-hotfix")
    run = runpath.api.finish("hotfix/hotfix", image=image, commit="f1x", **_bake())
    assert_completed(run, runpath.log)
    assert kube_image("production") == image == served_image(runpath.stack, "production")
    row = oplog_row(runpath.stack, run["id"])
    assert row["operation"] == "hotfix" and row["details"]["commit"] == "f1x"

    run = runpath.api.finish("rollback/rollback")  # environment=production is the default
    assert_completed(run, runpath.log)
    assert kube_image("production") == before == served_image(runpath.stack, "production")
    row = oplog_row(runpath.stack, run["id"])
    assert row["operation"] == "rollback" and row["details"]["after"]["image"] == before
    shared[runpath.kind + ":production"] = before


def test_scale_staging(runpath: RunPath) -> None:
    start = kube_deployment(runpath.stack, "staging")["spec"]["replicas"]
    wanted = 3 if start != 3 else 2
    run = runpath.api.finish("scale/scale", environment="staging", replicas=wanted)
    assert_completed(run, runpath.log)
    status = kube_deployment(runpath.stack, "staging")
    assert status["spec"]["replicas"] == wanted
    assert status["status"].get("availableReplicas") == wanted
    assert oplog_row(runpath.stack, run["id"])["impact"] == f"staging: {start} -> {wanted} replicas"


def test_restart_staging(runpath: RunPath) -> None:
    before = kube_deployment(runpath.stack, "staging")
    run = runpath.api.finish("restart/restart", environment="staging")
    assert_completed(run, runpath.log)
    after = kube_deployment(runpath.stack, "staging")
    stamp = "kubectl.kubernetes.io/restartedAt"
    annotations = after["spec"]["template"]["metadata"].get("annotations") or {}
    assert stamp in annotations
    assert annotations[stamp] != (
        (before["spec"]["template"]["metadata"].get("annotations") or {}).get(stamp)
    )
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert oplog_row(runpath.stack, run["id"])["operation"] == "restart"


def _bake() -> dict[str, Any]:
    return {k: FAST_DEPLOY[k] for k in ("bake_seconds", "bake_interval_s")}
