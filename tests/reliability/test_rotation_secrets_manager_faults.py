"""Secrets Manager fails during a rotation: unreachable at a step, or an answer lost on the way.

Faults are real: a TCP proxy in front of moto is closed (connection refused), or it lets a label
move reach moto and drops the answer. Each fault is armed when its step starts (the flow
module's task is wrapped, the task itself runs unchanged) and retry delays are zeroed to keep
the suite fast. After every failure AWSCURRENT must log in; a rerun then completes the rotation.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from prefect_aws import AwsCredentials

import flows.rotate_credentials as flow_module
from devstack.stack import AWS_REGION, MOTO_KEYS, StackInfo
from tests.rotation_support import World, arm, assert_no_secrets, check_completed, check_failed_run
from tests.support import count_fault


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
                    count_fault("sm answer lost")
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


@pytest.mark.parametrize("step", ["create_pending", "finish"])
def test_secrets_manager_unreachable(
    world: World, proxied: Proxy, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    before = world.value()

    def unreachable() -> None:
        proxied.close()
        count_fault("sm unreachable")

    monkeypatch.setattr(flow_module, step, arm(step, unreachable))

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
