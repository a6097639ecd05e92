"""Data-side runbooks started through the REST API, and CI webhook deliveries that start deploys.

The two webhook deliveries (a signed ``push`` to main and a successful ``release``
``workflow_run``) go first: their staged deploys bake for the deployment's default 60 s, so
they run while the backup, restore, drill, migration, rotation and smoke cases (which touch
neither environment's change limit) run, and the last case waits for them to complete.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest
from psycopg import sql

from devstack.stack import AWS_REGION, MOTO_KEYS
from tests.migrate_support import flow_database, migrations_dir, migrations_table, target_for
from tests.rotation_support import World
from tests.served_support import (
    SERVE_ONLY,
    RunPath,
    assert_completed,
    github_delivery,
    kube_image,
    load_block,
    served_image,
    webhook_secret,
)
from tests.support import oplog_row


@pytest.fixture(scope="session")
def ci_runs() -> dict[str, dict[str, str]]:
    """Per run path: the webhook-started run id of each delivery and the image it ships."""
    return {}


@SERVE_ONLY  # with its waiting case below: a delivery left baking would ship into later cases
def test_ci_webhook_push_and_release_workflow_start_staged_deploys(
    runpath: RunPath, webhook: str, ci_runs: dict[str, dict[str, str]]
) -> None:
    secret = webhook_secret(runpath.stack)
    push_sha, release_sha = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    now = datetime.now(UTC).isoformat()
    deliveries = {
        "push-main": github_delivery(
            secret,
            "push",
            {
                "ref": "refs/heads/main",
                "deleted": False,
                "after": push_sha,
                "repository": {"pushed_at": int(time.time())},
            },
        ),
        "release-workflow": github_delivery(
            secret,
            "workflow_run",
            {
                "action": "completed",
                "workflow_run": {
                    "name": "release",
                    "conclusion": "success",
                    "head_branch": "main",
                    "head_sha": release_sha,
                    "updated_at": now,
                },
            },
        ),
    }
    started: dict[str, str] = {}
    for route, (headers, body) in deliveries.items():
        resp = httpx.post(webhook + "/webhook", content=body, headers=headers, timeout=30)
        assert resp.status_code == 202, resp.text
        answer = resp.json()
        assert answer["route"] == route and answer["deployment"] == "staged-deploy/staged-deploy"
        run = runpath.api.run(answer["flow_run_id"])
        started[answer["flow_run_id"]] = run["parameters"]["image"]
    assert sorted(started.values()) == sorted(
        f"registry.local/web-app:{sha}" for sha in (push_sha, release_sha)
    )
    ci_runs[runpath.kind] = started


def test_backup_daily_streams_a_complete_backup_to_s3(
    runpath: RunPath, shared: dict[str, Any]
) -> None:
    run = runpath.api.finish("backup-database/backup-daily", timeout=180)
    assert_completed(run, runpath.log)
    row = oplog_row(runpath.stack, run["id"])
    assert row["status"] == "succeeded" and row["reason"] == "scheduled daily backup"
    details = row["details"]
    s3 = boto3.client(
        "s3",
        endpoint_url=runpath.stack.aws_endpoint_url,
        region_name=AWS_REGION,
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    from blocks.storage import BackupStore

    bucket = load_block(BackupStore, "backups").bucket
    dump = s3.head_object(Bucket=bucket, Key=details["key"])
    assert dump["ContentLength"] > 0
    folder = details["key"].rsplit("/", 1)[0]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=folder)["Contents"]]
    manifests = [k for k in keys if "manifest" in k]
    assert manifests, keys
    manifest = s3.get_object(Bucket=bucket, Key=manifests[0])["Body"].read().decode()
    assert details["sha256"] in manifest and details["backup_id"] in manifest
    # Where the time went, phase by phase: in the op log, the run's artifact and its log.
    phases = details["phases"]
    for name in ("snapshot export", "fingerprint", "dump stream", "checksum", "upload"):
        assert name in phases, phases
    for name in ("pg_dump cpu", "zstd cpu", "complete and tag", "manifest", "retention"):
        assert name in phases, phases
    assert phases["dump stream"] > 0 and phases["upload"] > 0
    table = runpath.api.latest_artifact("backup-phases")
    assert details["backup_id"] in table and "| upload |" in table and "at once" in table
    shared[runpath.kind + ":backup"] = details["backup_id"]


def test_restore_into_scratch_verifies_the_newest_backup(
    runpath: RunPath, shared: dict[str, Any]
) -> None:
    run = runpath.api.finish("restore-database/restore", timeout=240)
    assert_completed(run, runpath.log)
    details = oplog_row(runpath.stack, run["id"])["details"]
    assert details["backup_id"] == shared[runpath.kind + ":backup"]
    for name in ("download", "checksum", "restore data", "index build", "verification"):
        assert name in details["phases"], details["phases"]
    assert "| index build |" in runpath.api.latest_artifact("restore-phases")
    scratch = details["scratch"]
    admin = target_for(runpath.stack, "postgres")
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (scratch,)).fetchone()
        assert found, f"scratch database {scratch} is missing"
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(scratch)))


def test_restore_drill_weekly_records_rto_and_rpo(runpath: RunPath, shared: dict[str, Any]) -> None:
    run = runpath.api.finish("restore-drill/restore-drill-weekly", timeout=240)
    assert_completed(run, runpath.log)
    row = oplog_row(runpath.stack, run["id"])
    details = row["details"]
    assert row["status"] == "succeeded" and details["rto_s"] > 0 and details["rpo_s"] >= 0
    assert details["backup_id"] == shared[runpath.kind + ":backup"]
    assert row["impact"].startswith("none (scratch database restored, verified and dropped)")


@pytest.fixture
def migration_target(runpath: RunPath) -> Iterator[tuple[Any, str, str]]:
    """A scratch database saved as a block, with its own change limit: (target, block, env)."""
    environment = f"served-{uuid.uuid4().hex[:6]}"
    with flow_database(runpath.stack, "served", environment) as (target, block):
        yield target, block, environment


def test_migrate_database_dry_run_then_apply(
    runpath: RunPath, migration_target: tuple[Any, str, str], tmp_path: Path
) -> None:
    target, block, environment = migration_target
    folder = migrations_dir(tmp_path, "app")
    # The served process and the worker run as this user: the folder is readable by them.
    params: dict[str, Any] = {
        "migrations_dir": str(folder),
        "database": block,
        "environment": environment,
    }
    names = sorted(p.name for p in folder.glob("*.sql"))

    dry = runpath.api.finish("migrate-database/migrate-database", dry_run=True, **params)
    assert_completed(dry, runpath.log)
    row = oplog_row(runpath.stack, dry["id"])
    assert row["impact"] == "none: dry run, plan only"
    assert row["details"]["pending"] == names
    assert migrations_table(target) is None  # nothing applied

    run = runpath.api.finish("migrate-database/migrate-database", timeout=240, **params)
    assert_completed(run, runpath.log)
    assert [name for name, _ in migrations_table(target) or []] == names
    row = oplog_row(runpath.stack, run["id"])
    assert row["status"] == "succeeded" and row["impact"].startswith(f"applied {len(names)}")


@pytest.mark.parametrize("strategy", ["single_user", "alternating_users"])
def test_rotate_credentials_monthly(runpath: RunPath, strategy: str) -> None:
    world = World(runpath.stack, rotation_id=f"served-{uuid.uuid4().hex[:6]}").create()
    try:
        old = world.value()
        run = runpath.api.finish(
            "rotate-credentials/rotate-credentials-monthly",
            timeout=240,
            **world.params(strategy=strategy),
        )
        assert_completed(run, runpath.log)
        new = world.value()
        assert new["version"] != old["version"] and world.logs_in(new)
        carried = world.kube_secret(world.envs[0])
        assert (carried["username"], carried["password"]) == (new["username"], new["password"])
        assert world.block_password() == new["password"]
        if strategy == "single_user":
            assert new["username"] == old["username"] and not world.logs_in(old)
        else:
            assert new["username"] == world.name + "_clone" and world.logs_in(old)
        entry = world.oplog(run["id"])
        assert entry["status"] == "succeeded" and new["version"] in entry["impact"]
    finally:
        world.remove()


def test_stack_smoke(runpath: RunPath) -> None:
    run = runpath.api.finish("stack-smoke/stack-smoke", timeout=120)
    assert_completed(run, runpath.log)
    row = oplog_row(runpath.stack, run["id"])
    assert (row["operation"], row["status"]) == ("stack smoke check", "succeeded")
    services = {"postgres", "s3", "secrets", "prometheus"}
    services |= {
        f"{kind}:{env}" for kind in ("kube", "health") for env in ("staging", "production")
    }
    assert set(row["details"]) == services  # every service answered and was recorded


def test_a_crashed_run_gets_its_operation_log_entry(runpath: RunPath) -> None:
    """A runbook run that crashed (its process gone) gets the entry it could not write.

    The run is parked far in the future so no process takes it, then set Crashed through the
    API as the "crash unresponsive runs" automation does; the ``record-crashed-run``
    deployment's trigger starts the recorder on this run path, which writes the entry.
    """
    api = runpath.api
    deployment = api.deployment("stack-smoke/stack-smoke")
    later = {"type": "SCHEDULED", "state_details": {"scheduled_time": "2099-01-01T00:00:00Z"}}
    made = api.http.post(f"/deployments/{deployment['id']}/create_flow_run", json={"state": later})
    assert made.status_code == 201, made.text
    run_id = str(made.json()["id"])
    crashed = {"type": "CRASHED", "name": "Crashed", "message": "test: the process was lost"}
    set_state = api.http.post(
        f"/flow_runs/{run_id}/set_state", json={"state": crashed, "force": True}
    )
    assert set_state.json()["status"] == "ACCEPT", set_state.text
    deadline = time.monotonic() + 120
    row: dict[str, Any] | None = None
    while row is None and time.monotonic() < deadline:
        try:
            row = oplog_row(runpath.stack, run_id)
        except AssertionError:
            time.sleep(1)
    assert row is not None, f"no entry for the crashed run after 120 s; see {runpath.log}"
    assert (row["operation"], row["status"]) == ("stack-smoke", "crashed")
    assert "the process was lost" in row["issues"] and row["impact"].startswith("unknown")
    # By hand (the Run button with the run's id): the entry exists, no second one is written.
    again = api.finish("record-crashed-run/record-crashed-run", timeout=120, flow_run_id=run_id)
    assert_completed(again, runpath.log)
    assert oplog_row(runpath.stack, run_id)["id"] == row["id"]
    assert oplog_row(runpath.stack, again["id"])["impact"].startswith("none: run")


@SERVE_ONLY
def test_ci_webhook_runs_complete_and_ship_their_images(
    runpath: RunPath, ci_runs: dict[str, dict[str, str]]
) -> None:
    started = ci_runs.get(runpath.kind)
    assert started, "the webhook case did not start runs"
    finished = []
    for run_id, image in started.items():
        run = runpath.api.wait(run_id, timeout=300)
        assert_completed(run, runpath.log)
        assert "webhook" in run["tags"]
        row = oplog_row(runpath.stack, run_id)
        assert row["status"] == "succeeded" and row["impact"].endswith(f"-> {image}")
        finished.append((run["end_time"], image))
    last = max(finished)[1]
    assert kube_image("production") == last == served_image(runpath.stack, "production")
