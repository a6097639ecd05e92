"""Faults at every rotation step, and a SIGKILL of the run at every step, on the real stack.

Faults are real: Secrets Manager becomes unreachable (a TCP proxy in front of moto is closed),
PostgreSQL kills the connection doing ``ALTER ROLE`` (``pg_terminate_backend`` while a lock holds
it), the role's logins are refused (``CONNECTION LIMIT 0``), the Kubernetes API answers 503
(``/_sim/faults``). Each fault is armed when its step starts (the flow module's task is wrapped,
the task itself runs unchanged) and retry delays are zeroed to keep the suite fast. After every
failure AWSCURRENT must log in; a rerun then completes the rotation. Kills run the flow in a
forked process (``forkserver``) and SIGKILL it right after the step took effect.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect_aws import AwsCredentials
from psycopg import sql

from devstack.stack import AWS_REGION, MOTO_KEYS, StackInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from test_rotate_flow import World, assert_no_secrets  # noqa: E402

import flows.rotate_credentials as flow_module  # noqa: E402

# --- fault machinery ------------------------------------------------------------------------


class Proxy:
    """A TCP forwarder to moto. ``close()`` makes Secrets Manager unreachable (refused);
    ``lose`` = {n}: the n-th UpdateSecretVersionStage reaches moto, its answer never returns
    (with ``dead_after_loss`` the proxy then closes for good)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self.lose: set[int] = set()
        self.dead_after_loss = False
        self.updates = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            muted = threading.Event()
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream, muted)).start()
            threading.Thread(target=self._answers, args=(upstream, client, muted)).start()

    def _requests(self, src: socket.socket, dst: socket.socket, muted: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if b"UpdateSecretVersionStage" in data:
                    with self.lock:
                        self.updates += 1
                        if self.updates in self.lose:
                            muted.set()
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _answers(self, src: socket.socket, dst: socket.socket, muted: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if muted.is_set():  # moto has applied the request: its answer is lost
                    _hang_up(src, dst)
                    if self.dead_after_loss:
                        self.close()
                    return
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.server.close()
        with self.lock:
            _hang_up(*self.sockets)


def _hang_up(*sockets: socket.socket) -> None:
    """Close for real: ``shutdown`` sends the FIN even while another thread blocks in recv."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def arm(attr: str, before: Callable[[], None], after: Callable[[], None] = lambda: None) -> Any:
    """A stand-in for the flow's task ``attr``: arm the fault, run the real task (retries kept,
    delays zeroed), disarm. Only the first call is faulted."""
    original = getattr(flow_module, attr)
    calls = []

    def faulted(*args: Any, **kwargs: Any) -> Any:
        calls.append(attr)
        if len(calls) > 1:
            return original(*args, **kwargs)
        before()
        try:
            return original.with_options(retry_delay_seconds=0)(*args, **kwargs)
        finally:
            after()

    return faulted


def check_failed_run(w: World, state: Any, step: str) -> dict[str, Any]:
    """The run failed at ``step``, AWSCURRENT logs in, the op log says which step failed."""
    assert state.is_failed(), state.message
    current = w.value()
    assert w.logs_in(current), f"AWSCURRENT does not log in after a failure at {step}"
    entry = w.oplog(w.run_ids[-1])
    assert entry["status"] == "failed"
    assert entry["details"]["failed_step"] == step
    assert f"step {step} failed" in entry["issues"]
    assert "rerun" in entry["follow_up"]
    return current


def check_completed(w: World, state: Any, before: dict[str, Any]) -> dict[str, Any]:
    """The rerun completed: a new AWSCURRENT that logs in, the old one retired, consumers on it."""
    assert state.is_completed(), state.message
    now = w.value()
    assert now["version"] != before["version"] and w.logs_in(now)
    assert not w.logs_in(before)
    assert "AWSPENDING" not in str(w.stages())
    for env in w.envs:
        assert w.kube_secret(env)["password"] == now["password"]
    assert w.block_password() == now["password"]
    return now


@pytest.fixture
def world(stack: StackInfo, bootstrapped: object) -> Iterator[World]:
    w = World(stack).create()
    yield w
    w.remove()


@pytest.fixture
def proxied(world: World, stack: StackInfo) -> Iterator[Proxy]:
    """Route the world's Secrets Manager traffic through a proxy (block ``<world>-aws``)."""
    proxy = Proxy(stack.host, stack.moto_port)
    params = {"endpoint_url": proxy.url, "config": {"retries": {"max_attempts": 0}}}
    AwsCredentials(
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS_REGION, aws_client_parameters=params,
    ).save(world.envs[0] + "-aws", overwrite=True)  # fmt: skip
    yield proxy
    proxy.close()
    AwsCredentials.delete(world.envs[0] + "-aws")


# --- a failure at each step -------------------------------------------------------------------


@pytest.mark.parametrize("step", ["create_pending", "finish"])
def test_secrets_manager_unreachable(
    world: World, proxied: Proxy, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    before = world.value()
    monkeypatch.setattr(flow_module, step, arm(step, proxied.close))

    state = world.run(aws_credentials=world.envs[0] + "-aws")

    current = check_failed_run(world, state, step)
    assert current["version"] == before["version"]
    if step == "finish":  # consumers had been switched: they are back on AWSCURRENT
        carried = world.kube_secret(world.envs[0])
        assert carried["password"] == before["password"]
        assert carried["annotations"]["opsflows.io/credential-version"] == before["version"]
        assert world.block_password() == before["password"]
        monkeypatch.undo()  # the rerun sets the password again and completes
        check_completed(world, world.run(), before)
    assert_no_secrets(world.run_ids, world.passwords)


def test_a_lost_answer_to_the_label_move_is_read_back_not_retried_blindly(
    world: World, proxied: Proxy
) -> None:
    before = world.value()
    proxied.lose = {1}  # the AWSCURRENT move reaches moto; its answer is lost

    state = world.run(aws_credentials=world.envs[0] + "-aws")

    check_completed(world, state, before)
    assert proxied.updates == 2  # the move once (read back: it happened), the AWSPENDING removal


@pytest.mark.parametrize(("lost", "error"), [(1, "FinishOutcomeUnknown"), (2, "FinishIncomplete")])
def test_secrets_manager_dies_after_taking_a_label_move(
    world: World, proxied: Proxy, lost: int, error: str
) -> None:
    """The move took effect but nobody can tell: the run must not undo it."""
    before = world.value()
    proxied.lose, proxied.dead_after_loss = {lost}, True  # 1: AWSCURRENT, 2: AWSPENDING

    state = world.run(aws_credentials=world.envs[0] + "-aws")

    current = check_failed_run(world, state, "finish")
    assert error in world.oplog(world.run_ids[-1])["issues"]
    assert current["version"] != before["version"]  # it moved, and stays moved
    assert world.kube_secret(world.envs[0])["password"] == current["password"]
    assert ("AWSPENDING" in world.stages()[current["version"]]) is (lost == 1)
    rerun = world.run()
    check_completed(world, rerun, before)
    assert rerun.result()["steps"][0] == ("finish" if lost == 1 else "done")


def test_the_database_kills_the_connection_setting_the_password(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = world.value()
    blocker = world.admin()
    stop = threading.Event()
    seen: list[str] = []

    def lock_and_kill() -> None:
        blocker.execute("BEGIN")
        blocker.execute(sql.SQL("ALTER ROLE {} VALID UNTIL 'infinity'").format(
            sql.Identifier(world.name)))  # fmt: skip

        def killer() -> None:
            with world.admin() as conn:
                while not stop.is_set():
                    rows = conn.execute(
                        "SELECT pid, query FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE %s",
                        (f'ALTER ROLE "{world.name}" PASSWORD%',),
                    ).fetchall()
                    for pid, query in rows:
                        seen.append(query)
                        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    time.sleep(0.05)

        threading.Thread(target=killer, daemon=True).start()

    def release() -> None:
        stop.set()
        blocker.rollback()
        blocker.close()

    monkeypatch.setattr(flow_module, "set_password", arm("set_password", lock_and_kill, release))

    state = world.run()

    check_failed_run(world, state, "set_password")
    assert len(seen) == 4  # the first attempt and three retries were each killed
    assert all("SCRAM-SHA-256$" in q for q in seen)  # only the verifier travels
    assert not [q for q in seen for p in world.passwords if p in q]
    assert world.value()["version"] == before["version"]


def test_the_new_login_is_refused_during_the_test(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = world.value()
    role = sql.Identifier(world.name)

    def limit(n: int) -> Callable[[], None]:
        def apply() -> None:
            with world.admin() as conn:
                conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(role, n))

        return apply

    monkeypatch.setattr(flow_module, "test_login", arm("test_login", limit(0), limit(-1)))

    state = world.run()

    check_failed_run(world, state, "test")
    pending = world.value("AWSPENDING")
    assert not world.logs_in(pending)  # single user: the old password was set again
    monkeypatch.undo()
    # a new rotation supersedes the stray AWSPENDING instead of failing on it
    rerun = world.run(rotation_id="test-2")
    check_completed(world, rerun, before)
    assert world.stages()[pending["version"]] == []
    assert_no_secrets(world.run_ids, world.passwords)


def test_the_kubernetes_api_fails_while_switching_consumers(
    stack: StackInfo, bootstrapped: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = World(stack, consumers=2).create()
    try:
        before = w.value()
        # the second environment's restart fails on every attempt (4 = 1 + 3 retries); the
        # rule then expires by itself, so the shared simulator is left as it was
        path = f"namespaces/{w.envs[1]}/deployments/"
        rule = {"status": 503, "method": "PATCH", "path": path, "count": 4}

        def fault() -> None:
            httpx.post(f"{stack.kube_url}/_sim/faults", json=rule).raise_for_status()

        monkeypatch.setattr(flow_module, "restart_consumers", _on_call(2, fault))
        state = w.run()

        check_failed_run(w, state, "switch_consumers")
        rules = httpx.get(f"{stack.kube_url}/_sim/faults").json()["rules"]
        assert not [r for r in rules if r["path"] == path]  # all four attempts hit the fault
        for env in w.envs:  # the first environment had switched: it is switched back
            assert w.kube_secret(env)["password"] == before["password"]
        template = w.deployment(w.envs[0])["spec"]["template"]["metadata"]["annotations"]
        assert template["opsflows.io/credential-version"] == before["version"]
        assert w.block_password() == before["password"]
        assert_no_secrets(w.run_ids, w.passwords)
    finally:
        w.remove()


def _on_call(n: int, fault: Callable[[], None]) -> Any:
    """The flow's ``restart_consumers``, with ``fault`` armed before its ``n``-th call."""
    original = flow_module.restart_consumers
    calls: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == n:
            fault()
            return original.with_options(retry_delay_seconds=0)(*args, **kwargs)
        return original(*args, **kwargs)

    return wrapped


# --- a SIGKILL at each step, then a rerun -----------------------------------------------------

#: step -> the flow-module task after which the run is killed (the step has taken effect).
KILL_AFTER = {
    "create_pending": "create_pending",
    "set_password": "set_password",
    "test": "test_login",
    "switch_consumers": "restart_consumers",
    "finish": "finish",
}


def _run_until_killed(params: dict[str, Any], attr: str, marker: str) -> None:
    """Child process: run the flow; after ``attr`` returns, say so and wait to be killed."""
    original = getattr(flow_module, attr)

    def paused(*args: Any, **kwargs: Any) -> Any:
        from prefect.runtime import flow_run

        result = original(*args, **kwargs)
        Path(marker).write_text(str(flow_run.id))
        time.sleep(600)
        return result

    setattr(flow_module, attr, paused)
    flow_module.rotate_credentials(**params)


def _mark_crashed(flow_run_id: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            UUID(flow_run_id), Crashed(message="killed with SIGKILL by the test"), force=True
        )


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.BaseContext:
    """Children forked from a server that imported the flow once (fast, thread-free)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["flows.rotate_credentials", "tasks.consumers", "boto3"])
    return ctx


@pytest.mark.parametrize("step", list(KILL_AFTER))
def test_a_run_killed_at_any_step_is_resumed_by_a_rerun(
    world: World, forkserver: Any, tmp_path: Path, step: str
) -> None:
    before = world.value()
    marker = tmp_path / "reached"
    child = forkserver.Process(
        target=_run_until_killed, args=(world.params(), KILL_AFTER[step], str(marker))
    )
    child.start()
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert child.is_alive(), f"the run ended before reaching {step} ({child.exitcode})"
        assert time.monotonic() < deadline, f"the run never reached {step}"
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    killed = marker.read_text()
    _mark_crashed(killed)  # what a worker would report for a process that vanished
    world.run_ids.append(killed)

    state = world.run()

    now = check_completed(world, state, before)
    steps = state.result()["steps"]
    resumed_at = {
        "create_pending": "set_password",
        "set_password": "test",
        "test": "test",
        "switch_consumers": "test",
        "finish": "done",
    }
    assert steps[0] == resumed_at[step], steps
    assert "create_pending" not in steps
    if step == "finish":
        assert steps == ["done", "verify"]
        assert world.stages() == {
            before["version"]: ["AWSPREVIOUS"],
            now["version"]: ["AWSCURRENT"],
        }
    assert_no_secrets(world.run_ids, world.passwords)
    deployment = world.deployment(world.envs[0])
    assert deployment["metadata"]["generation"] == 2  # restarted exactly once
    assert (
        json.dumps(deployment["spec"]["template"]["metadata"]["annotations"]).count(now["version"])
        == 1
    )
