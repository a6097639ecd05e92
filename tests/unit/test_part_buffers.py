"""The reused part buffers of a streamed upload (tasks/part_buffers.py)."""

from __future__ import annotations

import threading
import time

from tasks.part_buffers import PartBuffers


def test_a_given_back_buffer_is_reused_when_its_size_fits() -> None:
    buffers, stop = PartBuffers(2), threading.Event()
    first = buffers.take(16, stop)
    assert first is not None and len(first) == 16
    buffers.give(first)
    assert buffers.take(16, stop) is first
    buffers.give(first)
    bigger = buffers.take(32, stop)  # parts grow every 1,000: a new buffer of the new size
    assert bigger is not None and bigger is not first and len(bigger) == 32


def test_take_waits_while_count_buffers_are_out_then_gets_the_one_given_back() -> None:
    buffers, stop = PartBuffers(2), threading.Event()
    one, two = buffers.take(8, stop), buffers.take(8, stop)
    assert one is not None and two is not None
    got: list[bytearray | None] = []
    waiter = threading.Thread(target=lambda: got.append(buffers.take(8, stop, poll_s=0.05)))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and got == [], "a third buffer is not made while two are out"
    buffers.give(two)
    waiter.join(timeout=5)
    assert got == [two] and got[0] is two


def test_take_gives_up_when_stopped() -> None:
    buffers, stop = PartBuffers(1), threading.Event()
    assert buffers.take(8, stop) is not None
    threading.Timer(0.2, stop.set).start()
    began = time.monotonic()
    assert buffers.take(8, stop, poll_s=0.05) is None
    assert time.monotonic() - began < 5
