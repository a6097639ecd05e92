"""A scratch PostgreSQL instance recovered from a base backup to a moment in time.

Its own data directory (a new temporary folder) and no TCP port: it listens only on a Unix
socket in that folder (mode 0700), with ``trust`` for local connections, so nobody but its
OS user (and root) reaches it, and the roles' passwords as they were at the target do not
matter. It runs as the unprivileged OS user (``OPSFLOWS_OS_USER``) when the runbook runs as
root (PostgreSQL refuses root), archives nothing, and fetches WAL with ``wal-fetch`` from
the store, each file checked against its SHA-256 (``tasks/wal_config.py``). Recovery stops
at ``recovery_target_time`` and the instance is promoted there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from prefect.logging import get_run_logger

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from decisions.wal import RestorePlan
from opsflows.errors import ConfigurationError, PermanentError, Stalled
from opsflows.settings import get_settings
from tasks.pipes import kill_group, pg_tool, spawn
from tasks.pitr_store import wal_prefix
from tasks.storage import aws_errors
from tasks.wal_config import FETCH_ERRORS, WalArchive, restore_command, write_config

_CHUNK = 1024 * 1024
_READY = "database system is ready to accept connections"
_NOT_REACHED = "recovery ended before configured recovery target was reached"
_STOPPED = re.compile(r"recovery stopping (?:before|after) commit of transaction \d+, time (.+)")
_LAST = re.compile(r"last completed transaction was at log time (.+)")


@dataclass(frozen=True)
class Recovered:
    """A promoted scratch instance: how to reach it and what recovery said."""

    folder: Path
    socket_dir: Path
    port: int
    version_num: int
    seconds: float
    stopped_at: str  # the first commit after the target (not replayed), as PostgreSQL logs it
    last_replayed: str  # the last transaction replayed
    wal_fetched: int

    def target(self, admin: PostgresTarget, database: str) -> PostgresTarget:
        """``admin``'s role on the scratch instance's socket (trust: no password used)."""
        return admin.model_copy(
            update={
                "host": str(self.socket_dir),
                "port": self.port,
                "database": database,
                "sslmode": "disable",
            }
        )


def _os_user() -> str | None:
    """The user the instance runs as: ``OPSFLOWS_OS_USER`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    user = get_settings().os_user
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ConfigurationError(
            f"OS user {user!r} for the scratch instance does not exist (PostgreSQL refuses "
            "to run as root)",
            hint="set OPSFLOWS_OS_USER to the unprivileged user PostgreSQL runs as",
        ) from None
    return user


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def archive_of(store: BackupStore, cluster: str) -> tuple[WalArchive, str, str]:
    """Where ``wal-fetch`` finds the cluster's WAL, and the key pair it signs with."""
    creds = store.aws_credentials
    params = creds.aws_client_parameters
    region = creds.region_name or "us-east-1"
    endpoint = params.endpoint_url or f"https://s3.{region}.amazonaws.com"
    secret = creds.aws_secret_access_key
    return (
        WalArchive(str(endpoint), store.bucket, wal_prefix(store, cluster), region),
        creds.aws_access_key_id or "",
        secret.get_secret_value() if secret is not None else "",
    )


def _extract(store: BackupStore, plan: RestorePlan, data: Path) -> int:
    """Stream the base backup's tar (zstd) into ``data``; its SHA-256 is checked."""
    base = plan.base
    with aws_errors(f"download s3://{store.bucket}/{base.key}"):
        body = store.s3_client().get_object(Bucket=store.bucket, Key=base.key)["Body"]
    unzstd = spawn(["zstd", "-d", "-q", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert unzstd.stdin is not None and unzstd.stdout is not None
    tar = spawn(["tar", "-x", "-f", "-", "-C", str(data)], stdin=unzstd.stdout)
    unzstd.stdout.close()
    digest, size = hashlib.sha256(), 0
    try:
        with aws_errors(f"download s3://{store.bucket}/{base.key}"):
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                unzstd.stdin.write(chunk)
        unzstd.stdin.close()
        codes = (unzstd.wait(timeout=120), tar.wait(timeout=120))
    except BaseException:
        for p in (unzstd, tar):
            kill_group(p)
        raise
    if digest.hexdigest() != base.sha256:
        raise PermanentError(
            f"base backup {base.backup_id} is corrupted: its SHA-256 does not match its manifest",
            hint=f"s3://{store.bucket}/{base.key}; restore from another base backup",
        )
    if any(codes):
        raise PermanentError(
            f"unpacking base backup {base.backup_id} failed (zstd/tar exit {codes})",
            hint="see the run's log; the scratch instance was removed",
        )
    return size


def _configure(
    data: Path, folder: Path, socket_dir: Path, port: int, target: datetime | None
) -> None:
    """Settings of the scratch instance (appended last: they win), its hba, recovery.signal.

    With no target, recovery replays every archived WAL file and is promoted at the end."""
    settings = {
        "listen_addresses": "",
        "port": str(port),
        "unix_socket_directories": str(socket_dir),
        "archive_mode": "off",
        "archive_command": "",
        "hot_standby": "off",
        "logging_collector": "off",
        "log_connections": "off",
        "shared_preload_libraries": "",
        "restore_command": restore_command(folder / "wal"),
    }
    if target is not None:
        settings.update(
            recovery_target_time=target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00"),
            recovery_target_action="promote",
            recovery_target_inclusive="on",
        )
    lines = "".join(f"{k} = '{v.replace(chr(39), chr(39) * 2)}'\n" for k, v in settings.items())
    with (data / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n# opsflows restore-to-time scratch instance\n" + lines)
    (data / "pg_hba.conf").write_text("local all all trust\n")
    for stale in ("postmaster.pid", "standby.signal", "postmaster.opts"):
        (data / stale).unlink(missing_ok=True)
    (data / "recovery.signal").touch()
    (data / "pg_wal").mkdir(exist_ok=True)
    data.chmod(0o700)


def _tail(log: Path, lines: int = 12) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _refusal(log: Path, errors: Path, plan: RestorePlan) -> PermanentError:
    """Why recovery ended without reaching the target, as the restore runbook says it."""
    refused = errors.read_text().strip().splitlines() if errors.exists() else []
    text = log.read_text(errors="replace") if log.exists() else ""
    if refused:
        return PermanentError(
            f"recovery stopped at an archived WAL file that failed its check: {refused[0]}",
            hint="nothing live was touched; the WAL after it cannot be replayed. Restore to a "
            "moment before it, or from a newer base backup",
        )
    if _NOT_REACHED in text:
        last = _LAST.findall(text)
        return PermanentError(
            f"the WAL archive ends before {plan.describe_target()}"
            + (f" (last transaction replayed at {last[-1]})" if last else ""),
            hint="a moment that recent is not archived yet (archive_timeout); choose an "
            "earlier one or wait for the next segment",
        )
    return PermanentError(
        "the scratch instance stopped during recovery", hint=f"its log ends:\n{_tail(log)}"
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def recovered_instance(
    store: BackupStore, cluster: str, plan: RestorePlan, version_num: int, timeout_s: float
) -> Iterator[Recovered]:
    """Recover a scratch instance to ``plan.target`` (None: the end of the archive); stopped
    and removed on exit."""
    logger = get_run_logger()
    user = _os_user()
    root = get_settings().pitr_scratch_dir
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="opsflows-pitr-", dir=root))
    folder.chmod(0o700)
    data, socket_dir, log = folder / "data", folder / "run", folder / "postgres.log"
    ctl = pg_tool("pg_ctl", version_num)
    started = time.monotonic()
    running = False
    try:
        data.mkdir(mode=0o700)
        socket_dir.mkdir(mode=0o700)
        size = _extract(store, plan, data)
        logger.info("base backup %s unpacked (%.1f MiB)", plan.base.backup_id, size / 2**20)
        archive, key_id, secret = archive_of(store, cluster)
        write_config(folder / "wal", archive, key_id, secret)
        port = _free_port()  # only names the socket file: no TCP listener
        _configure(data, folder, socket_dir, port, plan.target)
        log.touch()
        _chown_tree(folder, user)
        start = subprocess.run(
            _as_user(user, [ctl, "-D", str(data), "-l", str(log), "-W", "start"]),
            capture_output=True,
            text=True,
            cwd="/",
        )
        if start.returncode != 0:
            raise PermanentError(
                f"the scratch instance did not start: {start.stderr.strip()[-400:]}",
                hint=f"its log ends:\n{_tail(log)}",
            )
        running = True
        logger.info(
            "recovering to %s from %d WAL file(s)", plan.describe_target(), len(plan.needed)
        )
        errors = folder / "wal" / FETCH_ERRORS
        _await_promotion(data, log, errors, plan, timeout_s, started)
        text = log.read_text(errors="replace")
        if errors.exists() and errors.read_text().strip():
            # Without a target, a refused file ends recovery early as if the archive ended.
            raise _refusal(log, errors, plan)
        if plan.target is None and f'restored log file "{plan.needed[-1]}"' not in text:
            raise PermanentError(
                f"recovery ended before the newest archived WAL file {plan.needed[-1]}",
                hint=f"the scratch instance's log ends:\n{_tail(log)}",
            )
        stopped, last = _STOPPED.findall(text), _LAST.findall(text)
        yield Recovered(
            folder=folder,
            socket_dir=socket_dir,
            port=port,
            version_num=version_num,
            seconds=round(time.monotonic() - started, 3),
            stopped_at=stopped[-1] if stopped else "",
            last_replayed=last[-1] if last else "",
            wal_fetched=text.count("restored log file"),
        )
    finally:
        if running:
            subprocess.run(
                _as_user(user, [ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]),
                capture_output=True,
                cwd="/",
            )
        shutil.rmtree(folder, ignore_errors=True)


def _alive(data: Path) -> bool:
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _await_promotion(
    data: Path, log: Path, errors: Path, plan: RestorePlan, timeout_s: float, started: float
) -> None:
    """Wait until recovery reached the target and the instance was promoted."""
    seen_pid = False
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if _READY in text and "archive recovery complete" in text:
            return
        alive = _alive(data)
        seen_pid = seen_pid or alive
        if (seen_pid and not alive) or _NOT_REACHED in text:
            time.sleep(0.5)  # let the log finish
            raise _refusal(log, errors, plan)
        if time.monotonic() - started > timeout_s:
            raise Stalled(
                f"recovery did not reach {plan.describe_target()} within {timeout_s:g} s",
                hint=f"the scratch instance was stopped; its log ends:\n{_tail(log)}",
            )
        time.sleep(0.3)


def promoted(target: PostgresTarget) -> bool:
    """Whether the instance answers and is out of recovery."""
    with psycopg.connect(target.conninfo(with_password=False), autocommit=True) as conn:
        row: Any = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])
