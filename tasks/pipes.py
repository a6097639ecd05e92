"""Child tools on pipes (pg_dump, zstd, pg_restore) with every wait bounded.

Each tool runs in a process group of its own, so a kill reaches whatever it started. Waiting
for one to exit is bounded (:func:`reap`); a stream between them is watched for progress
(:class:`StallWatch`, the pure judgement in :mod:`decisions.stall`): a hung peer ends the
wait with :class:`~opsflows.errors.Stalled` instead of holding the run (and every run queued
behind it) forever.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from decisions.stall import StallClock, judge_stall, observe
from opsflows.errors import PermanentError, Stalled

#: How often a bounded wait wakes up to check progress (and lets a flow timeout through).
POLL_S = 0.25


def spawn(argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new process group (killed as a group)."""
    return subprocess.Popen(list(argv), process_group=0, **popen)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``'s process group; a no-op once it has been reaped.

    Before reaping, the pid (and so the group id) cannot have been reused, even when the
    tool itself has already exited and only something it started is left.
    """
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def reap(procs: Sequence[subprocess.Popen[bytes]], within_s: float, what: str) -> list[int]:
    """Exit codes of ``procs``, waiting at most ``within_s`` for all of them together.

    Tools still running then are killed (with their groups) and, once they are gone,
    :class:`Stalled` is raised: a tool that does not end after its stream did is hung.
    """
    deadline = time.monotonic() + within_s
    late: list[str] = []
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            late.append(program(proc))
    if not late:
        return [int(p.returncode) for p in procs]
    for proc in procs:
        kill_group(proc)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=within_s)
    raise Stalled(
        f"{', '.join(late)} did not exit within {within_s:g} s of {what}; killed",
        hint="the tool hung (server or network); it was killed, run again",
    )


def stop_all(procs: Sequence[subprocess.Popen[bytes]], within_s: float) -> None:
    """Kill every tool (and its group) and reap it, waiting at most ``within_s`` each."""
    for proc in procs:
        kill_group(proc)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=within_s)


def pg_tool(name: str, server_version_num: int) -> str:
    """The client tool matching the server's major version (Debian layout), else PATH's."""
    candidate = Path(f"/usr/lib/postgresql/{server_version_num // 10000}/bin") / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise PermanentError(f"{name} not found", hint="install the postgresql-client package")
    return found


def program(proc: subprocess.Popen[bytes]) -> str:
    """The program name of ``proc`` (for messages)."""
    args = proc.args
    first = args[0] if isinstance(args, list | tuple) else args
    return Path(str(first)).name


def drain(stream: IO[bytes], into: list[bytes], keep: int = 40) -> None:
    """Read a tool's stderr to its end, keeping the last ``keep`` lines (a reader thread)."""
    for line in stream:
        into.append(line)
        del into[:-keep]


class StderrTails:
    """The last lines of each tool's stderr, read by one daemon thread per tool."""

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        self.lines: list[list[bytes]] = [[] for _ in procs]
        self.threads = [
            threading.Thread(target=drain, args=(proc.stderr, lines), daemon=True)
            for proc, lines in zip(procs, self.lines, strict=True)
        ]
        for thread in self.threads:
            thread.start()

    def text(self, index: int, within_s: float = 5.0) -> str:
        """Tool ``index``'s stderr tail, once read to its end (waiting at most ``within_s``)."""
        self.threads[index].join(timeout=within_s)
        return b"".join(self.lines[index]).decode(errors="replace").strip()


def written_bytes(proc: subprocess.Popen[bytes]) -> int:
    """Bytes ``proc`` has written so far (``wchar`` of ``/proc/<pid>/io``); 0 if unknown.

    A progress signal that needs no byte of the data path: pg_dump's own output keeps
    moving while zstd behind it is still filling a block.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{proc.pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split(":", 1)[1])
    return 0


def cpu_ticks(proc: subprocess.Popen[bytes]) -> int:
    """CPU time ``proc`` has used so far (utime + stime, in clock ticks); 0 if unknown.

    Progress before the first byte: pg_dump reads the whole catalog before it writes its
    table of contents, which for a large schema takes a while; a tool blocked on a hung
    connection uses none.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


class StallWatch:
    """Raises :class:`Stalled` when none of its counters moved for ``limit_s`` seconds.

    The waiting side calls :meth:`check` whenever a bounded wait comes back empty, and
    :meth:`busy` after time it spent working itself (which is not the producer's silence).
    """

    def __init__(
        self,
        what: str,
        limit_s: float,
        hint: str,
        counters: Sequence[Callable[[], int]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.limit_s, self.hint = what, limit_s, hint
        self.counters = list(counters)
        self.clock = clock
        self.state = StallClock(self.sample(), clock())

    def add(self, counter: Callable[[], int]) -> None:
        """Watch one more counter (the clock restarts)."""
        self.counters.append(counter)
        self.busy()

    def sample(self) -> tuple[int, ...]:
        return tuple(counter() for counter in self.counters)

    def busy(self) -> None:
        """The waiting side was busy until now: silence counts from now."""
        self.state = StallClock(self.sample(), self.clock())

    def check(self) -> None:
        """Sample the counters; raise :class:`Stalled` when the silence reached the bound."""
        now = self.clock()
        self.state = observe(self.state, self.sample(), now)
        verdict = judge_stall(self.state, now, self.limit_s)
        if verdict.stalled:
            raise Stalled(verdict.describe(self.what), hint=self.hint)
