"""Background service processes: start once, find again by pid file, stop by process group.

Each service keeps ``run/<name>.pid`` and ``logs/<name>.log`` under the state directory. A
service counts as running when its pid is alive *and* its readiness probe answers, so a stale
pid file after a reboot is simply replaced.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Probe = Callable[[], bool]


class StartError(RuntimeError):
    """A devstack service did not come up; the message names the log to read."""


@dataclass(frozen=True)
class Service:
    """How to launch one long-running local service."""

    name: str
    argv: Sequence[str]
    probe: Probe
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    cwd: Path | None = None
    start_timeout: float = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(
    url: str, timeout: float = 1.0, below: int = 500, headers: dict[str, str] | None = None
) -> Probe:
    """A probe that passes when ``url`` answers with a status below ``below``."""

    def probe() -> bool:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return int(resp.status) < below
        except urllib.error.HTTPError as exc:
            return exc.code < below
        except (OSError, ValueError):
            return False

    return probe


def tcp_ok(host: str, port: int) -> Probe:
    """A probe that passes when host:port accepts connections."""
    return lambda: port_open(host, port)


def choose_port(host: str, wanted: int, remembered: int | None, ours_running: bool = False) -> int:
    """The remembered port while ours or free, else ``wanted`` when free, else any free port.

    A remembered port another program took while this stack was down (another checkout's
    stack, a test stack's randomly chosen port) is given up rather than clashed with.
    """
    if remembered and (ours_running or not port_open(host, remembered)):
        return remembered
    if wanted and not port_open(host, wanted):
        return wanted
    return free_port(host)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / "run" / f"{name}.pid"


def log_file(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


def read_pid(state_dir: Path, name: str) -> int | None:
    path = _pid_file(state_dir, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def is_running(state_dir: Path, service: Service) -> bool:
    return read_pid(state_dir, service.name) is not None and service.probe()


def wait_until(probe: Probe, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(interval)
    return probe()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def as_user(user: str | None, argv: Sequence[str]) -> list[str]:
    """Wrap argv to run as ``user`` when we are root (initdb and friends refuse root)."""
    if user and os.geteuid() == 0 and pwd.getpwuid(0).pw_name != user:
        return ["runuser", "-u", user, "--", *argv]
    return list(argv)


def start(state_dir: Path, service: Service) -> bool:
    """Start ``service`` unless it already runs and wait until it is ready.

    Returns True when it was started now, False when it was already running.
    """
    proc = spawn(state_dir, service)
    if proc is None:
        return False
    await_ready(state_dir, service, proc)
    return True


def spawn(state_dir: Path, service: Service) -> subprocess.Popen[bytes] | None:
    """Launch ``service`` without waiting; None when it already runs."""
    if is_running(state_dir, service):
        return None
    stop(state_dir, service.name)
    log = log_file(state_dir, service.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    _pid_file(state_dir, service.name).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **service.env}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            as_user(service.user, service.argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # a service run as another user may not be allowed into the caller's folder
            cwd=service.cwd or ("/" if service.user else None),
            env=env,
            start_new_session=True,
        )
    _pid_file(state_dir, service.name).write_text(str(proc.pid))
    return proc


def await_ready(state_dir: Path, service: Service, proc: subprocess.Popen[bytes]) -> None:
    """Wait for the probe; on exit or timeout stop it and raise with the log's tail."""
    log = log_file(state_dir, service.name)
    deadline = time.monotonic() + service.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartError(
                f"{service.name} exited with code {proc.returncode} while starting; "
                f"see {log}:\n{tail(log)}"
            )
        if service.probe():
            return
        time.sleep(0.2)
    stop(state_dir, service.name)
    raise StartError(
        f"{service.name} did not become ready within {service.start_timeout:.0f}s; "
        f"see {log}:\n{tail(log)}"
    )


def stop(state_dir: Path, name: str, timeout: float = 15.0) -> bool:
    """Stop the service's whole process group; True when something was stopped."""
    pid = read_pid(state_dir, name)
    _pid_file(state_dir, name).unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return True


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it if it outlives ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def background(
    argv: Sequence[str],
    env: dict[str, str],
    log_path: Path,
    cwd: Path | None = None,
    stop_timeout: float = 15.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in its own process group for the ``with`` block; stop exactly that group."""
    with log_path.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - argv built by the caller
            list(argv),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_group(proc, stop_timeout)
