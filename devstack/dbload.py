"""New-connection load on a database, logging in with the credential a consumer reads.

What a credential rotation must not break: an application that opens a new connection per
request with the credential it reads *now* (from Secrets Manager's AWSCURRENT, or from its
Kubernetes Secret). :class:`ConnectionLoad` runs ``pgbench -n -C`` (a new connection per
transaction) in short back-to-back chunks; before each chunk it reads the credential again, so
a switch of the credential is seen within one chunk. Each chunk records when it ran, which role
it logged in as and how many connections the server refused. :func:`summarize` turns the chunks
into ``failed_connections`` and ``window_ms``: from the start of the first chunk with a refused
connection to the end of the last one (0 when nothing was refused; its resolution is one chunk:
0.1 to 1 s, depending on how busy the machine is).

Used by ``tests/served/test_rotation_monthly.py`` and ``bench/bench_rotation.py``. pgbench is
found as the runbooks find ``pg_dump`` (``tasks.pipes.pg_tool``: the server's major version under
``/usr/lib/postgresql``, else ``PATH``; ``scripts/install-deps.sh`` installs it). Passwords go
to pgbench through ``PGPASSWORD`` only; nothing here prints or keeps one.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.pipes import pg_tool

#: A credential as the consumer reads it: host, port, dbname, username, password.
Credential = dict[str, Any]

_PROCESSED = re.compile(r"number of transactions actually processed: (\d+)")
_REFUSED = re.compile(r"connection to server .* failed", re.IGNORECASE)


@dataclass(frozen=True)
class Chunk:
    """One pgbench run: when, as whom, and what the server said."""

    start: float  # epoch seconds
    end: float
    role: str
    processed: int  # transactions, each on its own connection
    failed_connections: int
    returncode: int


def summarize(chunks: Sequence[Chunk]) -> dict[str, Any]:
    """Connections made and refused, and how long refusals went on (ms, see the docstring)."""
    failed = [c for c in chunks if c.failed_connections]
    window = (max(c.end for c in failed) - min(c.start for c in failed)) if failed else 0.0
    return {
        "chunks": len(chunks),
        "connections": sum(c.processed + c.failed_connections for c in chunks),
        "failed_connections": sum(c.failed_connections for c in chunks),
        "window_ms": round(window * 1000),
        "roles": sorted({c.role for c in chunks}),
    }


def pgbench_path(server_version_num: int) -> str:
    """The pgbench matching the server (as ``pg_dump`` is found)."""
    return pg_tool("pgbench", server_version_num)


def pgbench_for(conninfo: str) -> str:
    """The pgbench matching the server ``conninfo`` connects to."""
    import psycopg

    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        return pgbench_path(conn.info.server_version)


class ConnectionLoad:
    """``pgbench -C`` chunks in a thread until stopped; ``chunks`` is what they saw.

    ``credential`` is called before every chunk (it reads what the consumer reads);
    ``transactions`` per chunk at one client keeps a chunk short (0.1 to 1 s).
    """

    def __init__(
        self,
        credential: Callable[[], Credential],
        pgbench: str,
        transactions: int = 10,
        script: str = "SELECT 1;\n",
    ) -> None:
        self.credential = credential
        self.pgbench = pgbench
        self.transactions = transactions
        self.chunks: list[Chunk] = []
        self.errors: list[str] = []  # credential reads that failed (no chunk ran)
        self._dir = tempfile.TemporaryDirectory(prefix="dbload-")
        self._script = Path(self._dir.name) / "load.sql"
        self._script.write_text(script)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbload", daemon=True)

    def _chunk(self, cred: Credential, start: float) -> Chunk:
        env = {
            "PGHOST": str(cred["host"]),
            "PGPORT": str(cred["port"]),
            "PGDATABASE": str(cred["dbname"]),
            "PGUSER": str(cred["username"]),
            "PGPASSWORD": str(cred["password"]),
            "PGCONNECT_TIMEOUT": "5",
            "PATH": "/usr/bin:/bin",
        }
        argv = [self.pgbench, "-n", "-C", "-c", "1", "-t", str(self.transactions)]
        done = subprocess.run(
            [*argv, "-f", str(self._script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        out = done.stdout + done.stderr
        processed = _PROCESSED.search(out)
        refused = len(_REFUSED.findall(out))
        if done.returncode != 0 and refused == 0:
            refused = 1  # aborted without the usual message: count the client as refused
        return Chunk(
            start=start,
            end=time.time(),
            role=str(cred["username"]),
            processed=int(processed.group(1)) if processed else 0,
            failed_connections=refused,
            returncode=done.returncode,
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.time()
            try:
                cred = self.credential()
            except Exception as exc:  # noqa: BLE001 - a failed read is recorded, the load goes on
                self.errors.append(type(exc).__name__)
                self._stop.wait(0.1)
                continue
            self.chunks.append(self._chunk(cred, start))

    def wait_for_chunks(self, count: int, timeout: float = 60.0) -> None:
        """Block until ``count`` more chunks have finished (the load is really running)."""
        target = len(self.chunks) + count
        deadline = time.monotonic() + timeout
        while len(self.chunks) < target:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(
                    f"the connection load ran {len(self.chunks)} chunks, expected {target} "
                    f"(credential read errors: {self.errors[-3:]})"
                )
            time.sleep(0.05)

    def between(self, start: float, end: float) -> list[Chunk]:
        """The chunks that overlap [start, end] (epoch seconds)."""
        return [c for c in self.chunks if c.end >= start and c.start <= end]

    def __enter__(self) -> ConnectionLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)
        self._dir.cleanup()


def secrets_manager_current(client: Any, secret_id: str) -> Callable[[], Credential]:
    """A reader of the secret's AWSCURRENT value (a consumer using Secrets Manager directly)."""

    def read() -> Credential:
        raw = client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
        value: Credential = json.loads(raw["SecretString"])
        return value

    return read
