"""The live server's WAL archive (point-in-time recovery's half that never stops): every WAL
file reaches S3 compressed with its checksum, ``wal-push`` is idempotent and never
overwrites, and its faults (an S3 outage, an upload killed midway, the archive command
killed) are seen (the archiver's statistics, the exporter, the WalArchiveFailing alert in
Alertmanager, the server log naming the file) while nothing archived earlier is lost."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from devstack.stack import AWS_REGION, BACKUP_BUCKET, BACKUP_PREFIX, MOTO_KEYS
from devstack.stackinfo import StackInfo
from opsflows.settings import Settings
from tasks.wal_config import PUSH, WalArchive, archive_command, write_config
from tests.backup_support import admin_target, s3
from tests.incident_support import wait_for
from tests.pitr_support import archive_now

WAL_PREFIX = f"{BACKUP_PREFIX}pitr/main/wal/"


@pytest.fixture(scope="module")
def admin(stack: StackInfo) -> Iterator[str]:
    """The superuser's conninfo, with a table of this module's to write WAL through."""
    conninfo = admin_target(stack).conninfo()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS wal_archive_test (payload text)")
    yield conninfo
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS wal_archive_test")
        conn.execute("ALTER SYSTEM RESET archive_command")
        conn.execute("SELECT pg_reload_conf()")


def write(conninfo: str, kib: int = 64) -> None:
    """About ``kib`` KiB of rows that compress about 2:1 (hex digests)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO wal_archive_test SELECT string_agg(md5(random()::text), '')"
            " FROM generate_series(1, 32) g, generate_series(1, %s) r GROUP BY r",
            (kib,),
        )


def archived(stack: StackInfo) -> dict[str, str]:
    """Every archived WAL object: key -> ETag."""
    client = s3(stack.aws_endpoint_url)
    found: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BACKUP_BUCKET, Prefix=WAL_PREFIX
    ):
        found.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return found


def segment(stack: StackInfo, name: str) -> tuple[bytes, dict[str, str]]:
    """The uncompressed WAL file ``name`` from S3, and its object metadata."""
    got = s3(stack.aws_endpoint_url).get_object(Bucket=BACKUP_BUCKET, Key=f"{WAL_PREFIX}{name}.zst")
    body = subprocess.run(
        ["zstd", "-d", "-c", "-q"], input=got["Body"].read(), capture_output=True, check=True
    ).stdout
    return body, got["Metadata"]


def archiver(conninfo: str) -> dict[str, Any]:
    with psycopg.connect(conninfo) as conn:
        cur = conn.execute(
            "SELECT archived_count, failed_count, last_archived_wal, last_failed_wal,"
            " last_failed_time > coalesce(last_archived_time, '-infinity') AS failing"
            " FROM pg_stat_archiver"
        )
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        return dict(zip([c.name for c in cur.description], row, strict=True))


def is_archived(conninfo: str, name: str) -> bool:
    last = archiver(conninfo)["last_archived_wal"]
    return last is not None and str(last)[:24] >= name


def prometheus(stack: StackInfo, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def paged(stack: StackInfo, alertname: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = httpx.get(
        f"{stack.alertmanager_url}/api/v2/alerts",
        params={"filter": f'alertname="{alertname}"', "active": "true"},
        timeout=10,
    ).json()
    return alerts


def live_archive(stack: StackInfo) -> WalArchive:
    return WalArchive(stack.aws_endpoint_url, BACKUP_BUCKET, WAL_PREFIX, AWS_REGION)


@contextmanager
def archiving_through(
    stack: StackInfo, admin: str, archive: WalArchive, curl: str = ""
) -> Iterator[Path]:
    """The live server archives through a config folder of its own (``archive``, extra curl
    options) until the block ends; then ``ALTER SYSTEM RESET`` puts the devstack's back."""
    folder = stack.service_root / "postgres" / f"wal-archive-{uuid.uuid4().hex[:8]}"
    write_config(
        folder,
        archive,
        MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        Settings().os_user,
    )
    if curl:
        with (folder / "curl.conf").open("a") as conf:
            conf.write(curl)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER SYSTEM SET archive_command = {}").format(
                    sql.Literal(archive_command(folder))
                )
            )
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(1.5)  # the archiver reads its configuration between files
        yield folder
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET archive_command")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(1.5)
        shutil.rmtree(folder, ignore_errors=True)


def switch(conninfo: str) -> str:
    """Close the current WAL file (the archiver picks it up); its name."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row: Any = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        return str(row[0])


def processes(user: str, *needles: str) -> list[int]:
    """PIDs of ``user``'s processes whose command line holds every needle."""
    uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True).stdout)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if all(any(n in w for w in words) for n in needles):
            found.append(int(entry.name))
    return found


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_each_wal_file_lands_compressed_with_its_checksum(stack: StackInfo, admin: str) -> None:
    write(admin)
    name = archive_now(admin)
    body, meta = segment(stack, name)
    assert len(body) == 16 * 1024 * 1024 == int(meta["bytes"])
    assert hashlib.sha256(body).hexdigest() == meta["sha256"]
    assert (
        s3(stack.aws_endpoint_url).head_object(Bucket=BACKUP_BUCKET, Key=f"{WAL_PREFIX}{name}.zst")[
            "ContentLength"
        ]
        < len(body) / 2
    )


