"""The rotate-credentials flow end to end, through the real Prefect server and the local stack.

Each scenario builds its own ``World`` (``tests/rotation_support.py``): its own role, database,
secret and consumers, so nobody else's ``app`` credential changes under it.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.postgres import PostgresTarget
from devstack.postgres import bindir
from devstack.stack import StackInfo
from tests.migrate_support import run_flow
from tests.rotation_support import World, assert_no_secrets


@pytest.fixture(scope="module")
def single(stack: StackInfo, bootstrapped: object) -> Iterator[tuple[World, dict[str, Any]]]:
    """A single-user rotation with two consumers, and what the world looked like before."""
    w = World(stack, consumers=2).create()
    before = {
        "value": w.value(),
        "generations": [w.deployment(e)["metadata"]["generation"] for e in w.envs],
    }
    state = w.run()
    assert state.is_completed(), state.message
    before["result"] = state.result()
    yield w, before
    w.remove()


def test_single_user_rotation_switches_consumers_and_retires_the_old_password(
    single: tuple[World, dict[str, Any]],
) -> None:
    w, before = single
    old, new = before["value"], w.value()
    assert new["version"] != old["version"] and new["username"] == old["username"]
    assert w.stages() == {old["version"]: ["AWSPREVIOUS"], new["version"]: ["AWSCURRENT"]}
    assert w.logs_in(new)
    assert not w.logs_in(old)
    for env, generation in zip(w.envs, before["generations"], strict=True):
        carried = w.kube_secret(env)
        assert carried["password"] == new["password"] and carried["username"] == new["username"]
        assert carried["annotations"]["opsflows.io/credential-version"] == new["version"]
        dep = w.deployment(env)
        assert dep["metadata"]["generation"] == generation + 1
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["opsflows.io/credential-version"] == new["version"]
        assert "kubectl.kubernetes.io/restartedAt" in annotations
        assert dep["status"]["availableReplicas"] == 1
    assert w.block_password() == new["password"]
    result = before["result"]
    assert result["current_version"] == new["version"]
    assert result["steps"][:3] == ["create_pending", "set_password", "test"]
    assert result["steps"][-3:] == ["finish", "done", "verify"]
    entry = w.oplog(w.run_ids[0])
    assert entry["status"] == "succeeded" and new["version"] in entry["impact"]


def test_a_completed_rotation_rerun_changes_nothing(single: tuple[World, dict[str, Any]]) -> None:
    w, _ = single
    stages, value = w.stages(), w.value()
    generations = [w.deployment(e)["metadata"]["generation"] for e in w.envs]

    state = w.run()

    assert state.is_completed(), state.message
    assert state.result()["steps"] == ["done", "verify"]
    assert w.stages() == stages
    assert w.value() == value and w.logs_in(value)
    assert [w.deployment(e)["metadata"]["generation"] for e in w.envs] == generations
    assert "no change" in w.oplog(w.run_ids[-1])["impact"]


def _pgbench(cred: dict[str, Any], seconds: int, script: str) -> dict[str, Any]:
    env = {
        "PGHOST": cred["host"], "PGPORT": str(cred["port"]), "PGUSER": cred["username"],
        "PGPASSWORD": cred["password"], "PGDATABASE": cred["dbname"], "PATH": "/usr/bin:/bin",
    }  # fmt: skip
    argv = [str(bindir() / "pgbench"), "-n", "-C", "-c", "2", "-T", str(seconds), "-f", script]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 30)
    out = done.stdout + done.stderr
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return {
        "rc": done.returncode,
        "aborted": "aborted" in out or "error" in out,
        "processed": int(processed.group(1)) if processed else 0,
        "failed": int(failed.group(1)) if failed else -1,
    }


@pytest.fixture(scope="module")
def alternating(
    stack: StackInfo, bootstrapped: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, dict[str, Any]]]:
    """An alternating-users rotation while pgbench (``-C``) runs on the credential read at start."""
    w = World(stack, owns_tables=True).create()
    script = tmp_path_factory.mktemp("pgbench") / "orders.sql"
    script.write_text("SELECT count(*) FROM orders;\n")
    start = w.value()
    rotated = threading.Event()
    chunks: list[dict[str, Any]] = []

    def workload() -> None:  # back-to-back 1 s chunks until one ends after the rotation
        while True:
            finished_before = rotated.is_set()
            chunks.append(_pgbench(start, 1, str(script)) | {"after": finished_before})
            if finished_before:
                return

    worker = threading.Thread(target=workload)
    worker.start()
    try:
        while not chunks:
            time.sleep(0.05)  # the workload is running before the rotation starts
        state = w.run(strategy="alternating_users")
    finally:
        rotated.set()
        worker.join(timeout=60)
    assert state.is_completed(), state.message
    yield w, {"start": start, "chunks": chunks, "result": state.result()}
    w.remove()


def test_alternating_users_keep_a_pgbench_workload_running_without_failures(
    alternating: tuple[World, dict[str, Any]],
) -> None:
    w, seen = alternating
    chunks = seen["chunks"]
    assert len(chunks) >= 2 and chunks[-1]["after"]
    assert all(c["rc"] == 0 and not c["aborted"] for c in chunks), chunks
    assert sum(c["failed"] for c in chunks) == 0 and min(c["failed"] for c in chunks) == 0
    assert sum(c["processed"] for c in chunks) > 0
    start, now = seen["start"], w.value()
    assert now["username"] == w.name + "_clone"  # the role that was not in use
    assert w.logs_in(now) and w.logs_in(start)  # both roles stay valid
    assert seen["result"]["steps"][0] == "create clone role"
    assert w.kube_secret(w.envs[0])["username"] == now["username"]


def test_the_next_alternating_rotation_targets_the_other_role(
    alternating: tuple[World, dict[str, Any]],
) -> None:
    w, seen = alternating
    clone = w.value()

    state = w.run(strategy="alternating_users", rotation_id="test-2")

    assert state.is_completed(), state.message
    now = w.value()
    assert now["username"] == w.name
    assert w.logs_in(now) and w.logs_in(clone)
    assert not w.logs_in(seen["start"])  # the role's password from before is retired now
    assert "create clone role" not in state.result()["steps"]


def test_a_migration_under_either_role_of_the_pair_alters_the_roles_tables(
    alternating: tuple[World, dict[str, Any]], tmp_path: Path
) -> None:
    """After an alternating rotation the database block names ``<role>_clone``; a migration
    through that block alters the table ``<role>`` owns, and what it creates stays the
    role's, so the next rotation (back to ``<role>``) migrates it again."""
    w, _ = alternating
    if w.value()["username"] == w.name:  # the other case ran first: make the clone current
        assert w.run(strategy="alternating_users", rotation_id="test-mig").is_completed()
    assert PostgresTarget.load(w.block).user == w.name + "_clone"
    first = tmp_path / "first"
    first.mkdir()
    (first / "001_placed_at.sql").write_text(
        "ALTER TABLE orders ADD COLUMN placed_at timestamptz;\n"
        "CREATE TABLE refunds (id bigint PRIMARY KEY, order_id bigint);\n"
    )
    state = run_flow(first, w.block, w.envs[0], skip_backup=True)
    assert state.is_completed(), state.message

    assert w.run(strategy="alternating_users", rotation_id="test-mig-2").is_completed()
    assert PostgresTarget.load(w.block).user == w.name
    (first / "002_refund_amount.sql").write_text("ALTER TABLE refunds ADD COLUMN amount numeric;\n")
    state = run_flow(first, w.block, w.envs[0], skip_backup=True)
    assert state.is_completed(), state.message
    with w.admin(w.name) as conn:
        owners = conn.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    assert {t for t, o in owners if o != w.name} == set(), owners


def test_no_secret_value_appears_in_any_log_line_artifact_or_state(
    single: tuple[World, dict[str, Any]], alternating: tuple[World, dict[str, Any]]
) -> None:
    worlds = [single[0], alternating[0]]
    run_ids = [r for w in worlds for r in w.run_ids]
    values = set().union(*(w.passwords for w in worlds))
    assert len(run_ids) >= 3 and len(values) >= 4
    assert assert_no_secrets(run_ids, values) > 20
