"""The part buffers of one streamed upload, allocated once and reused.

A new ``bytearray`` per part (and a ``bytes`` copy of it per request) made every part fresh
memory: the kernel zeroes it, glibc's allocator keeps some of it in per-thread arenas, and
how much it kept varied from run to run. Reusing a fixed set of buffers keeps the upload's
memory at ``count`` parts, whatever the dump's size, and saves the copies.
"""

from __future__ import annotations

import queue
import threading


class PartBuffers:
    """At most ``count`` buffers out at once; ``take`` waits for one to be given back."""

    def __init__(self, count: int) -> None:
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._out = threading.BoundedSemaphore(count)

    def take(self, size: int, stop: threading.Event, poll_s: float = 0.2) -> bytearray | None:
        """A buffer of ``size`` bytes (reused when one of that size is free); None on ``stop``."""
        while not self._out.acquire(timeout=poll_s):
            if stop.is_set():
                return None
        try:
            buf = self._free.get_nowait()
        except queue.Empty:
            return bytearray(size)
        return buf if len(buf) == size else bytearray(size)

    def give(self, buf: bytearray) -> None:
        """Hand ``buf`` back once nothing reads it any more (its part is sent or abandoned)."""
        self._free.put(buf)
        self._out.release()