def test_wal_push_is_idempotent_and_never_overwrites(
    stack: StackInfo, admin: str, tmp_path: Path
) -> None:
    """PostgreSQL retries a file whose archiving it never heard the end of: the same content
    again succeeds without an upload; different content under the same name is refused."""
    write(admin)
    name = archive_now(admin)
    key = f"{WAL_PREFIX}{name}.zst"
    client = s3(stack.aws_endpoint_url)
    before = client.head_object(Bucket=BACKUP_BUCKET, Key=key)
    body, meta = segment(stack, name)
    copy = tmp_path / name
    copy.write_bytes(body)
    folder = stack.service_root / "postgres" / "wal-archive"
    push = [str(folder / PUSH), str(folder), str(copy), name]

    again = subprocess.run(push, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "already archived with the same content" in again.stderr

    changed = bytearray(body)
    changed[len(changed) // 2] ^= 0xFF
    copy.write_bytes(bytes(changed))
    refused = subprocess.run(push, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert f"wal-push: {name}: already archived with DIFFERENT content" in refused.stderr
    assert "refusing to overwrite" in refused.stderr

    after = client.head_object(Bucket=BACKUP_BUCKET, Key=key)
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    assert segment(stack, name) == (body, meta)
    assert not list((folder / "tmp").iterdir())  # its temporary files are gone


def test_an_s3_outage_fails_archiving_visibly_and_loses_nothing(
    stack: StackInfo, admin: str
) -> None:
    """S3 unreachable: every attempt fails, the server log names the file, the exporter
    reports the archiver failing and WalArchiveFailing (P2, backup-failed) reaches
    Alertmanager; S3 back: the file is archived and every earlier one is as it was."""
    write(admin)
    archive_now(admin)
    earlier = archived(stack)
    unreachable = WalArchive("http://127.0.0.1:9", BACKUP_BUCKET, WAL_PREFIX, AWS_REGION)
    with archiving_through(stack, admin, unreachable):
        write(admin)
        name = switch(admin)
        wait_for(
            lambda: (s := archiver(admin))["failing"] and s["last_failed_wal"] == name,
            60,
            f"archiving {name} did not fail",
        )
        log = stack.postgres_log_file
        wait_for(lambda: f"wal-push: {name}: S3 unreachable" in log.read_text(), 30, "no log line")
        wait_for(
            lambda: prometheus(stack, 'opsflows_wal_archiver_failing{job="postgres"} == 1'),
            60,
            "the exporter did not report the archiver failing",
        )
        (alert,) = wait_for(lambda: paged(stack, "WalArchiveFailing"), 90, "no alert")
        assert alert["labels"]["severity"] == "P2"
        assert alert["labels"]["runbook"] == "backup-failed"
        assert alert["labels"]["environment"] == "production"
        assert [r["name"] for r in alert["receivers"]] == ["opsflows"]
        assert not is_archived(admin, name)
    wait_for(lambda: is_archived(admin, name), 60, f"{name} not archived once S3 was back")
    body, meta = segment(stack, name)
    assert hashlib.sha256(body).hexdigest() == meta["sha256"]
    now = archived(stack)
    assert {k: now.get(k) for k in earlier} == earlier  # nothing earlier lost or rewritten
    wait_for(
        lambda: prometheus(stack, 'opsflows_wal_archiver_failing{job="postgres"} == 0'),
        60,
        "the exporter still reports the archiver failing",
    )


@pytest.mark.parametrize(
    ("victim", "logged"),
    [
        # curl killed mid-PUT: wal-push fails the attempt, the archiver retries the file
        ("curl", "upload failed"),
        # the archive command itself killed: the archiver process exits, the postmaster
        # starts a new one, which archives the file from the start
        # (a signal, or sh's exit code 137 for its killed child)
        ("bash", "archive command (was terminated by signal 9|failed with exit code 137)"),
    ],
)
def test_an_archive_killed_mid_upload_is_retried_and_loses_nothing(
    stack: StackInfo, admin: str, victim: str, logged: str
) -> None:
    write(admin)
    archive_now(admin)
    earlier = archived(stack)
    failed_before = archiver(admin)["failed_count"]
    user = Settings().os_user
    log = stack.postgres_log_file
    log_from = log.stat().st_size
    # Slow uploads (curl's --limit-rate) leave time to kill one midway.
    with archiving_through(stack, admin, live_archive(stack), curl="limit-rate = 100k\n"):
        write(admin, kib=1024)
        name = switch(admin)
        needles = ("-X", "PUT", f"{name}.zst") if victim == "curl" else (PUSH, name)
        wait_for(lambda: processes(user, "curl", "-X", "PUT", f"{name}.zst"), 60, "no upload")
        time.sleep(0.5)  # midway through the upload
        found = processes(user, victim, *needles)
        # bash's command substitutions are forks with its command line: kill the first one
        (pid,) = [p for p in found if parent(p) not in found]
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: re.search(logged, log.read_text()[log_from:]), 30, f"no '{logged}' in the log"
        )
    wait_for(lambda: is_archived(admin, name), 120, f"{name} not archived after the kill")
    body, meta = segment(stack, name)
    assert hashlib.sha256(body).hexdigest() == meta["sha256"]  # a whole file, not a part
    now = archived(stack)
    assert {k: now.get(k) for k in earlier} == earlier
    if victim == "curl":
        assert archiver(admin)["failed_count"] > failed_before
    assert not archiver(admin)["failing"]
