"""The backup, restore and drill flows through the real Prefect server and the local stack."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client

from decisions.backups import (
    Fingerprint,
    Manifest,
    TableFingerprint,
    backup_id_for,
    manifest_to_dict,
)
from devstack import stack as devstack
from devstack.stack import BACKUP_BUCKET
from flows.backup import backup_database
from flows.restore import restore_database
from flows.restore_drill import restore_drill
from opsflows.errors import BackupMissing, GateRejected, VerificationFailed
from tests.backup_support import BackupEnv, admin_target, backup_env, fill
from tests.support import assert_no_secret, flow_run_artifacts, flow_run_id, flow_run_texts


@pytest.fixture
def env(stack: object, bootstrapped: object) -> Iterator[BackupEnv]:
    with backup_env(stack, "e2e") as made:
        fill(made, 50)
        yield made


def _customers(env: BackupEnv, database: str | None = None) -> list[str]:
    return [r[0] for r in env.sql("SELECT name FROM customers ORDER BY id", database=database)]


def _backup(env: BackupEnv, **kw: Any) -> Any:
    return backup_database(database=env.db_block, store=env.store_block, reason="e2e", **kw)


def _restore(env: BackupEnv, **kw: Any) -> Any:
    return restore_database(
        database=env.db_block, admin_database=env.admin_block, store=env.store_block, **kw
    )


def _oplog(stack: Any, run_id: UUID) -> tuple[str, dict[str, Any]]:
    admin = admin_target(stack, "opsflows")
    import psycopg

    with psycopg.connect(admin.conninfo()) as conn:
        row = conn.execute(
            "SELECT status, details FROM ops_log WHERE flow_run_id = %s", (str(run_id),)
        ).fetchone()
    assert row is not None, "every run writes one operation-log row"
    return row[0], row[1]


def test_restore_to_an_earlier_timestamp_gives_the_earlier_rows(env: BackupEnv, stack: Any) -> None:
    first_state = _backup(env, return_state=True)
    first = first_state.result()
    earlier = _customers(env)
    assert first["tables"] == {"public.customers": 50, "public.orders": 50}
    assert first["key"] in env.keys() and first["manifest_key"] in env.keys()
    env.sql("UPDATE customers SET name = 'renamed ' || id WHERE id <= 10; DELETE FROM orders")
    second = _backup(env)
    assert second["tables"]["public.orders"] == 0

    between = (
        datetime.fromisoformat(first["snapshot_at"])
        + (
            datetime.fromisoformat(second["snapshot_at"])
            - datetime.fromisoformat(first["snapshot_at"])
        )
        / 2
    )
    at = between.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # naive text means UTC
    state = _restore(env, at=at, return_state=True)
    result = state.result()
    assert result["backup_id"] == first["backup_id"]
    assert result["verification"]["success"] and result["rto_s"] > 0
    scratch = result["scratch_database"]
    assert _customers(env, scratch) == earlier
    assert env.sql("SELECT count(*) FROM orders", database=scratch) == [(50,)]
    assert _customers(env) != earlier, "the live database is untouched"

    newest = _restore(env)
    assert newest["backup_id"] == second["backup_id"]
    assert _customers(env, newest["scratch_database"]) == _customers(env)

    run = flow_run_id(state)
    status, details = _oplog(stack, run)
    assert status == "succeeded" and details["backup_id"] == first["backup_id"]
    assert any("restore-verification" in a for a in flow_run_artifacts(run))
    secrets = devstack.stack_secrets(Path(stack.state_dir))
    texts = flow_run_texts(run) + flow_run_texts(flow_run_id(first_state))
    assert any("backup-catalog" in t for t in texts), "the backup publishes its catalog"
    assert_no_secret(texts, [secrets["postgres"], secrets["app"]])

    with pytest.raises(BackupMissing, match=first["backup_id"]):
        _restore(env, at="2001-01-01 00:00:00")


def test_corrupt_backup_fails_verification_and_leaves_live_untouched(
    env: BackupEnv, stack: Any
) -> None:
    """(Truncation is covered at the task level in tests/integration/test_dump_restore.py.)"""
    made = _backup(env)
    body = env.client.get_object(Bucket=BACKUP_BUCKET, Key=made["key"])["Body"].read()
    body = body[:100] + bytes([body[100] ^ 0x55]) + body[101:]
    env.client.put_object(Bucket=BACKUP_BUCKET, Key=made["key"], Body=body)
    before = _customers(env)
    state = _restore(env, replace_live=True, approval_poll_s=1, return_state=True)
    assert state.is_failed()
    with pytest.raises(VerificationFailed, match="checksum mismatch") as info:
        state.result()
    assert made["sha256"] in str(info.value)
    assert _customers(env) == before
    assert env.databases() == [env.dbname], "no scratch database is left behind"
    status, _ = _oplog(stack, flow_run_id(state))
    assert status == "failed"


def _paused_run(tag: str, timeout_s: float = 90) -> UUID:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
            )
            paused = [r for r in runs if r.state is not None and r.state.is_paused()]
            if paused:
                return paused[0].id
            time.sleep(0.5)
    raise AssertionError("the restore never paused for approval")


def _in_thread(env: BackupEnv, tag: str) -> tuple[threading.Thread, dict[str, Any]]:
    from prefect import tags

    out: dict[str, Any] = {}

    def run() -> None:
        with tags(tag):
            out["state"] = _restore(
                env, replace_live=True, approval_poll_s=1, approval_timeout_s=120, return_state=True
            )

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _pause_state(run: UUID) -> UUID:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run).state
    assert state is not None and state.is_paused(), state
    return state.id


def _paused_again(run: UUID, before: UUID, timeout_s: float = 60) -> None:
    """Wait until ``run`` paused again (a new Paused state): its answer was not enough."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run).state
            assert state is not None and not state.is_final(), state
            if state.is_paused() and state.id != before:
                return
            time.sleep(0.3)
    raise AssertionError("the run did not ask again after a refused approval")


