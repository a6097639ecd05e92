"""Port choice and process helpers of the devstack launcher."""

from __future__ import annotations

import socket

from devstack import procs


def test_choose_port_prefers_remembered_then_wanted_then_free() -> None:
    assert procs.choose_port("127.0.0.1", 1234, 4321) == 4321
    free = procs.free_port()
    assert procs.choose_port("127.0.0.1", free, None) == free
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        chosen = procs.choose_port("127.0.0.1", taken, None)
        assert chosen != taken
        assert not procs.port_open("127.0.0.1", chosen)


def test_a_remembered_port_taken_by_another_program_is_given_up() -> None:
    """A second checkout (or a test stack's random port) took the port while we were down."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        chosen = procs.choose_port("127.0.0.1", 0, taken, ours_running=False)
        assert chosen != taken
        assert not procs.port_open("127.0.0.1", chosen)
        # Our own service still running there keeps its port.
        assert procs.choose_port("127.0.0.1", 0, taken, ours_running=True) == taken


def test_as_user_wraps_only_when_root() -> None:
    import os

    argv = procs.as_user("nobody", ["initdb", "-D", "x"])
    if os.geteuid() == 0:
        assert argv[:4] == ["runuser", "-u", "nobody", "--"]
    else:
        assert argv == ["initdb", "-D", "x"]
    assert procs.as_user(None, ["x"]) == ["x"]
