"""The monthly rotation as its schedule starts it, while the app keeps opening connections.

The served ``rotate-credentials/rotate-credentials-monthly`` deployment is started through the
REST API with its own parameters (what the cron schedule does; only ``rotation_id`` is named, so
each case is a new rotation instead of this month's), on the stack's own application secret
``opsflows/app/db``, its consumers (staging and production) and the ``app-db`` block. Meanwhile
``devstack.dbload.ConnectionLoad`` runs ``pgbench -C`` against the app database, reading the
credential from AWSCURRENT before every 10-connection chunk, as an app using Secrets Manager
does. The scheduled (alternating users) rotation must not refuse a single connection; a
``single_user`` rotation, measured the same way, refuses them from ``set_password`` until
``finish`` (the window the README quotes). The module ends with the stack's ``app`` role in
force again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest

from decisions.rotation import CLONE_SUFFIX, base_role, clone_role
from devstack.dbload import ConnectionLoad, pgbench_for, secrets_manager_current, summarize
from devstack.postgres import APP_ROLE
from devstack.stack import APP_DB_SECRET, AWS_REGION, MOTO_KEYS, StackInfo
from tests.migrate_support import target_for
from tests.served_support import SERVE_ONLY, RunPath, assert_completed, describe
from tests.support import oplog_row

MONTHLY = "rotate-credentials/rotate-credentials-monthly"


class AppSecret:
    """The stack's application credential in Secrets Manager, and a load that reads it."""

    def __init__(self, stack: StackInfo) -> None:
        self.stack = stack
        self.sm = boto3.client(
            "secretsmanager",
            endpoint_url=stack.aws_endpoint_url,
            region_name=AWS_REGION,
            aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        )
        self.admin = target_for(stack, "app")
        self.pgbench = pgbench_for(self.admin.conninfo())

    def current(self) -> dict[str, Any]:
        raw = self.sm.get_secret_value(SecretId=APP_DB_SECRET, VersionStage="AWSCURRENT")
        return dict(json.loads(raw["SecretString"]), version=raw["VersionId"])

    def role_exists(self, role: str) -> bool:
        with psycopg.connect(self.admin.conninfo(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            return found.fetchone() is not None

    def rotate_under_load(self, runpath: RunPath, **params: Any) -> dict[str, Any]:
        """Start the monthly deployment (its parameters + ``params``) under the load."""
        before = self.current()
        load = ConnectionLoad(secrets_manager_current(self.sm, APP_DB_SECRET), self.pgbench)
        with load:
            load.wait_for_chunks(5)  # the app is logging in before the rotation starts
            rotation_id = f"served-schedule-{uuid.uuid4().hex[:8]}"
            started = time.time()
            run = runpath.api.finish(MONTHLY, timeout=300, rotation_id=rotation_id, **params)
            ended = time.time()
            load.wait_for_chunks(5)  # and goes on logging in with what AWSCURRENT names now
        during = load.between(started, ended)
        seen = summarize(load.chunks) | {
            "chunks_during_run": len(during),
            "run_s": round(ended - started, 2),
        }
        print(f"rotation under load {params or '(scheduled parameters)'}: {seen}")
        return {"before": before, "after": self.current(), "run": run, "load": seen}


@pytest.fixture(scope="module")
def app_secret(runpath: RunPath) -> Iterator[AppSecret]:
    secret = AppSecret(runpath.stack)
    yield secret
    if secret.current()["username"] != APP_ROLE:  # put the stack's own role back in force
        run = runpath.api.finish(MONTHLY, timeout=300, rotation_id=f"served-{uuid.uuid4().hex}")
        assert run["state"]["type"] == "COMPLETED", describe(run)
        assert secret.current()["username"] == APP_ROLE


@SERVE_ONLY
def test_the_scheduled_rotation_refuses_no_new_connection(
    runpath: RunPath, app_secret: AppSecret
) -> None:
    deployment = runpath.api.deployment(MONTHLY)
    assert [s["schedule"].get("cron") for s in deployment["schedules"]] == ["0 4 1 * *"]
    clone_existed = app_secret.role_exists(clone_role(app_secret.current()["username"]))

    seen = app_secret.rotate_under_load(runpath)

    run, load, before, after = seen["run"], seen["load"], seen["before"], seen["after"]
    assert_completed(run, runpath.log)
    assert load["failed_connections"] == 0, load
    assert load["chunks_during_run"] >= 5 and load["connections"] > 50, load
    assert run["parameters"].get("strategy") == "alternating_users", run["parameters"]
    # the other role of the pair took over, and the load logged in as both
    assert base_role(after["username"]) == base_role(before["username"]) == APP_ROLE
    assert after["username"] != before["username"] and after["version"] != before["version"]
    assert set(load["roles"]) == {APP_ROLE, APP_ROLE + CLONE_SUFFIX}, load
    row = oplog_row(runpath.stack, run["id"])
    assert row["status"] == "succeeded" and row["details"]["strategy"] == "alternating_users"
    if not clone_existed:  # a fresh stack: the scheduled run made the pair itself
        assert row["details"]["steps"].startswith("create clone role"), row["details"]


@SERVE_ONLY
def test_single_user_refuses_new_connections_until_the_rotation_finishes(
    runpath: RunPath, app_secret: AppSecret
) -> None:
    seen = app_secret.rotate_under_load(runpath, strategy="single_user")

    run, load, before, after = seen["run"], seen["load"], seen["before"], seen["after"]
    assert_completed(run, runpath.log)
    assert after["username"] == before["username"] and after["version"] != before["version"]
    # the old password stops working at set_password, AWSCURRENT moves at finish: in between
    # every new connection of a consumer reading AWSCURRENT is refused
    assert load["failed_connections"] > 0 and load["window_ms"] > 0, load
    assert load["window_ms"] <= load["run_s"] * 1000 + 1000, load
