"""The folder PostgreSQL's archive_command and restore_command read: scripts, place, key pair.

``wal-push`` (archive_command) and ``wal-fetch`` (restore_command) are shell scripts on
Debian tools (``tasks/wal/``), so they run as the PostgreSQL OS user, which cannot reach
the project's Python. A config folder (mode 0700, owned by that user) holds copies of both,
``wal.env`` (where the archive is) and ``curl.conf`` (the key pair, mode 0600), so no secret
is on a command line or in ``postgresql.conf``. Written by the devstack for the live server
and by the restore-to-time runbook for its scratch instance; no Prefect here.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).with_name("wal")
PUSH, FETCH = "wal-push", "wal-fetch"
#: Where a failed ``wal-fetch`` names the file it refused (read by the restore runbook).
FETCH_ERRORS = "fetch-errors"


@dataclass(frozen=True)
class WalArchive:
    """Where WAL files go: an S3(-compatible) endpoint, bucket and key prefix."""

    endpoint: str
    bucket: str
    prefix: str  # ends with "/"
    region: str
    level: int = 3  # zstd level of each segment

    def url(self, name: str) -> str:
        return f"{self.endpoint.rstrip('/')}/{self.bucket}/{self.prefix}{name}.zst"


def _curl_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _chown(path: Path, owner: str | None) -> None:
    if owner is None or os.geteuid() != 0:
        return
    entry = pwd.getpwnam(owner)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def write_config(
    folder: Path, archive: WalArchive, key_id: str, secret: str, owner: str | None = None
) -> Path:
    """Write the scripts and settings into ``folder`` (owned by ``owner`` when root); it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    (folder / "tmp").mkdir(mode=0o700, exist_ok=True)
    for name in (PUSH, FETCH):
        shutil.copyfile(SCRIPTS / name, folder / name)
        (folder / name).chmod(0o755)
    env = {
        "WAL_ENDPOINT": archive.endpoint,
        "WAL_BUCKET": archive.bucket,
        "WAL_PREFIX": archive.prefix,
        "WAL_REGION": archive.region,
        "WAL_LEVEL": str(archive.level),
    }
    (folder / "wal.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    auth = folder / "curl.conf"
    auth.touch(mode=0o600)
    auth.chmod(0o600)
    auth.write_text(f"user = {_curl_quote(f'{key_id}:{secret}')}\n")
    for path in (folder, folder / "tmp", *folder.iterdir()):
        _chown(path, owner)
    return folder


def archive_command(folder: Path) -> str:
    """PostgreSQL's ``archive_command`` for a config folder."""
    return f"{shlex.quote(str(folder / PUSH))} {shlex.quote(str(folder))} %p %f"


def restore_command(folder: Path) -> str:
    """PostgreSQL's ``restore_command`` for a config folder."""
    return f"{shlex.quote(str(folder / FETCH))} {shlex.quote(str(folder))} %f %p"