def test_replacing_live_waits_for_approval_then_swaps(env: BackupEnv, stack: Any) -> None:
    from prefect.flow_runs import resume_flow_run

    made = _backup(env)
    earlier = _customers(env)
    env.sql("UPDATE customers SET name = 'after the backup'")

    tag = f"restore-{env.dbname}"
    thread, out = _in_thread(env, tag)
    run = _paused_run(tag)
    assert _customers(env) == ["after the backup"] * 50, "nothing changes while paused"
    request = next(a for a in flow_run_artifacts(run) if a.startswith("restore-approval"))
    # The form says what is approved: the backup, its age, the verification, both sizes.
    for said in (made["backup_id"], " ago**", "expectations passed", "live database", "MiB"):
        assert said in request, said
    # The approver is required: the server refuses the answer and the run stays paused.
    for blank in ("", "   "):
        with pytest.raises(RuntimeError, match="approver"):
            resume_flow_run(run, run_input={"approve": True, "approver": blank, "reason": "x"})
    assert _paused_run(tag, timeout_s=1) == run
    assert _customers(env) == ["after the backup"] * 50
    # Replacing a live database needs two different DBAs (policy/roles.yaml): someone outside
    # the policy, and the same DBA twice, are refused and recorded; the run keeps waiting.
    for who in ("mallory", "dana", "dana"):
        state_id = _pause_state(run)
        resume_flow_run(run, run_input={"approve": True, "approver": who, "reason": "e2e"})
        _paused_again(run, state_id)
        assert _customers(env) == ["after the backup"] * 50, f"{who} alone replaced live"
    resume_flow_run(run, run_input={"approve": True, "approver": "Erin ", "reason": "second"})
    thread.join(timeout=120)
    result = out["state"].result()
    assert result["replaced_live"] and result["backup_id"] == made["backup_id"]
    assert _customers(env) == earlier, "the live database now holds the backup's rows"
    kept = result["previous_database"]
    assert _customers(env, kept) == ["after the backup"] * 50, "the old database is kept"
    owner = env.sql(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
        (env.dbname,),
        database="postgres",
    )
    assert owner == [("app",)]
    status, details = _oplog(stack, run)
    assert status == "succeeded" and details["approved_by"] == "dana, erin"
    refused = [(r["approver"], r["why"]) for r in details["approval_refusals"]]
    assert [who for who, _ in refused] == ["mallory", "dana"], refused
    assert "not in the roles policy" in refused[0][1] and "already approved" in refused[1][1]
    assert [(a["approver"], a["role"]) for a in details["approvals"]] == [
        ("dana", "dba"),
        ("erin", "dba"),
    ]

    # A rejection leaves the live database alone and drops the scratch database.
    thread, out = _in_thread(env, tag + "-no")
    run = _paused_run(tag + "-no")
    resume_flow_run(run, run_input={"approve": False, "approver": "bob", "reason": "not now"})
    thread.join(timeout=120)
    with pytest.raises(GateRejected, match="rejected by bob: not now"):
        out["state"].result()
    assert _customers(env) == earlier
    assert sorted(env.databases()) == sorted([env.dbname, kept])


class _Sink(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", "0"))
        self.received.append(json.loads(self.rfile.read(length) or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sink_routing(env: BackupEnv) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A NotificationRouting block whose P2/P3 go to a webhook served by this test."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from blocks.notify import NotificationRouting

    received: list[dict[str, Any]] = []
    handler = type("Sink", (_Sink,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"{env.db_block}-sink"
    CustomWebhookNotificationBlock(
        name="drill sink",
        url=f"http://127.0.0.1:{server.server_address[1]}/hook",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,
    ).save(name, overwrite=True)
    ref = f"custom-webhook/{name}"
    NotificationRouting(routes={"P1": [], "P2": [ref], "P3": [ref], "P4": []}).save(
        name, overwrite=True
    )
    yield name, received
    server.shutdown()
    for cls in (CustomWebhookNotificationBlock, NotificationRouting):
        cls.delete(name)


def test_restore_drill_records_rto_rpo_and_notifies(
    env: BackupEnv, stack: Any, sink_routing: tuple[str, list[dict[str, Any]]]
) -> None:
    routing, received = sink_routing
    made = _backup(env)
    drill = dict(
        database=env.db_block,
        admin_database=env.admin_block,
        store=env.store_block,
        routing=routing,
    )
    state = restore_drill(**drill, return_state=True)  # type: ignore[arg-type]
    result = state.result()
    assert result["backup_id"] == made["backup_id"] and not result["backup_too_old"]
    assert env.databases() == [env.dbname], "the drill drops its scratch database"
    status, details = _oplog(stack, flow_run_id(state))
    assert status == "succeeded"
    # RPO is the age of the backup when the drill ran: from the manifest's snapshot time to
    # the drill's own start and end; RTO fits inside the drill run's wall time.
    snapshot = datetime.fromisoformat(made["snapshot_at"])
    assert datetime.fromisoformat(details["backup_snapshot_at"]) == snapshot
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id(state))
    assert run.start_time is not None and run.end_time is not None
    assert (run.start_time - snapshot).total_seconds() <= details["rpo_s"]
    assert details["rpo_s"] <= (run.end_time - snapshot).total_seconds()
    assert 0 < details["rto_s"] <= (run.end_time - run.start_time).total_seconds()
    assert received == []
    verified = [k for k in env.keys() if k.endswith("verified.json")]
    assert len(verified) == 1, "a verified drill marks the backup verified"

    stale = restore_drill(**drill, max_backup_age_h=0.0001)  # type: ignore[arg-type]
    assert stale["backup_too_old"]
    assert [m["subject"] for m in received] == [f"[P3] newest backup of {env.dbname} is too old"]

    env.client.delete_object(Bucket=BACKUP_BUCKET, Key=made["key"])
    failed = restore_drill(**drill, return_state=True)  # type: ignore[arg-type]
    assert failed.is_failed()
    assert received[-1]["subject"] == f"[P2] restore drill of {env.dbname} failed"
    assert _oplog(stack, flow_run_id(failed))[0] == "failed"


def _fake_backup(
    env: BackupEnv, days_ago: int, *, verified: bool = False, manifest: bool = True
) -> str:
    at = datetime.now(UTC) - timedelta(days=days_ago)
    bid = backup_id_for(at)
    base = env.store.key(env.dbname, bid)
    env.client.put_object(Bucket=BACKUP_BUCKET, Key=f"{base}/dump.pgc", Body=b"x" * 10)
    if manifest:
        fake = Manifest(
            backup_id=bid,
            database=env.dbname,
            server_version="15",
            started_at=at,
            finished_at=at,
            snapshot_at=at,
            dump_key=f"{base}/dump.pgc",
            size_bytes=10,
            sha256="0" * 64,
            parts=1,
            compression="zstd:1",
            fingerprint=Fingerprint((TableFingerprint("public.t", 1),), "0" * 64),
        )
        body = json.dumps(manifest_to_dict(fake)).encode()
        env.client.put_object(Bucket=BACKUP_BUCKET, Key=f"{base}/manifest.json", Body=body)
    if verified:
        env.client.put_object(Bucket=BACKUP_BUCKET, Key=f"{base}/verified.json", Body=b"{}")
    return bid


def test_retention_keeps_what_it_must(env: BackupEnv) -> None:
    from blocks.storage import BackupStore

    store = BackupStore.load(env.store_block)
    store.min_backups = 2
    store.save(env.store_block, overwrite=True)
    old = {d: _fake_backup(env, d, verified=(d == 42)) for d in (40, 41, 42, 43)}
    # A dump without a manifest, named 45 days old but written just now (S3's clock): a run
    # may still be writing its manifest, so it is kept (past 6 h it goes: unit tests).
    leftover = _fake_backup(env, 45, manifest=False)
    dry = _backup(env, dry_run_retention=True)
    # One new backup + the 40-day one are the newest two; 42 days is the newest verified.
    assert set(dry["retention_expired"]) == {old[41], old[43]}
    assert dry["deleted_keys"] == []
    assert all(bid in " ".join(env.keys()) for bid in [*old.values(), leftover])

    made = _backup(env)
    ids = {k.split("/")[-2] for k in env.keys()}
    assert ids == {dry["backup_id"], made["backup_id"], old[42], leftover}, (
        "keeps the two new backups, the newest verified one and the recent leftover"
    )
    assert set(made["retention_expired"]) == {old[40], old[41], old[43]}


def test_bad_input_fails_before_any_side_effect(env: BackupEnv) -> None:
    from opsflows.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="cannot read 'yesterday' as a timestamp"):
        _restore(env, at="yesterday")
    with pytest.raises(ConfigurationError, match="restore point 2999-01-01T00:00:00.* future"):
        _restore(env, at="2999-01-01 00:00:00")
    with pytest.raises(ConfigurationError, match="unknown compression 'lz4'"):
        _backup(env, compression="lz4")
    with pytest.raises(ConfigurationError, match="missing or invalid"):
        backup_database(database="no-such-block", store=env.store_block)
    assert env.keys() == [] and env.databases() == [env.dbname]


def test_restore_not_matching_its_manifest_fails_and_drops_the_scratch(env: BackupEnv) -> None:
    made = _backup(env)
    body = json.loads(
        env.client.get_object(Bucket=BACKUP_BUCKET, Key=made["manifest_key"])["Body"].read()
    )
    for table in body["fingerprint"]["tables"]:
        if table["name"] == "public.customers":
            table["rows"] += 1  # the manifest promises a row the dump does not hold
    env.client.put_object(
        Bucket=BACKUP_BUCKET, Key=made["manifest_key"], Body=json.dumps(body).encode()
    )
    with pytest.raises(VerificationFailed, match="did not match its manifest: row counts"):
        _restore(env)
    assert env.databases() == [env.dbname], "the failed restore's scratch database is gone"
    assert not any(k.endswith("verified.json") for k in env.keys())
